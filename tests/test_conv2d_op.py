"""The fastconv::conv2d op itself: torch.library registration (opcheck) and float64 gradcheck."""
import pytest
import torch

import fastconv
from helpers import aten_forbidden

# (N, C, H, W, K, R, S, stride, padding, dilation, groups): both families in every direction.
# Tiny, because gradcheck evaluates the op once per input element and once per output element.
GRAD_CASES = [
    (2, 2, 4, 3, 3, 2, 2, 1, 1, 1, 1),        # thin input channels: direct kernels
    (1, 16, 3, 4, 16, 2, 2, 2, 1, 1, 1),      # implicit GEMM everywhere, strided
    (1, 32, 3, 3, 32, 2, 2, 1, 1, 2, 2),      # grouped, dilated, padded
    (1, 3, 4, 4, 6, 3, 3, 2, 1, 1, 3),        # depthwise with a channel multiplier of 2
    (1, 17, 2, 3, 3, 1, 1, 1, 0, 1, 1),       # 1x1, few output channels: direct dgrad
]


def _args(case, dtype=torch.float64, requires_grad=True, bias=True, channels_last=False):
    n, c, h, w, k, r, s, stride, pad, dil, groups = case
    x = torch.randn(n, c, h, w, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    wt = torch.randn(k, c // groups, r, s, dtype=dtype)
    b = torch.randn(k, dtype=dtype) if bias else None
    for t in (x, wt, b):
        if t is not None:
            t.requires_grad_(requires_grad)
    return x, wt, b, [stride] * 2, [pad] * 2, [dil] * 2, groups


@pytest.mark.parametrize("case", GRAD_CASES)
def test_gradcheck_float64(case):
    x, w, b, stride, pad, dil, groups = _args(case)
    # fast mode checks a random projection of the Jacobian: two evaluations instead of one
    # interpreted launch per input and output element
    with aten_forbidden():
        assert torch.autograd.gradcheck(
            lambda x, w, b: torch.ops.fastconv.conv2d(x, w, b, stride, pad, dil, groups),
            (x, w, b), eps=1e-6, atol=1e-7, fast_mode=True)


@pytest.mark.parametrize("case", [(1, 1, 3, 2, 2, 2, 2, 1, 1, 1, 1), (1, 2, 2, 2, 2, 2, 1, 2, 1, 2, 2)])
def test_gradcheck_full_jacobian(case):
    x, w, b, stride, pad, dil, groups = _args(case)
    with aten_forbidden():
        assert torch.autograd.gradcheck(
            lambda x, w, b: torch.ops.fastconv.conv2d(x, w, b, stride, pad, dil, groups),
            (x, w, b), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("case", GRAD_CASES[:3])
@pytest.mark.parametrize("dtype,channels_last,bias", [
    (torch.float32, False, True), (torch.float16, True, False), (torch.float64, False, True)])
def test_opcheck(case, dtype, channels_last, bias):
    args = _args(case, dtype, requires_grad=True, bias=bias, channels_last=channels_last)
    torch.library.opcheck(torch.ops.fastconv.conv2d.default, args)


def test_opcheck_gradient_ops():
    x, w, b, stride, pad, dil, groups = _args(GRAD_CASES[1], torch.float32, requires_grad=False)
    y = torch.ops.fastconv.conv2d(x, w, b, stride, pad, dil, groups)
    dy = torch.randn_like(y)
    torch.library.opcheck(torch.ops.fastconv.conv2d_input_grad.default,
                          (dy, w, list(x.shape), stride, pad, dil, groups))
    torch.library.opcheck(torch.ops.fastconv.conv2d_weight_grad.default,
                          (dy, x, list(w.shape), stride, pad, dil, groups))


def test_only_requested_gradients_are_computed(monkeypatch):
    """A frozen weight costs no wgrad launch, an input without grad no dgrad launch."""
    from fastconv.conv import launch as conv2d_launch
    calls = []
    for name in ("conv2d_dgrad", "conv2d_wgrad"):
        real = getattr(conv2d_launch, name)
        monkeypatch.setattr(conv2d_launch, name,
                            lambda *a, _real=real, _n=name, **k: calls.append(_n) or _real(*a, **k))
    x, w, b, stride, pad, dil, groups = _args(GRAD_CASES[1], torch.float32, requires_grad=False)
    w.requires_grad_()
    fastconv.functional.conv2d(x, w, b, stride, pad, dil, groups).sum().backward()
    assert calls == ["conv2d_wgrad"]
