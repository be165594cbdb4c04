"""Large tensors: index arithmetic switches to int64 when a tensor has >= 2**31 elements or a
strided view can reach an element offset of 2**31.

No machine here holds such tensors (and the interpreter could not walk them), so the decision
is checked three ways:

- the launchers describe their launches (``KernelLaunch``) from meta-device tensors just below
  and at 2**31 elements, for every kernel family and direction of conv2d, for conv1d,
  conv_transpose2d, RoIAlign and RoIPool forward and both backwards; the big tensor is the input,
  the output, the weight or the gradient buffer in turn, or a small view with a huge stride.
  ``INDEX_64`` must be what the DESIGN's rule says, and agree with an independent count of every
  tensor argument's reachable offset;
- the int64 launches of some of those cases, planned for a GPU, are compiled for sm_90 in one
  subprocess without TRITON_INTERPRET (this file run as a script), specialised on their
  arguments as Triton's JIT specialises a launch: no compile error, no register spill;
- the int64 variants run in the interpreter on small tensors (the launchers told that every
  tensor needs 64-bit offsets) against torch, with ATen's convolution and torchvision's RoI
  kernels forbidden meanwhile.
"""
import json
import os
import subprocess
import sys
from typing import Callable, Dict, NamedTuple, Optional, Tuple

import pytest
import torch

from fastconv.conv import launch as L
from fastconv.roi import launch as R
from fastconv.ops._runtime import new_output
from fastconv.conv.shapes import conv2d_output_shape, conv_memory_format, memory_format_of
from fastconv.conv.transpose_op import conv_transpose2d_output_shape
from helpers import LaunchView

BIG = 2**31
# [1, 16, H_AT, W_AT] has exactly 2**31 elements; one column fewer is just below
H_AT, W_AT = 2**13, 2**14
CONV_DTYPE, ROI_DTYPE = torch.float16, torch.float32


def _meta(shape, dtype) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, device="meta")


def _huge_stride(shape, reach: int, dtype) -> torch.Tensor:
    """A small [N, C, H, W] view (N >= 2) whose last element sits at offset ``reach``, through
    its batch stride: what slicing a big tensor (``big[::k]``) gives."""
    n, c, h, w = shape
    inner = (c - 1) * h * w + (h - 1) * w + (w - 1)
    stride_n = (reach - inner) // (n - 1)
    assert (n - 1) * stride_n + inner == reach, "pick a reach the batch stride can hit"
    return _meta(reach + 1, dtype).as_strided(shape, (stride_n, h * w, w, 1))


def _pair(v) -> Tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


# ---------------------------------------------------------------------------- the launches
class Described(NamedTuple):
    """A launch as the dispatcher describes it, with the plan behind it."""
    direction: str
    family: str
    config: object
    launch: L.KernelLaunch


# Each of these makes the launch an op of fastconv.ops would make for the given tensors,
# allocating its outputs as the op does and calling the same launcher.
def fprop(x, w, stride=1, padding=0, groups=1) -> Described:
    """fastconv::conv2d (and conv_transpose2d's input gradient, with x = grad_output)."""
    s, p, d = _pair(stride), _pair(padding), (1, 1)
    y = new_output(conv2d_output_shape(x.shape, w.shape, s, p, d), x, conv_memory_format(x, w))
    plan = L.plan_fprop(x, w, y, groups, s, p, d)
    pb = L.conv_problem(x.shape, w.shape, y.shape, groups, x.dtype)
    return Described("fprop", plan.family, plan.config,
                     L.fprop_launch(plan, pb, x, w, None, y, s, p, d, groups))


def dgrad(dy, w, input_shape, stride=1, padding=0, groups=1) -> Described:
    """fastconv::conv2d_input_grad (and conv_transpose2d's forward, with dy = input)."""
    s, p, d = _pair(stride), _pair(padding), (1, 1)
    dx = new_output(list(input_shape), dy, memory_format_of(dy))
    plan = L.plan_dgrad(dy, w, dx, groups, s, p, d)
    pb = L.conv_problem(dx.shape, w.shape, dy.shape, groups, dy.dtype)
    return Described("dgrad", plan.family, plan.config,
                     L.dgrad_launch(plan, pb, dy, w, dx, s, p, d, groups))


