"""The channels_last alignment a launch vouches for (``conv2d_launch.channel_vector``, the VEC of
the 1x1 GEMM and direct kernels), and the kernels run with it.

On a GPU a VEC too large is a misaligned vector load; under the interpreter it is a wrong
result, since ``kernels._common.aligned`` rounds every value the kernel aligns down to a
multiple of VEC. So these tests run channel counts whose VEC is 2, 4 and 8, and views whose
strides or addresses allow less than their channel count suggests.
"""
import pytest
import torch
import torch.nn.functional as F

import fastconv.functional as FC
from fastconv.conv import launch as conv2d_launch
from fastconv.conv.launch import channel_vector

from helpers import LaunchView, assert_rel_close, aten_forbidden


def _cl(*shape, dtype=torch.float16):
    return torch.randn(*shape, dtype=dtype).to(memory_format=torch.channels_last)


def _vec(t, channels):
    strides = [s for i, s in enumerate(t.stride()) if i != 1]
    return channel_vector([t], [t.stride(1)], [channels, *strides])


@pytest.mark.parametrize("channels,dtype,want", [
    (24, torch.float16, 8), (116, torch.float16, 4), (58, torch.float16, 2),
    (232, torch.float16, 8), (464, torch.float16, 8), (3, torch.float16, 1),
    (116, torch.float32, 4), (58, torch.float32, 2), (6, torch.float64, 2),
    (24, torch.float64, 2)])
def test_vector_is_the_channels_power_of_two_up_to_16_bytes(channels, dtype, want):
    assert _vec(_cl(2, channels, 3, 5, dtype=dtype), channels) == want


def test_nchw_and_misaligned_views_get_no_vector():
    assert _vec(torch.randn(2, 24, 3, 5, dtype=torch.float16), 24) == 1  # NCHW
    x = _cl(2, 32, 3, 5)
    # a channel slice starting one element in: 2-byte aligned address only
    assert _vec(x[:, 1:25], 24) == 1
    # starting four elements in: 8 bytes
    assert _vec(x[:, 4:28], 24) == 4
    # every other pixel of a row: pixel stride 64, still a multiple of 8
    assert _vec(x[:, :, :, ::2], 32) == 8


@pytest.fixture
def vectors(kernel_launches):
    """The VEC of every 1x1 GEMM and direct launch while the test runs."""
    return LaunchView(kernel_launches,
                      lambda launch: (launch[0], launch[2]["VEC"]) if "VEC" in launch[2] else None)


# (id, N, C, H, W, K, kernel, stride, groups, channel offset of x's view, residual)
CASES = [
    ("1x1-24-to-58", 2, 24, 5, 3, 58, 1, 1, 1, 0, False),
    ("1x1-116-residual", 1, 116, 4, 5, 116, 1, 1, 1, 0, True),
    ("1x1-232-to-24", 1, 232, 3, 3, 24, 1, 1, 1, 0, False),
    ("1x1-grouped-48", 1, 48, 3, 4, 48, 1, 1, 2, 0, False),
    ("1x1-view-offset-4", 1, 24, 4, 3, 32, 1, 1, 1, 4, False),
    ("1x1-view-offset-1", 1, 24, 4, 3, 32, 1, 1, 1, 1, False),
    ("dw-116", 1, 116, 7, 6, 116, 3, 1, 116, 0, False),
    ("dw-232-stride2-residual", 1, 232, 7, 7, 232, 3, 2, 232, 0, True),
    ("dw-24-view-offset-8", 2, 24, 5, 5, 24, 3, 1, 24, 8, False),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_vectorised_launches_match_torch(vectors, case):
    _, n, c, h, w, k, r, stride, groups, offset, residual = case
    dtype = torch.float16
    base = _cl(n, c + offset + 8, h, w, dtype=dtype)
    x = base[:, offset:offset + c].detach().requires_grad_()
    wt = torch.randn(k, c // groups, r, r, dtype=dtype, requires_grad=True)
    y_shape = F.conv2d(x.detach().float(), wt.detach().float(), stride=stride, padding=r // 2,
                       groups=groups).shape
    res = _cl(*y_shape, dtype=dtype) if residual else None
    dy = _cl(*y_shape, dtype=dtype)
    with aten_forbidden():
        y = FC.conv2d(x, wt, stride=stride, padding=r // 2, groups=groups) if res is None else \
            FC.conv2d(x, wt, stride=stride, padding=r // 2, groups=groups) + res
        gx, gw = torch.autograd.grad(y, (x, wt), dy)
    assert vectors, "no 1x1 GEMM or direct launch"
    if offset in (0, 4, 8) and c % 4 == 0 and k % 2 == 0:
        assert max(v for _, v in vectors) > 1, vectors  # the aligned path ran
    if offset == 1:  # the launches that read x (the forward, first, and the weight gradient)
        assert vectors[0][1] == 1 and all(v == 1 for name, v in vectors if "wgrad" in name), \
            vectors

    xd, wd = x.detach().double().requires_grad_(), wt.detach().double().requires_grad_()
    ref = F.conv2d(xd, wd, stride=stride, padding=r // 2, groups=groups)
    if res is not None:
        ref = ref + res.double()
    rgx, rgw = torch.autograd.grad(ref, (xd, wd), dy.double())
    assert_rel_close(y, ref, dtype, "y")
    assert_rel_close(gx, rgx, dtype, "dx")
    assert_rel_close(gw, rgw, dtype, "dw")
