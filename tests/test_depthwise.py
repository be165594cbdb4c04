"""Depthwise convolution (groups == in_channels, any channel multiplier) on the direct kernels."""
import random

import pytest
import torch
import torch.nn.functional as F

import fastconv.functional as FC
from fastconv.functional.explain import explain
from helpers import DTYPES, assert_rel_close, aten_forbidden, interpreter_split_k

KERNELS = [(1, 1), (2, 2), (3, 3), (5, 5), (7, 7), (9, 9), (11, 11), (1, 3), (3, 1), (1, 7),
           (7, 1), (1, 11), (11, 1)]


def _cases(count=30, seed=7):
    rng = random.Random(seed)
    cases = []
    for i in range(count):
        r, s = KERNELS[i % len(KERNELS)]
        c, mult = rng.choice([3, 8, 17, 32]), rng.choice([1, 1, 2, 3])
        stride, dil = (rng.choice([1, 2]), rng.choice([1, 2])), (rng.choice([1, 1, 2]), rng.choice([1, 2]))
        pad = (dil[0] * (r - 1) // 2, dil[1] * (s - 1) // 2)  # as networks use them
        h = max(dil[0] * (r - 1) + 1 - 2 * pad[0], 1) + rng.randint(0, 5)
        w = max(dil[1] * (s - 1) + 1 - 2 * pad[1], 1) + rng.randint(0, 5)
        cases.append((rng.choice([1, 2]), c, h, w, mult, (r, s), stride, pad, dil,
                       DTYPES[i % 3], rng.random() < 0.5, rng.random() < 0.5))
    return cases


CASES = _cases()


@pytest.mark.parametrize("case", CASES, ids=[
    f"n{c[0]}c{c[1]}h{c[2]}w{c[3]}m{c[4]}k{c[5][0]}x{c[5][1]}s{c[6][0]}{c[6][1]}d{c[8][0]}{c[8][1]}"
    f"-{str(c[9])[6:]}{'-cl' if c[10] else ''}{'-bias' if c[11] else ''}" for c in CASES])
def test_depthwise_matches_torch(case):
    n, c, h, w, mult, (r, s), stride, pad, dil, dtype, channels_last, bias = case
    x = torch.randn(n, c, h, w).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    wt = (torch.randn(c * mult, 1, r, s) / (r * s) ** 0.5).to(dtype)
    b = torch.randn(c * mult).to(dtype) if bias else None
    plans = explain(x, wt, stride, pad, dil, groups=c)
    assert {p.family for p in (plans.fprop, plans.dgrad, plans.wgrad)} == {"direct"}, str(plans)
    leaves = [t.clone().requires_grad_() if t is not None else None for t in (x, wt, b)]
    with aten_forbidden():
        y = FC.conv2d(leaves[0], leaves[1], leaves[2], stride, pad, dil, c)
        grad = torch.randn(y.shape).to(dtype)
        y.backward(grad)
    refs = [t.double().requires_grad_() if t is not None else None for t in (x, wt, b)]
    y_ref = F.conv2d(refs[0], refs[1], refs[2], stride, pad, dil, c)
    y_ref.backward(grad.double())
    assert_rel_close(y, y_ref, dtype, "output")
    for name, leaf, ref in zip(("input", "weight", "bias"), leaves, refs):
        if leaf is not None:
            assert_rel_close(leaf.grad, ref.grad, dtype, f"grad {name}")
    if channels_last and c > 1:
        assert y.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("k,stride,block_m,channels_last", [
    (3, 1, 8, True), (3, 2, 32, False), (5, 1, 32, True), (5, 2, 8, False), (7, 1, 16, False),
    (7, 2, 32, True)], ids=lambda v: str(v))
def test_spatial_tiles_cover_the_image(monkeypatch, block_m, k, stride, channels_last):
    """The forward, the input gradient and the weight gradient tile each image spatially
    (``plan.direct_tile``): with small tiles forced, several tiles by several images, ragged
    at both edges, in both layouts, the weight gradient's tiles split 3 ways, match torch."""
    from fastconv.conv import plan as P
    from fastconv.ops import launch_cache

    real = P._interpreter_config
    cfg = P.TileConfig(block_m, 16, 0, 4, 1)

    def config(d, fam, pb, *scale):
        return cfg if fam == "direct" else real(d, fam, pb, *scale)
    monkeypatch.setattr(P, "_interpreter_config", config)
    widths = []
    record = launch_cache._Step.__init__

    def spy(self, launch, slots):
        widths.append(launch.meta.get("BLOCK_W"))
        record(self, launch, slots)
    monkeypatch.setattr(launch_cache._Step, "__init__", spy)

    n, c, h, w = 2, 20, 11, 13
    x = torch.randn(n, c, h, w)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    wt = torch.randn(c, 1, k, k) / k
    pad = k // 2
    xl, wl = x.clone().requires_grad_(), wt.clone().requires_grad_()
    with aten_forbidden(), interpreter_split_k(1, wgrad=3):
        y = FC.conv2d(xl, wl, None, stride, pad, 1, c)
        grad = torch.randn(y.shape)
        y.backward(grad)
    # forward, input gradient, weight gradient (its split reduction has no BLOCK_W)
    assert [v for v in widths if v is not None] == [P.direct_tile(block_m, y.shape[3])[1],
                                                     P.direct_tile(block_m, w)[1],
                                                     P.direct_tile(block_m, y.shape[3])[1]]
    assert widths.count(None) == 1  # the weight gradient was split, and its reduction ran
    xd, wd = x.double().requires_grad_(), wt.double().requires_grad_()
    ref = F.conv2d(xd, wd, None, stride, pad, 1, c)
    ref.backward(grad.double())
    assert_rel_close(y, ref, torch.float32, "output")
    assert_rel_close(xl.grad, xd.grad, torch.float32, "grad input")
    assert_rel_close(wl.grad, wd.grad, torch.float32, "grad weight")