def wgrad(x, dy, weight_shape, stride=1, padding=0, groups=1) -> Described:
    """fastconv::conv2d_weight_grad; the launch's arguments include its split-K workspace."""
    s, p, d = _pair(stride), _pair(padding), (1, 1)
    pb = L.conv_problem(x.shape, weight_shape, dy.shape, groups, x.dtype)
    plan = L.plan_wgrad(x, dy, list(weight_shape), groups, s, p, d)
    launch, _ = L.wgrad_launch(plan, pb, x, dy, list(weight_shape), s, p, d, groups)
    return Described("wgrad", plan.family, plan.config, launch)


def conv2d_case(direction, x_shape, w_shape, stride=1, padding=0, groups=1):
    """One direction of conv2d(x, w), its tensors shaped as autograd hands them over."""
    def build(dtype=CONV_DTYPE):
        x, w = _meta(x_shape, dtype), _meta(w_shape, dtype)
        if direction == "fprop":
            return fprop(x, w, stride, padding, groups)
        y_shape = conv2d_output_shape(x_shape, w_shape, _pair(stride), _pair(padding), (1, 1))
        dy = _meta(y_shape, dtype)
        if direction == "dgrad":
            return dgrad(dy, w, x_shape, stride, padding, groups)
        return wgrad(x, dy, w_shape, stride, padding, groups)
    return build


def strided_fprop_case(shape, reach, w_shape, padding=0, groups=1):
    """conv2d's forward of a small view whose batch stride reaches offset ``reach``."""
    def build(dtype=CONV_DTYPE):
        return fprop(_huge_stride(shape, reach, dtype), _meta(w_shape, dtype), 1, padding,
                     groups)
    return build


def conv1d_case(direction, x_shape, w_shape, padding=0):
    """conv1d as fastconv.functional.conv1d runs it: conv2d on height-1 views."""
    def build(dtype=CONV_DTYPE):
        x = _meta(x_shape, dtype).unsqueeze(2)
        w = _meta(w_shape, dtype).unsqueeze(2)
        p = (0, padding)
        if direction == "fprop":
            return fprop(x, w, 1, p)
        dy = _meta(conv2d_output_shape(x.shape, w.shape, (1, 1), p, (1, 1)), dtype)
        if direction == "dgrad":
            return dgrad(dy, w, x.shape, 1, p)
        return wgrad(x, dy, w.shape, 1, p)
    return build


def conv_transpose2d_case(direction, x_shape, w_shape, stride=1):
    """conv_transpose2d's three passes on conv2d's kernels (fastconv.conv.transpose_op)."""
    def build(dtype=CONV_DTYPE):
        x, w = _meta(x_shape, dtype), _meta(w_shape, dtype)
        s = _pair(stride)
        out_shape = conv_transpose2d_output_shape(x_shape, w_shape, s, (0, 0), (0, 0), 1, (1, 1))
        if direction == "forward":
            return dgrad(x, w, out_shape, s)
        grad_out = _meta(out_shape, dtype)
        if direction == "input_grad":
            return fprop(grad_out, w, s)
        return wgrad(grad_out, x, w_shape, s)
    return build


def roi_case(op, direction, x_shape, boxes, pooled=(7, 7), reach: Optional[int] = None):
    """RoIAlign / RoIPool forward, backward or ordered (deterministic) backward, as
    fastconv.roi.align_op / roi_pool launch them; ``reach``: the feature map is a small view
    with a huge batch stride instead."""
    def build(dtype=ROI_DTYPE):
        x = _meta(x_shape, dtype) if reach is None else _huge_stride(x_shape, reach, dtype)
        rois = _meta((boxes, 5), dtype)
        out_shape = (boxes, x.shape[1], *pooled)
        y, argmax = _meta(out_shape, dtype), _meta(out_shape, torch.int32)
        ordered = direction == "backward_ordered"
        tile = R.roi_tile(x.shape[1], pooled[0] * pooled[1], ordered=ordered)
        if direction == "forward":
            if op == "roi_align":
                launch = R.roi_align_forward_launch(x, rois, 0.25, *pooled, 2, True, y)
            else:
                launch = R.roi_pool_forward_launch(x, rois, 0.25, y, argmax)
        else:
            dx = R.gradient_buffer(list(x.shape), y, channels_last=False)
            if op == "roi_align":
                launch = R.roi_align_backward_launch(y, rois, 0.25, 2, True, dx, ordered)
            else:
                launch = R.roi_pool_backward_launch(y, rois, argmax, dx, ordered)
        return Described(direction, op, tile, launch)
    return build


