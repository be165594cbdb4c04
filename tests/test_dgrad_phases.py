"""The implicit-GEMM input gradient by stride phase.

A strided convolution's input pixels of one stride phase (h = ph + i*stride_h) receive through
the same taps; the kernel gives each program rows of one phase and loops over that phase's taps
only (``phase_taps``), instead of every tap with the unaligned ones masked.

- ``phase_taps`` enumerates exactly the taps a brute-force search finds, for every phase,
  stride, dilation and window.
- The plan counts reduction steps and programs by phase (3x3 stride 2: 4 phases, at most 4 of
  the 9 taps).
- The input gradient (and conv_transpose2d's forward, the same kernel) matches torch for
  strides 2-4, dilations, paddings, groups, layouts, 16-bit dtypes, split-K, images smaller
  than the stride, and 1x1 stride-2 layers whose tapless phases are zeros.
"""
import itertools

import pytest
import torch
import torch.nn.functional as F
import triton
import triton.language as tl

import fastconv.functional as FC
from fastconv.conv import plan as P
from fastconv.kernels._common import phase_taps
from helpers import assert_rel_close, aten_forbidden, interpreter_split_k

DGRAD = "conv2d_dgrad_igemm_kernel"


@triton.jit
def _phase_taps_kernel(args_ptr, out_ptr):
    i = tl.program_id(0)
    offset = tl.load(args_ptr + 4 * i)
    dil = tl.load(args_ptr + 4 * i + 1)
    stride = tl.load(args_ptr + 4 * i + 2)
    taps = tl.load(args_ptr + 4 * i + 3)
    first, step, count = phase_taps(offset, dil, stride, taps)
    tl.store(out_ptr + 3 * i, first)
    tl.store(out_ptr + 3 * i + 1, step)
    tl.store(out_ptr + 3 * i + 2, count)


def test_phase_taps_finds_exactly_the_aligned_taps():
    cases = list(itertools.product(range(0, 7), (1, 2, 3, 4), (1, 2, 3, 4), (1, 2, 3, 5, 7)))
    args = torch.tensor(cases, dtype=torch.int32)
    out = torch.zeros(len(cases), 3, dtype=torch.int32)
    _phase_taps_kernel[(len(cases),)](args, out)
    for (offset, dil, stride, taps), (first, step, count) in zip(cases, out.tolist()):
        expected = [r for r in range(taps) if (offset - r * dil) % stride == 0]
        got = [first + t * step for t in range(count)]
        assert got == expected, (offset, dil, stride, taps, first, step, count)


def test_the_plan_counts_steps_and_programs_by_phase():
    pb = P.ConvProblem(N=2, C=64, H=14, W=14, K=64, P=7, Q=7, R=3, S=3, groups=1,
                       dtype=torch.float16, stride=(2, 2), padding=(1, 1))
    cfg = P.TileConfig(64, 64, 32, 4, 3)
    assert P.dgrad_phases(pb) == (4, 2 * 7 * 7, 4)
    assert P.reduction_steps("dgrad", "implicit_gemm", pb, cfg) == 4 * 2  # was 9 * 2
    assert P.pixel_tiles("dgrad", "implicit_gemm", pb, cfg) == 4 * 2 * 1
    unit = P.ConvProblem(N=2, C=64, H=14, W=14, K=64, P=14, Q=14, R=3, S=3, groups=1,
                         dtype=torch.float16, padding=(1, 1))
    assert P.dgrad_phases(unit) == (1, 2 * 14 * 14, 9)
    plan = P.plan_conv2d("dgrad", pb)
    assert plan.family == "implicit_gemm" and "by stride phase" in plan.reason


# (x shape, weight shape, stride, padding, dilation, groups)
CASES = [
    ((2, 16, 9, 8), (16, 16, 3, 3), (2, 2), (1, 1), (1, 1), 1),
    ((1, 32, 7, 6), (32, 16, 3, 3), (2, 1), (0, 2), (1, 2), 2),
    ((1, 16, 11, 9), (24, 16, 5, 5), (3, 2), (2, 1), (2, 1), 1),
    ((2, 16, 8, 7), (32, 16, 1, 1), (2, 2), (0, 0), (1, 1), 1),   # tapless phases: zeros
    ((1, 16, 13, 10), (16, 16, 3, 3), (4, 3), (1, 0), (3, 2), 1),
    ((1, 16, 2, 3), (16, 16, 1, 1), (3, 3), (0, 0), (1, 1), 1),   # fewer rows than the stride
]


@pytest.mark.parametrize("dtype,channels_last,split", [
    (torch.float32, False, 1), (torch.bfloat16, True, 1), (torch.float16, False, 2),
    (torch.float32, True, 3)], ids=["f32", "bf16-cl", "f16-split2", "f32-cl-split3"])
@pytest.mark.parametrize("case", CASES, ids=[str(c[2:]) for c in CASES])
def test_input_gradient_by_phase_matches_torch(case, dtype, channels_last, split,
                                               kernel_launches):
    x_shape, w_shape, stride, padding, dilation, groups = case
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(x_shape).to(dtype=dtype, memory_format=fmt).requires_grad_()
    w = torch.randn(w_shape).to(dtype=dtype, memory_format=fmt)
    with aten_forbidden(), interpreter_split_k(split):
        y = FC.conv2d(x, w, None, stride, padding, dilation, groups)
        gy = torch.randn(y.shape).to(dtype=dtype, memory_format=fmt)
        gx, = torch.autograd.grad(y, x, gy)
    xd = x.detach().double().requires_grad_()
    ref = F.conv2d(xd, w.double(), None, stride, padding, dilation, groups)
    ref_gx, = torch.autograd.grad(ref, xd, gy.double())
    assert_rel_close(gx, ref_gx, dtype, "grad input")
    dgrad = [(grid, meta) for name, grid, meta in kernel_launches if name == DGRAD]
    assert len(dgrad) == 1, [name for name, _, _ in kernel_launches]
    grid, meta = dgrad[0]
    phases = stride[0] * stride[1]
    rows = x_shape[0] * -(-x_shape[2] // stride[0]) * -(-x_shape[3] // stride[1])
    cg = x_shape[1] // groups
    assert grid[0] == phases * groups * -(-rows // meta["BLOCK_M"]) * -(-cg // meta["BLOCK_N"])
    assert (len(grid) > 1) == (split > 1)


def test_conv_transpose2d_forward_runs_by_phase(kernel_launches):
    torch.manual_seed(0)
    x = torch.randn(2, 16, 5, 4)
    w = torch.randn(16, 8, 3, 3)
    with aten_forbidden():
        y = FC.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1)
    assert_rel_close(y, F.conv_transpose2d(x.double(), w.double(), stride=2, padding=1,
                                           output_padding=1), torch.float32, "output")
    assert [name for name, _, _ in kernel_launches] == [DGRAD]
