"""Randomised sweep: fastconv.functional.conv2d against torch, output and all three gradients.

The reference is torch.nn.functional.conv2d on the same values upcast to float64. ATen's
convolution (forward and backward) is overridden to raise while fastconv runs, so a pass cannot
come from a silent fallback.
"""
import pytest
import torch
import torch.nn.functional as F

import fastconv
from fastconv.functional.explain import explain
from fastconv.conv.plan import KERNELS
from conv_cases import sweep
from helpers import assert_rel_close, aten_forbidden

CASES = sweep(300, seed=2026)


def run_case(case, seed=0):
    x, w, b = case.tensors(seed)
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in (x, w, b)]
    with aten_forbidden():
        y = fastconv.functional.conv2d(leaves[0], leaves[1], leaves[2], case.stride,
                                       case.padding, case.dilation, case.groups)
        grad_y = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed + 1)).to(y.dtype)
        y.backward(grad_y)
    refs = [t.detach().double().requires_grad_() if t is not None else None for t in (x, w, b)]
    y_ref = F.conv2d(refs[0], refs[1], refs[2], case.stride, case.padding, case.dilation,
                     case.groups)
    y_ref.backward(grad_y.double())
    return y, y_ref, leaves, refs


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_conv2d_matches_torch(case):
    y, y_ref, leaves, refs = run_case(case)
    assert y.dtype == case.dtype
    assert_rel_close(y, y_ref, case.dtype, "output")
    for name, leaf, ref in zip(("grad_input", "grad_weight", "grad_bias"), leaves, refs):
        if leaf is not None:
            assert leaf.grad.dtype == case.dtype, name
            assert_rel_close(leaf.grad, ref.grad, case.dtype, name)
    # the output's memory format is torch's (channels_last in, channels_last out)
    for fmt in (torch.contiguous_format, torch.channels_last):
        assert y.is_contiguous(memory_format=fmt) == y_ref.is_contiguous(memory_format=fmt), fmt


def test_sweep_covers_the_families():
    """The sweep must exercise every kernel family in every direction it has at least 50 times, each
    dtype and both layouts (the case list is generated, so check what it generated, through
    the same ``explain`` users call)."""
    seen = {}
    for c in CASES:
        x, w, _ = c.tensors(0)
        plans = explain(x, w, c.stride, c.padding, c.dilation, c.groups)
        for plan in (plans.fprop, plans.dgrad, plans.wgrad):
            seen[(plan.direction, plan.family)] = seen.get((plan.direction, plan.family), 0) + 1
    for direction, family in KERNELS:  # every kernel the plan can pick
        assert seen.get((direction, family), 0) >= 50, (direction, family, seen)
    assert {c.dtype for c in CASES} == {torch.float32, torch.float16, torch.bfloat16}
    assert sum(c.channels_last for c in CASES) >= 50
    assert sum(c.groups > 1 for c in CASES) >= 50
    assert sum(c.dilation != (1, 1) and c.stride != (1, 1) for c in CASES) >= 20