def split_k(build, split=2):
    """``build`` with the fprop / dgrad GEMMs split ``split`` ways under the interpreter (a
    GPU's plan splits where the output has fewer tiles than the GPU has SMs)."""
    def build_split(*args):
        from helpers import interpreter_split_k
        with interpreter_split_k(split):
            return build(*args)
    return build_split


DW = dict(groups=16)  # depthwise: the direct family in every direction
# case id -> (INDEX_64 expected, builder). "below": every tensor under 2**31 elements; "-at":
# the named tensor has exactly 2**31; "huge-stride": a small view reaching offset 2**31, and
# "stride-below" one reaching 2**31 - 1, the largest int32 offset.
CASES: Dict[str, Tuple[bool, Callable[..., Described]]] = {
    # conv2d forward, each family: the input, then the output, is the big one
    "fprop-igemm-below": (False, conv2d_case("fprop", (1, 16, H_AT, W_AT - 1), (16, 16, 3, 3),
                                             padding=1)),
    "fprop-igemm-x-at": (True, conv2d_case("fprop", (1, 16, H_AT, W_AT), (16, 16, 3, 3),
                                           padding=1)),
    "fprop-igemm-y-at": (True, conv2d_case("fprop", (1, 16, H_AT, W_AT // 2), (32, 16, 3, 3),
                                           padding=1)),
    # 64 channels: a reduction long enough (18 steps) that the GPU plan splits it
    "fprop-igemm-huge-stride": (True, strided_fprop_case((2, 64, 7, 9), BIG, (16, 64, 3, 3), 1)),
    "fprop-igemm-stride-below": (False, strided_fprop_case((2, 16, 7, 9), BIG - 1,
                                                           (16, 16, 3, 3), 1)),
    "fprop-1x1-below": (False, conv2d_case("fprop", (1, 16, H_AT, W_AT - 1), (16, 16, 1, 1))),
    "fprop-1x1-x-at": (True, conv2d_case("fprop", (1, 16, H_AT, W_AT), (16, 16, 1, 1))),
    "fprop-1x1-y-at": (True, conv2d_case("fprop", (1, 16, H_AT, W_AT // 2), (32, 16, 1, 1))),
    "fprop-1x1-huge-stride": (True, strided_fprop_case((3, 16, 5, 5), BIG + 1, (16, 16, 1, 1))),
    "fprop-direct-below": (False, conv2d_case("fprop", (1, 16, H_AT, W_AT - 1), (16, 1, 3, 3),
                                              padding=1, **DW)),
    "fprop-direct-x-at": (True, conv2d_case("fprop", (1, 16, H_AT, W_AT), (16, 1, 3, 3),
                                            padding=1, **DW)),
    "fprop-direct-y-at": (True, conv2d_case("fprop", (1, 16, H_AT, W_AT // 2), (32, 1, 3, 3),
                                            padding=1, **DW)),
    # the stem: 8 input channels (3 would not reach 2**31 exactly), its flat 3x3x8 reduction
    "fprop-stem-below": (False, conv2d_case("fprop", (1, 8, H_AT, 2 * W_AT - 1), (8, 8, 3, 3),
                                            padding=1)),
    "fprop-stem-x-at": (True, conv2d_case("fprop", (1, 8, H_AT, 2 * W_AT), (8, 8, 3, 3),
                                          padding=1)),
    "fprop-direct-huge-stride": (True, strided_fprop_case((2, 16, 7, 9), BIG, (16, 1, 3, 3), 1,
                                                          16)),
    # split-K: the GEMM writes partial sums to a workspace [split, groups, pixels, channels],
    # the reduction adds them into the output; below the limit the workspace is too
    "fprop-igemm-split-below": (False, split_k(conv2d_case(
        "fprop", (1, 16, H_AT // 2, W_AT // 2), (16, 16, 3, 3), padding=1))),
    "fprop-igemm-split-x-at": (True, split_k(conv2d_case("fprop", (1, 16, H_AT, W_AT),
                                                         (16, 16, 3, 3), padding=1))),
    "dgrad-1x1-split-dx-at": (True, split_k(conv2d_case("dgrad", (1, 32, H_AT, H_AT),
                                                        (16, 32, 1, 1)))),
    # input gradient: the output gradient, then (stride 2) the input gradient, is the big one
    "dgrad-igemm-below": (False, conv2d_case("dgrad", (1, 16, H_AT, W_AT - 1), (16, 16, 3, 3),
                                             padding=1)),
    "dgrad-igemm-dy-at": (True, conv2d_case("dgrad", (1, 16, H_AT, W_AT), (16, 16, 3, 3),
                                            padding=1)),
    "dgrad-igemm-dx-at": (True, conv2d_case("dgrad", (1, 16, H_AT, W_AT), (16, 16, 3, 3),
                                            stride=2, padding=1)),
    "dgrad-1x1-below": (False, conv2d_case("dgrad", (1, 16, H_AT, W_AT - 1), (16, 16, 1, 1))),
    "dgrad-1x1-dx-at": (True, conv2d_case("dgrad", (1, 32, H_AT, H_AT), (16, 32, 1, 1))),
    "dgrad-direct-below": (False, conv2d_case("dgrad", (1, 16, H_AT, W_AT - 1), (16, 1, 3, 3),
                                              padding=1, **DW)),
    "dgrad-direct-dx-at": (True, conv2d_case("dgrad", (1, 16, H_AT, W_AT), (16, 1, 3, 3),
                                             stride=2, padding=1, **DW)),
    # weight gradient: the input, then the weight (and with it the split-K workspace)
    "wgrad-igemm-below": (False, conv2d_case("wgrad", (1, 16, H_AT, W_AT - 1), (16, 16, 3, 3),
                                             padding=1)),
    "wgrad-igemm-x-at": (True, conv2d_case("wgrad", (1, 16, H_AT, W_AT), (16, 16, 3, 3),
                                           padding=1)),
    "wgrad-igemm-weight-below": (False, conv2d_case("wgrad", (1, 2**14, 1, 8),
                                                    (2**14 - 1, 2**14, 1, 8))),
    "wgrad-igemm-weight-at": (True, conv2d_case("wgrad", (1, 2**14, 1, 8),
                                                (2**14, 2**14, 1, 8))),
    "wgrad-1x1-below": (False, conv2d_case("wgrad", (1, 16, H_AT, W_AT - 1), (16, 16, 1, 1))),
    "wgrad-1x1-dy-at": (True, conv2d_case("wgrad", (1, 16, H_AT, W_AT // 2), (32, 16, 1, 1))),
    "wgrad-1x1-weight-below": (False, conv2d_case("wgrad", (1, 2**15, 1, 1),
                                                  (2**16 - 1, 2**15, 1, 1))),
    "wgrad-1x1-weight-at": (True, conv2d_case("wgrad", (1, 2**15, 1, 1), (2**16, 2**15, 1, 1))),
    "wgrad-direct-below": (False, conv2d_case("wgrad", (1, 16, H_AT, W_AT - 1), (16, 1, 3, 3),
                                              padding=1, **DW)),
    "wgrad-direct-x-at": (True, conv2d_case("wgrad", (1, 16, H_AT, W_AT), (16, 1, 3, 3),
                                            padding=1, **DW)),
    "wgrad-direct-weight-below": (False, conv2d_case("wgrad", (1, 2**27 - 1, 1, 1),
                                                     (2**27 - 1, 1, 4, 4), padding=2,
                                                     groups=2**27 - 1)),
    "wgrad-direct-weight-at": (True, conv2d_case("wgrad", (1, 2**27, 1, 1), (2**27, 1, 4, 4),
                                                 padding=2, groups=2**27)),
    # conv1d: [1, 16, L] views; L = 2**27 makes 2**31 elements
    "conv1d-fprop-below": (False, conv1d_case("fprop", (1, 16, 2**27 - 1), (16, 16, 3), 1)),
    "conv1d-fprop-x-at": (True, conv1d_case("fprop", (1, 16, 2**27), (16, 16, 3), 1)),
    "conv1d-dgrad-x-at": (True, conv1d_case("dgrad", (1, 16, 2**27), (16, 16, 3), 1)),
    "conv1d-wgrad-x-at": (True, conv1d_case("wgrad", (1, 16, 2**27), (16, 16, 3), 1)),
    # conv_transpose2d, stride 2: the output (four times the input) is the big one
    "convT-forward-below": (False, conv_transpose2d_case("forward", (1, 16, 2**12, 2**13 - 1),
                                                         (16, 16, 2, 2), stride=2)),
    "convT-forward-out-at": (True, conv_transpose2d_case("forward", (1, 16, 2**12, 2**13),
                                                         (16, 16, 2, 2), stride=2)),
    "convT-input-grad-out-at": (True, conv_transpose2d_case(
        "input_grad", (1, 16, 2**12, 2**13), (16, 16, 2, 2), stride=2)),
    "convT-weight-grad-out-at": (True, conv_transpose2d_case(
        "weight_grad", (1, 16, 2**12, 2**13), (16, 16, 2, 2), stride=2)),
}
# RoIAlign / RoIPool: the feature map (the input, or the backward's gradient buffer), then the
# pooled output (2**19 boxes x 64 channels x 8 x 8 bins = 2**31), then the boxes, then a
# strided feature map
for _op in ("roi_align", "roi_pool"):
    for _dir in ("forward", "backward", "backward_ordered"):
        _key = f"{_op}-{_dir}"
        CASES[f"{_key}-below"] = (False, roi_case(_op, _dir, (1, 16, H_AT, W_AT - 1), 8))
        CASES[f"{_key}-map-at"] = (True, roi_case(_op, _dir, (1, 16, H_AT, W_AT), 8))
        CASES[f"{_key}-pooled-below"] = (False, roi_case(_op, _dir, (2, 64, 31, 37), 2**19 - 1,
                                                         (8, 8)))
        CASES[f"{_key}-pooled-at"] = (True, roi_case(_op, _dir, (2, 64, 31, 37), 2**19, (8, 8)))
        # the boxes [K, 5] themselves (one channel, one bin: nothing else is that big)
        CASES[f"{_key}-rois-below"] = (False, roi_case(_op, _dir, (1, 1, 4, 4), BIG // 5,
                                                       (1, 1)))
        CASES[f"{_key}-rois-at"] = (True, roi_case(_op, _dir, (1, 1, 4, 4), BIG // 5 + 1,
                                                   (1, 1)))
    CASES[f"{_op}-forward-huge-stride"] = (True, roi_case(_op, "forward", (2, 16, 7, 9), 8,
                                                          reach=BIG))
    CASES[f"{_op}-forward-stride-below"] = (False, roi_case(_op, "forward", (2, 16, 7, 9), 8,
                                                            reach=BIG - 1))

# The int64 launches compiled for sm_90, a handful (each compile costs seconds): a batch-1
# image, where Triton's JIT turns N = 1 into a constant; a small output, split-K on a GPU, with
# its reduction; a thin-channel and a 1x1 GEMM; an atomic and an ordered RoI backward. The full
# compile report (tests/test_compile_gpu.py) builds every kernel's generic int64 variants.
COMPILED = {
    "fprop-igemm-x-at": torch.float16,
    "fprop-igemm-huge-stride": torch.float16,
    "fprop-stem-x-at": torch.bfloat16,
    "dgrad-direct-dx-at": torch.bfloat16,
    "wgrad-1x1-weight-at": torch.float32,
    "roi_align-backward-pooled-at": torch.float32,
    "roi_pool-backward_ordered-pooled-at": torch.float16,
}


def _reaches_int64(t: torch.Tensor) -> bool:
    """The DESIGN's rule, counted here independently of fastconv: 2**31 elements, or a largest
    element offset of 2**31 or more."""
    reach = sum((size - 1) * abs(stride) for size, stride in zip(t.shape, t.stride()))
    return t.numel() >= BIG or (t.numel() > 0 and reach >= BIG)


def _kernel_name(launch: L.KernelLaunch) -> str:
    return launch.kernel.fn.__name__


# ---------------------------------------------------------------------------- descriptions
def _chain(launch: L.KernelLaunch) -> list:
    """A launch and the launches that follow it (a split-K GEMM's reduction)."""
    chain = []
    while launch is not None:
        chain.append(launch)
        launch = getattr(launch, "then", None)
    return chain


def describe(case_id: str, dtype=None) -> dict:
    """What the dispatcher launches for a case: each launch's kernel and INDEX_64, and the
    shapes of the tensor arguments that need 64-bit offsets by the DESIGN's rule."""
    _, build = CASES[case_id]
    chain = _chain((build() if dtype is None else build(dtype)).launch)
    tensors = [a for launch in chain for a in launch.args if isinstance(a, torch.Tensor)]
    assert tensors and all(t.device.type == "meta" for t in tensors)
    return {"launches": [(_kernel_name(launch), launch.meta["INDEX_64"]) for launch in chain],
            "big": [list(t.shape) for t in tensors if _reaches_int64(t)]}


def check_description(case_id: str, found: dict, where: str) -> None:
    expected = CASES[case_id][0]
    wrong = [(name, index_64) for name, index_64 in found["launches"] if index_64 is not expected]
    assert not wrong, (f"{case_id} ({where}): launched with INDEX_64 = {not expected}: {wrong}; "
                       f"tensor arguments needing 64-bit offsets: {found['big']}")
    # the case tests what it says: one of the launches' tensors needs 64 bits, or none does
    assert bool(found["big"]) is expected, f"{case_id}: 64-bit tensors {found['big']}"


@pytest.mark.parametrize("case_id", list(CASES))
def test_launch_description_switches_to_int64(case_id):
    check_description(case_id, describe(case_id), "interpreter plan")


def test_the_cases_cover_every_kernel():
    """Each kernel is described on both sides of the limit."""
    import fastconv.kernels
    sides = {}
    for case_id, (expected, _) in CASES.items():
        for name, _ in describe(case_id)["launches"]:
            sides.setdefault(name, set()).add(expected)
    assert sides == {name: {False, True} for name in fastconv.kernels.__all__}
    assert all(CASES[case_id][0] for case_id in COMPILED)


# ---------------------------------------------------------------------------- sm_90 compile
def gpu_report(arch: str) -> dict:
    """Run in a process without TRITON_INTERPRET: every case described as planned for a GPU,
    and the COMPILED cases' launches compiled for ``arch`` as Triton's JIT specialises a
    launch on its arguments."""
    from fastconv.bench import compile_report as CR
    described = {case_id: describe(case_id) for case_id in CASES}
    variants, rows = [], []
    for case_id, dtype in COMPILED.items():
        first = CASES[case_id][1](dtype)
        for launch in _chain(first.launch):
            direction = first.direction if launch is first.launch else "split_reduce"
            variants.append(CR.variant_of_launch(launch, direction=direction,
                                                 family=first.family, dtype=dtype))
            rows.append({"case": case_id, "kernel": _kernel_name(launch),
                         "index_64": launch.meta["INDEX_64"]})
    # one process: CI's test workers already keep every core busy
    for row, compiled in zip(rows, CR.compile_report(arch, jobs=1, variants=variants)):
        row.update(registers=compiled["registers"], stack=compiled["stack"],
                   error=compiled["error"])
    return {"described": described, "compiled": rows}


@pytest.fixture(scope="module")
def sm90_report() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, __file__, "sm_90"], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n" \
        f"{proc.stderr[-3000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_gpu_plan_switches_to_int64(sm90_report):
    """On a GPU the plan reads other config tables (the int64 ones, with smaller tiles) and
    splits the reduction of small outputs; INDEX_64 follows the same rule."""
    for case_id, found in sm90_report["described"].items():
        check_description(case_id, found, "GPU plan")


def test_int64_launches_compile_for_sm90_without_spills(sm90_report):
    rows = sm90_report["compiled"]
    assert sorted({r["case"] for r in rows}) == sorted(COMPILED)
    assert "conv2d_split_reduce_kernel" in {r["kernel"] for r in rows}, "no split-K launch"
    assert all(r["index_64"] is True for r in rows), [r for r in rows if not r["index_64"]]
    failed = [f"{r['case']} ({r['kernel']}): {r['error']}" for r in rows if r["error"]]
    assert not failed, f"{len(failed)} int64 launches failed to compile:\n" + "\n".join(failed)
    spills = [f"{r['case']} ({r['kernel']}): {r['stack']} bytes of stack, {r['registers']} "
              "registers" for r in rows if int(r["stack"]) > 0]
    assert not spills, "\n".join(spills)


# ---------------------------------------------------------------------------- interpreter
@pytest.fixture
def int64_launches(monkeypatch, kernel_launches):
    """Every launch told that its tensors need 64-bit offsets; the launches recorded as
    (kernel name, INDEX_64)."""
    monkeypatch.setattr(L, "needs_int64", lambda *tensors: True)
    monkeypatch.setattr(R, "needs_int64", lambda *tensors: True)
    return LaunchView(kernel_launches, lambda launch: (launch[0], launch[2]["INDEX_64"]))


def _conv_run(fn, ref_fn, *tensors):
    """Output and gradients of ``fn`` (fastconv, ATen forbidden) and ``ref_fn`` (torch on the
    same values in float64)."""
    from helpers import aten_forbidden
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    refs = [t.detach().double().requires_grad_() for t in tensors]
    ref = ref_fn(*refs)
    grad = torch.randn_like(ref)
    ref.backward(grad)
    with aten_forbidden():
        out = fn(*leaves)
        out.backward(grad.to(out.dtype))
    return [(out, ref)] + [(a.grad, b.grad) for a, b in zip(leaves, refs)]


def _roi_run(fn, ref_fn, x, rois):
    from helpers import aten_forbidden
    leaf, ref_leaf = x.detach().clone().requires_grad_(), x.detach().double().requires_grad_()
    ref = ref_fn(ref_leaf, rois.double())
    grad = torch.randn_like(ref)
    ref.backward(grad)
    with aten_forbidden(ops=("roi_align", "_roi_align_backward", "roi_pool",
                             "_roi_pool_backward"), namespace="torchvision"):
        out = fn(leaf, rois)
        out.backward(grad.to(out.dtype))
    return [(out, ref), (leaf.grad, ref_leaf.grad)]


def _rois(n, h, w, k, seed=0):
    gen = torch.Generator().manual_seed(seed)
    lo = torch.rand(k, 2, generator=gen) * torch.tensor([w, h]) * 0.7
    size = torch.rand(k, 2, generator=gen) * torch.tensor([w, h]) * 0.6 + 0.5
    batch = torch.randint(0, n, (k, 1), generator=gen).float()
    return torch.cat([batch, lo, lo + size], 1)


def _interpreter_runs():
    """name -> (the kernels it launches, what it runs); built when a test asks, so that the
    interpreter-only imports stay out of the compile subprocess."""
    import torch.nn.functional as F
    import torchvision.ops as tvops

    import fastconv.functional as FC
    x16, w3, w1, wdw = (torch.randn(2, 16, 5, 7), torch.randn(16, 16, 3, 3) / 12,
                        torch.randn(16, 16, 1, 1) / 4, torch.randn(16, 1, 3, 3) / 3)
    feats, rois = torch.randn(2, 5, 9, 11), _rois(2, 9, 11, 6)
    igemm = ("conv2d_fprop_igemm", "conv2d_dgrad_igemm", "conv2d_wgrad_igemm")
    return {
        "conv2d-igemm": (igemm, lambda: _conv_run(
            lambda x, w: FC.conv2d(x, w, padding=1, stride=(1, 2)),
            lambda x, w: F.conv2d(x, w, padding=1, stride=(1, 2)), x16, w3)),
        "conv2d-1x1": (("conv2d_1x1_gemm", "conv2d_1x1_wgrad"),
                       lambda: _conv_run(FC.conv2d, F.conv2d, x16, w1)),
        "conv2d-direct": (("conv2d_fprop_direct", "conv2d_dgrad_direct", "conv2d_wgrad_direct"),
                          lambda: _conv_run(lambda x, w: FC.conv2d(x, w, padding=1, groups=16),
                                            lambda x, w: F.conv2d(x, w, padding=1, groups=16),
                                            x16, wdw)),
        "conv2d-stem": (("conv2d_fprop_stem",) + igemm[1:], lambda: _conv_run(
            lambda x, w: FC.conv2d(x, w, padding=1, stride=2),
            lambda x, w: F.conv2d(x, w, padding=1, stride=2), torch.randn(2, 3, 9, 11),
            torch.randn(16, 3, 3, 3) / 5)),
        "conv2d-split-k": (igemm + ("conv2d_split_reduce",), lambda: _conv_run(
            lambda x, w, b: FC.conv2d(x, w, b, padding=1, activation="relu"),
            lambda x, w, b: F.relu(F.conv2d(x, w, b, padding=1)), x16, w3, torch.randn(16))),
        "conv1d": (igemm, lambda: _conv_run(lambda x, w: FC.conv1d(x, w, padding=2),
                                            lambda x, w: F.conv1d(x, w, padding=2),
                                            torch.randn(1, 16, 13), torch.randn(16, 16, 3) / 7)),
        "conv_transpose2d": (igemm, lambda: _conv_run(
            lambda x, w: FC.conv_transpose2d(x, w, stride=2),
            lambda x, w: F.conv_transpose2d(x, w, stride=2), torch.randn(1, 16, 3, 4), w3)),
        "roi_align": (("roi_align_fwd", "roi_align_bwd"), lambda: _roi_run(
            lambda x, r: FC.roi_align(x, r, (2, 3), 0.5, 2, True),
            lambda x, r: tvops.roi_align(x, r, (2, 3), 0.5, 2, True), feats, rois)),
        "roi_align-deterministic": (("roi_align_fwd", "roi_align_bwd_ordered"), lambda: _roi_run(
            lambda x, r: FC.roi_align(x, r, 3, 0.5, -1, False),
            lambda x, r: tvops.roi_align(x, r, 3, 0.5, -1, False), feats, rois)),
        "roi_pool": (("roi_pool_fwd", "roi_pool_bwd"), lambda: _roi_run(
            lambda x, r: FC.roi_pool(x, r, (3, 2), 0.5),
            lambda x, r: tvops.roi_pool(x, r, (3, 2), 0.5), feats, rois)),
        "roi_pool-deterministic": (("roi_pool_fwd", "roi_pool_bwd_ordered"), lambda: _roi_run(
            lambda x, r: FC.roi_pool(x, r, 2, 0.5),
            lambda x, r: tvops.roi_pool(x, r, 2, 0.5), feats, rois)),
    }


INTERPRETER_RUNS = ["conv2d-igemm", "conv2d-1x1", "conv2d-direct", "conv2d-stem", "conv2d-split-k",
                    "conv1d",
                    "conv_transpose2d", "roi_align", "roi_align-deterministic", "roi_pool",
                    "roi_pool-deterministic"]


@pytest.mark.parametrize("name", INTERPRETER_RUNS)
def test_int64_variants_run_in_the_interpreter(int64_launches, name):
    from helpers import interpreter_split_k
    from helpers import assert_rel_close
    kernels, run = _interpreter_runs()[name]
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(name.endswith("-deterministic"))
    try:
        with interpreter_split_k(3 if name.endswith("split-k") else 1):
            pairs = run()
    finally:
        torch.use_deterministic_algorithms(before)
    for i, (out, ref) in enumerate(pairs):
        assert_rel_close(out, ref, torch.float32, f"{name} {'output' if i == 0 else f'grad {i}'}")
    assert {k for k, _ in int64_launches} == {f"{k}_kernel" for k in kernels}
    assert all(index_64 is True for _, index_64 in int64_launches), int64_launches


def test_interpreter_runs_cover_every_kernel():
    import fastconv.kernels
    ran = {f"{k}_kernel" for name in INTERPRETER_RUNS for k in _interpreter_runs()[name][0]}
    assert ran == set(fastconv.kernels.__all__)


if __name__ == "__main__":
    # The sm90_report fixture's subprocess: a process
    # without TRITON_INTERPRET, so that @triton.jit builds GPU code; one JSON line out.
    print(json.dumps(gpu_report(sys.argv[1] if len(sys.argv) > 1 else "sm_90")))
