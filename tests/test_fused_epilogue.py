"""conv2d(..., activation=, residual=): the fused epilogue against the unfused torch composition."""

import pytest
import torch
import torch.nn.functional as F

import fastconv.functional as FC
from fastconv.functional.explain import explain
from helpers import assert_rel_close, aten_forbidden

ACTS = {None: lambda z: z, "relu": F.relu, "relu6": F.relu6, "silu": F.silu, "gelu": F.gelu}

# (N, C, H, W, K, R, S, stride, padding, groups): one per kernel family
SHAPES = {
    "implicit_gemm": (2, 16, 5, 6, 20, 3, 3, 2, 1, 1),
    "gemm_1x1": (2, 32, 4, 3, 24, 1, 1, 1, 0, 2),
    "stem": (1, 3, 7, 6, 16, 3, 3, 2, 1, 1),
    "direct": (1, 6, 5, 5, 12, 3, 3, 1, 1, 6),
}


# every activation with and without a residual (no activation and no residual is plain conv2d)
EPILOGUES = [(a, r) for a in ACTS for r in (False, True) if a is not None or r]


@pytest.mark.parametrize("family", list(SHAPES))
@pytest.mark.parametrize("activation,with_residual", EPILOGUES)
def test_fused_matches_unfused(family, activation, with_residual):
    n, c, h, w, k, r, s, stride, pad, groups = SHAPES[family]
    dtype = {"implicit_gemm": torch.float32, "gemm_1x1": torch.bfloat16, "stem": torch.bfloat16,
             "direct": torch.float16}[family]
    x = torch.randn(n, c, h, w).to(dtype)
    if family != "implicit_gemm":
        x = x.contiguous(memory_format=torch.channels_last)
    wt = (torch.randn(k, c // groups, r, s) / (c // groups * r * s) ** 0.5).to(dtype)
    b = torch.randn(k).to(dtype)
    assert explain(x, wt, stride, pad, 1, groups).fprop.family == family
    out_hw = [(h + 2 * pad - r) // stride + 1, (w + 2 * pad - s) // stride + 1]
    res = torch.randn(n, k, *out_hw).to(dtype) if with_residual else None
    leaves = [t.clone().requires_grad_() if t is not None else None for t in (x, wt, b, res)]
    with aten_forbidden():
        y = FC.conv2d(leaves[0], leaves[1], leaves[2], stride, pad, 1, groups,
                      activation=activation, residual=leaves[3])
        grad = torch.randn(y.shape).to(dtype)
        y.backward(grad)
    refs = [t.double().requires_grad_() if t is not None else None for t in (x, wt, b, res)]
    z = F.conv2d(refs[0], refs[1], refs[2], stride, pad, 1, groups)
    y_ref = ACTS[activation](z + refs[3] if with_residual else z)
    y_ref.backward(grad.double())
    assert_rel_close(y, y_ref, dtype, "output")
    for name, leaf, ref in zip(("input", "weight", "bias", "residual"), leaves, refs):
        if leaf is not None:
            assert_rel_close(leaf.grad, ref.grad, dtype, f"grad {name}")


def test_inference_keeps_no_preactivation(monkeypatch):
    """Without autograd, silu/gelu need no pre-activation buffer: the op is told so."""
    from fastconv.ops import registry
    seen = []
    real = registry.call

    def spy(op, *args):
        if op is torch.ops.fastconv.conv2d_activation.default:
            seen.append(args[-1])
        return real(op, *args)
    monkeypatch.setattr(registry, "call", spy)
    x, w = torch.randn(1, 16, 4, 4), torch.randn(16, 16, 1, 1)
    with torch.no_grad():
        FC.conv2d(x, w, activation="silu")
    FC.conv2d(x, w.requires_grad_(), activation="gelu")
    FC.conv2d(x, w, activation="relu")
    assert seen == [False, True, False]


def test_unbatched_residual():
    x, w = torch.randn(16, 5, 5), torch.randn(8, 16, 3, 3)
    res = torch.randn(8, 3, 3)
    with aten_forbidden():
        y = FC.conv2d(x, w, activation="relu", residual=res)
    ref = F.relu(F.conv2d(x.double(), w.double()) + res.double())
    assert_rel_close(y, ref, torch.float32, "unbatched")


@pytest.mark.parametrize("kwargs,exc,names", [
    (dict(activation="tanh"), ValueError, ["activation", "tanh"]),
    (dict(activation="none"), ValueError, ["activation"]),
    (dict(activation=1), TypeError, ["activation"]),
    (dict(residual=torch.randn(2, 8, 3, 4)), ValueError, ["residual", "shape"]),
    (dict(residual=torch.randn(8, 3, 3)), ValueError, ["residual", "shape"]),
    (dict(residual=torch.randn(2, 8, 1, 1)), ValueError, ["residual", "broadcast"]),
    (dict(residual=torch.randn(2, 8, 3, 3, dtype=torch.float64)), TypeError, ["residual", "dtype"]),
    (dict(residual=torch.randn(2, 8, 3, 3, device="meta")), RuntimeError, ["residual", "device"]),
    (dict(residual=[1.0]), TypeError, ["residual"]),
], ids=["unknown-activation", "activation-none-string", "activation-int", "residual-shape",
        "residual-unbatched-rank", "residual-broadcast", "residual-dtype", "residual-device",
        "residual-not-tensor"])
def test_bad_epilogue_arguments(kwargs, exc, names, monkeypatch):
    from fastconv.conv import launch as conv2d_launch
    monkeypatch.setattr(conv2d_launch, "conv2d_fprop",
                        lambda *a, **k: pytest.fail("a kernel was launched for bad input"))
    x, w = torch.randn(2, 16, 5, 5), torch.randn(8, 16, 3, 3)
    with pytest.raises(exc) as info:
        FC.conv2d(x, w, **kwargs)
    for name in names:
        assert name in str(info.value), str(info.value)
