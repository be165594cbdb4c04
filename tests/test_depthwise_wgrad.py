"""The direct weight gradient (depthwise and thin groups): programs over (channel vector, input
channel of the group, chunk of taps) by ranges of spatial tiles, each summing every tap of its
tiles into a float32 workspace, then the split-K reduction adding the ranges in split order.

Checked against torch in float64 on awkward shapes (odd sizes, stride 2, dilation 2, 5x5, 7x7
and 11x11 windows, channel multipliers, 2 and 4 channels per group), NCHW and channels_last,
float32 and both 16-bit dtypes, split into ranges and unsplit; and which launches ran.
"""
import pytest
import torch
import torch.nn.functional as F

import fastconv.functional as FC
from fastconv.conv import plan as P
from helpers import LaunchView, assert_rel_close, aten_forbidden, interpreter_split_k

WGRAD = "conv2d_wgrad_direct_kernel"
REDUCE = "conv2d_split_reduce_kernel"

# (id, N, C, H, W, K, groups, kernel, stride, dilation)
CASES = [
    ("dw3x3-odd", 2, 8, 9, 11, 8, 8, 3, 1, 1),
    ("dw3x3-s2-d2", 2, 12, 13, 10, 12, 12, 3, 2, 2),
    ("dw5x5-s2-mult2", 1, 6, 11, 9, 12, 6, 5, 2, 1),
    ("dw7x7", 3, 5, 10, 7, 5, 5, 7, 1, 1),
    ("dw7x7-s2-d2", 1, 16, 15, 17, 16, 16, 7, 2, 2),
    ("dw11x11-two-chunks", 1, 4, 13, 12, 4, 4, 11, 1, 1),
    ("cg2-5x5-d2", 2, 8, 11, 13, 8, 4, 5, 1, 2),
    ("cg4-3x3-s2", 1, 16, 9, 15, 8, 4, 3, 2, 1),
    ("cg4-7x7", 1, 8, 9, 8, 4, 2, 7, 1, 1),
]


@pytest.fixture
def launches(kernel_launches):
    """(kernel name, grid, constexprs) of every launch while the test runs."""
    return LaunchView(kernel_launches, lambda launch: launch)


def _weight_grad(case, dtype, channels_last):
    """(fastconv's weight gradient, torch's in float64) of one case."""
    _, n, c, h, w, k, groups, r, stride, dil = case
    gen = torch.Generator().manual_seed(sum(map(ord, case[0])))
    x = torch.randn(n, c, h, w, generator=gen).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    wt = (torch.randn(k, c // groups, r, r, generator=gen) / r).to(dtype)
    pad = dil * (r - 1) // 2
    wl = wt.clone().requires_grad_()
    with aten_forbidden():
        y = FC.conv2d(x, wl, None, stride, pad, dil, groups)
        grad = torch.randn(y.shape, generator=gen).to(dtype)
        y.backward(grad)
    wd = wt.double().requires_grad_()
    F.conv2d(x.double(), wd, None, stride, pad, dil, groups).backward(grad.double())
    return wl.grad, wd.grad


# (dtype, channels_last, split): every dtype in both layouts, split and not, without the
# full product (the interpreter's time)
VARIANTS = [(torch.float32, False, 3), (torch.float32, True, 1), (torch.bfloat16, True, 3),
            (torch.float16, False, 3), (torch.bfloat16, False, 1), (torch.float16, True, 1)]


@pytest.mark.parametrize("dtype,channels_last,split", VARIANTS,
                         ids=[f"{str(d)[6:]}-{'cl' if cl else 'nchw'}-split{s}"
                              for d, cl, s in VARIANTS])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_direct_weight_gradient_matches_torch(case, dtype, channels_last, split, monkeypatch,
                                              launches):
    # small spatial tiles, so that each image is several tiles and the ranges cross images
    monkeypatch.setattr(P, "_interpreter_config", _small_tiles(P._interpreter_config))
    with interpreter_split_k(1, wgrad=split):
        got, ref = _weight_grad(case, dtype, channels_last)
    assert got.dtype == dtype and got.is_contiguous()
    assert_rel_close(got, ref, dtype, f"{case[0]} grad weight")
    ran = [(name, grid, meta) for name, grid, meta in launches if name == WGRAD]
    assert len(ran) == 1, list(launches)
    _, grid, meta = ran[0]
    r = case[7]
    assert meta["TAPS"] == min(_pow2(r * r), P.MAX_DIRECT_WGRAD_TAPS)
    chunks = -(-r * r // meta["TAPS"])
    cg = case[2] // case[6]
    assert grid[0] == -(-case[5] // meta["BLOCK_N"]) * cg * chunks, (grid, meta)
    names = [name for name, _, _ in launches]
    if split == 1:
        assert grid[1] == 1 and REDUCE not in names, names
    else:  # the ranges really split, and the reduction added them right after
        assert grid[1] > 1
        assert names[names.index(WGRAD) + 1] == REDUCE, names


def _pow2(x: int) -> int:
    return 1 << (x - 1).bit_length()


def _small_tiles(real):
    def config(direction, family, pb, *scale):
        if family == "direct" and direction == "wgrad":
            return P.TileConfig(32, 16, 0, 4, 1)
        return real(direction, family, pb, *scale)
    return config


def test_depthwise_weight_gradient_runs_the_direct_kernels(launches):
    """A depthwise layer's weight gradient is the direct kernel (plan and launches agree), and
    a second call of the same signature replays the recorded launches, bitwise the same."""
    from fastconv.functional.explain import explain
    x = torch.randn(2, 24, 7, 9).contiguous(memory_format=torch.channels_last)
    w = torch.randn(24, 1, 3, 3)
    plans = explain(x, w, 2, 1, 1, groups=24)
    assert plans.wgrad.family == "direct" and "tap" in plans.wgrad.reason, str(plans)
    grads = []
    for _ in range(2):
        wl = w.clone().requires_grad_()
        with aten_forbidden():
            FC.conv2d(x, wl, None, 2, 1, 1, 24).sum().backward()
        grads.append(wl.grad)
    assert torch.equal(grads[0], grads[1])
    assert [name for name, _, _ in launches].count(WGRAD) == 2
