"""Randomised sweep: fastconv.functional.roi_align / roi_pool against torchvision, output and
input gradient.

RoIAlign's reference is torchvision.ops.roi_align on the input and boxes upcast to float64 (the
boxes are first rounded to the case's dtype, so both sides see the same boxes). RoIPool takes
maxima, so its reference is torchvision in float32 (float64 for float64 cases) on the upcast
values: the output and the argmax must be exactly equal, the gradient close. torchvision's RoI
ops are overridden to raise while fastconv runs, so a pass cannot come from a silent fallback.
"""
from collections import Counter

import pytest
import torch
import torchvision.ops as tvops

import fastconv.functional as FC
from helpers import assert_rel_close, aten_forbidden
from roi_cases import BOX_KINDS, LAYOUTS, roi_sweep, to_rois

TV_OPS = ("roi_align", "_roi_align_backward", "roi_pool", "_roi_pool_backward")
CASES = roi_sweep(300, seed=2027)


def torchvision_forbidden():
    return aten_forbidden(ops=TV_OPS, namespace="torchvision")


def run_fastconv(case, seed=0):
    """fastconv forward and backward on the case (torchvision forbidden); returns
    (x, y, grad_y, x.grad). The arguments are checked to be unmodified."""
    leaf, x = case.input(seed, requires_grad=True)
    boxes = case.boxes()
    x_before = x.detach().clone()
    boxes_before = [b.clone() for b in (boxes if case.as_list else [boxes])]
    with torchvision_forbidden():
        if case.op == "align":
            y = FC.roi_align(x, boxes, case.output_size, case.spatial_scale,
                             case.sampling_ratio, case.aligned)
        else:
            y = FC.roi_pool(x, boxes, case.output_size, case.spatial_scale)
        grad_y = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed + 1))
        grad_y = grad_y.to(case.dtype)
        y.backward(grad_y)
    assert torch.equal(x.detach(), x_before), "input modified"
    for b, b_before in zip(boxes if case.as_list else [boxes], boxes_before):
        assert torch.equal(b, b_before), "boxes modified"
    return x, y, grad_y, x.grad


def check_output(case, y):
    ph, pw = case.pooled
    assert y.shape == (case.K, case.C, ph, pw)
    assert y.dtype == case.dtype
    assert y.is_contiguous(), f"output strides {y.stride()}"
    if y.numel():
        assert not torch.isnan(y).all(), "output is all NaN"


def torchvision_roi_align(x_ref, case):
    """torchvision's roi_align on float64, except for boxes it cannot take.

    With aligned=True and adaptive sampling, an inverted box (x2 < x1 or y2 < y1) has a
    negative size, so ceil(size / pooled) samples <= 0 along that axis: the bins average
    nothing and are 0. torchvision's CUDA kernel gives those zeros; its CPU kernel sizes a
    buffer by the product of the two sample counts and fails when exactly one is negative. So
    such boxes get zeros here, and torchvision computes the others.
    """
    boxes = case.boxes(torch.float64)
    args = (case.output_size, case.spatial_scale, case.sampling_ratio, case.aligned)
    rois = to_rois(boxes)
    empty = torch.zeros(case.K, dtype=torch.bool)
    if case.aligned and case.sampling_ratio <= 0:
        empty = (rois[:, 3] < rois[:, 1]) | (rois[:, 4] < rois[:, 2])
    if not empty.any():
        return tvops.roi_align(x_ref, boxes, *args)
    keep = (~empty).nonzero().flatten()
    y = x_ref.new_zeros((case.K, case.C) + case.pooled)
    return y.index_put((keep,), tvops.roi_align(x_ref, rois[keep], *args))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_roi_op_matches_torchvision(case):
    x, y, grad_y, grad_x = run_fastconv(case)
    check_output(case, y)
    assert grad_x is not None and grad_x.shape == x.shape and grad_x.dtype == case.dtype

    if case.op == "align":
        x_ref = x.detach().double().requires_grad_()
        y_ref = torchvision_roi_align(x_ref, case)
        y_ref.backward(grad_y.double())
        assert_rel_close(y, y_ref, case.dtype, "output")
        assert_rel_close(grad_x, x_ref.grad, case.dtype, "grad_input")
        return

    ref_dtype = torch.float64 if case.dtype == torch.float64 else torch.float32
    x_ref = x.detach().to(ref_dtype).requires_grad_()
    y_ref = tvops.roi_pool(x_ref, case.boxes(ref_dtype), case.output_size, case.spatial_scale)
    y_ref.backward(grad_y.to(ref_dtype))
    assert y.shape == y_ref.shape
    assert torch.equal(y.to(ref_dtype), y_ref), (
        f"output differs: {(y.to(ref_dtype) != y_ref).sum().item()} elements; "
        f"{y.to(ref_dtype)} vs {y_ref}")
    assert_rel_close(grad_x, x_ref.grad, case.dtype, "grad_input")

    # the op also returns the argmax (flat h * W + w index, -1 for an empty bin)
    ph, pw = case.pooled
    with torchvision_forbidden():
        out, argmax = torch.ops.fastconv.roi_pool(x.detach(), to_rois(case.boxes()),
                                                  case.spatial_scale, ph, pw)
    _, argmax_ref = torch.ops.torchvision.roi_pool(x_ref.detach(), to_rois(case.boxes(ref_dtype)),
                                                   case.spatial_scale, ph, pw)
    assert argmax.dtype == torch.int32
    assert torch.equal(out, y.detach())
    assert torch.equal(argmax.long(), argmax_ref.long()), (
        f"argmax differs at {(argmax.long() != argmax_ref.long()).nonzero()[:5].tolist()}")


def test_sweep_covers_the_edge_cases():
    """The case list is generated, so check what it generated."""
    ops = Counter(c.op for c in CASES)
    assert ops["align"] >= 150 and ops["pool"] >= 80, ops
    for op in ("align", "pool"):
        cases = [c for c in CASES if c.op == op]
        assert {c.dtype for c in cases} == {torch.float32, torch.float16, torch.bfloat16,
                                           torch.float64}, op
        assert {c.layout for c in cases} == set(LAYOUTS), op
        assert {k for c in cases for k in c.kinds} == set(BOX_KINDS), op
        assert sum(c.K == 0 for c in cases) >= 3, op
        assert sum(c.as_list for c in cases) >= 15, op
        assert sum(c.N > 1 for c in cases) >= 20, op
        assert {c.spatial_scale for c in cases} == {1.0, 0.5, 0.25, 0.0625, 0.3}, op
        assert sum(isinstance(c.output_size, int) for c in cases) >= 10, op
        assert sum(c.pooled[0] != c.pooled[1] for c in cases) >= 30, op
        assert sum(c.H == 1 or c.W == 1 for c in cases) >= 5, op
        assert sum(c.H != c.W for c in cases) >= 30, op
    align = [c for c in CASES if c.op == "align"]
    assert {c.sampling_ratio for c in align} == {-1, 0, 1, 2, 3}
    assert sum(c.aligned for c in align) >= 50 and sum(not c.aligned for c in align) >= 50
    # inverted boxes with aligned=True and adaptive sampling: the zeros torchvision's CPU
    # kernel can't produce
    assert sum(c.aligned and c.sampling_ratio <= 0 and "inv" in c.kinds for c in align) >= 5
    # RoIPool's rounding of x.5, negative ones included
    scaled = [2 * v * c.spatial_scale for c in CASES if c.op == "pool"
              for row in c.rows for v in row[1:]]
    assert sum(v < 0 and abs(v - round(v)) < 1e-9 and round(v) % 2 == 1 for v in scaled) >= 3
