"""Split-K of the forward and input-gradient GEMMs (implicit GEMM and 1x1): the split kernels and
their reduction against torch, and the plan that decides when to split.

Under the interpreter the plan never splits fprop or dgrad by itself (fewer programs run faster
there), so the kernel tests force a split with ``helpers.interpreter_split_k`` and record the
launches to prove that the split GEMM and the reduction ran. The plan tests ask for GPU plans
of real layers without a GPU (``planning_for("sm_90")``; nothing is launched).
"""
import pytest
import torch
import torch.nn.functional as F

from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv.functional as FC
from fastconv.functional.explain import explain
from fastconv.kernels.configs import SPLIT_REDUCE_CONFIG
from fastconv.conv import autotune
from fastconv.conv import launch as conv2d_launch
from fastconv.conv import plan as P
from fastconv.conv.plan import ConvProblem, plan_conv2d
from fastconv.ops.target import planning_for

from helpers import LaunchView, assert_rel_close, aten_forbidden, interpreter_split_k

REDUCE = "conv2d_split_reduce_kernel"
ACTS = {None: lambda z: z, "relu": F.relu, "relu6": F.relu6, "silu": F.silu, "gelu": F.gelu}


@pytest.fixture
def launches(kernel_launches):
    """(kernel name, grid) of every launch started while the test runs, in order."""
    return LaunchView(kernel_launches, lambda launch: launch[:2])


def _split_launches(ran, kernel):
    """The splits of the launches of ``kernel`` that ran split (grid axis 1)."""
    return [grid[1] for name, grid in ran if name == kernel and len(grid) > 1]


# ------------------------------------------------------------------------ the kernels, forced
# (id, N, C, H, W, K, R, S, stride, padding, groups, dtype, channels_last, bias, residual,
#  activation, split). Under the interpreter the reduction block is one tap's channels
# (implicit GEMM: R*S steps) or all of them up to 128 (1x1: C=160 takes 2 steps), so:
# 9 steps in 4 splits run 3+3+3+0 (an empty range), in 2 splits 5+4, in 20 splits 11 are empty.
FPROP_CASES = [
    ("igemm-f32-nchw-bias-gelu-uneven-empty", 1, 32, 5, 7, 24, 3, 3, 1, 1, 1, torch.float32,
     False, True, False, "gelu", 4),
    ("igemm-f16-cl-groups-residual-relu", 1, 32, 6, 5, 40, 3, 3, 2, 1, 2, torch.float16,
     True, True, True, "relu", 2),
    ("igemm-bf16-cl-silu-preact", 2, 16, 5, 5, 16, 3, 3, 1, 1, 1, torch.bfloat16,
     True, False, True, "silu", 3),
    ("igemm-f64-nchw-residual-split-past-steps", 1, 16, 4, 6, 20, 3, 3, 1, 1, 1,
     torch.float64, False, True, True, None, 20),
    ("1x1-bf16-cl-residual-relu6", 1, 160, 5, 6, 24, 1, 1, 1, 0, 1, torch.bfloat16,
     True, True, True, "relu6", 3),
    ("1x1-f16-nchw-groups-gelu", 1, 64, 3, 7, 48, 1, 1, 1, 0, 2, torch.float16,
     False, False, False, "gelu", 2),
    ("1x1-f64-cl-bias", 2, 160, 3, 3, 17, 1, 1, 1, 0, 1, torch.float64,
     True, True, False, None, 2),
]


@pytest.mark.parametrize("case", [pytest.param(c[1:], id=c[0]) for c in FPROP_CASES])
def test_split_forward_and_input_gradient_match_torch(case, launches):
    n, c, h, w, k, r, s, stride, pad, groups, dtype, cl, with_bias, with_res, act, split = case
    fmt = torch.channels_last if cl else torch.contiguous_format
    x = torch.randn(n, c, h, w).to(dtype).contiguous(memory_format=fmt)
    wt = (torch.randn(k, c // groups, r, s) / (c // groups * r * s) ** 0.5).to(dtype)
    b = torch.randn(k).to(dtype) if with_bias else None
    out_hw = ((h + 2 * pad - r) // stride + 1, (w + 2 * pad - s) // stride + 1)
    res = torch.randn(n, k, *out_hw).to(dtype).contiguous(memory_format=fmt) if with_res else None
    leaves = [t.clone().requires_grad_() if t is not None else None for t in (x, wt, b, res)]
    family = "gemm_1x1" if r == 1 else "implicit_gemm"
    with interpreter_split_k(split):
        plans = explain(x, wt, stride, pad, 1, groups)
        assert (plans.fprop.family, plans.fprop.split) == (family, split)
        assert (plans.dgrad.family, plans.dgrad.split) == (family, split)
        assert f"split-K {split}" in plans.fprop.reason
        with aten_forbidden():
            y = FC.conv2d(leaves[0], leaves[1], leaves[2], stride, pad, 1, groups,
                          activation=act, residual=leaves[3])
            grad = torch.randn(y.shape).to(dtype)
            y.backward(grad)

    gemm = "conv2d_1x1_gemm_kernel" if r == 1 else None
    if gemm is None:
        assert _split_launches(launches, "conv2d_fprop_igemm_kernel") == [split]
        assert _split_launches(launches, "conv2d_dgrad_igemm_kernel") == [split]
    else:  # one kernel for both directions
        assert _split_launches(launches, gemm) == [split, split]
    assert sum(name == REDUCE for name, _ in launches) == 2  # forward and input gradient
    for i, (name, _) in enumerate(launches):  # each reduction right after its split GEMM
        if name == REDUCE:
            assert launches[i - 1][0] != REDUCE and len(launches[i - 1][1]) == 2

    refs = [t.double().requires_grad_() if t is not None else None for t in (x, wt, b, res)]
    z = F.conv2d(refs[0], refs[1], refs[2], stride, pad, 1, groups)
    y_ref = ACTS[act](z + refs[3] if with_res else z)
    y_ref.backward(grad.double())
    assert y.is_contiguous(memory_format=fmt)
    assert_rel_close(y, y_ref, dtype, "output")
    for name, leaf, ref in zip(("input", "weight", "bias", "residual"), leaves, refs):
        if leaf is not None:
            assert_rel_close(leaf.grad, ref.grad, dtype, f"grad {name}")


@pytest.mark.parametrize("dtype,cl,split", [(torch.float32, True, 3), (torch.float16, False, 7)])
def test_split_conv_transpose2d_forward(dtype, cl, split, launches):
    """conv_transpose2d's forward is the dgrad kernel: split, with groups, stride and
    output_padding (rows of the output no tap reaches must still be written, as zeros)."""
    fmt = torch.channels_last if cl else torch.contiguous_format
    x = torch.randn(1, 32, 4, 5).to(dtype).contiguous(memory_format=fmt)
    wt = (torch.randn(32, 12, 3, 3) / 12).to(dtype)
    b = torch.randn(24).to(dtype)
    with interpreter_split_k(split), aten_forbidden():
        y = FC.conv_transpose2d(x, wt, b, stride=2, padding=1, output_padding=1, groups=2)
    assert _split_launches(launches, "conv2d_dgrad_igemm_kernel") == [split]
    assert [name for name, _ in launches][-1] == REDUCE
    ref = F.conv_transpose2d(x.double(), wt.double(), b.double(), stride=2, padding=1,
                             output_padding=1, groups=2)
    assert_rel_close(y, ref, dtype, "conv_transpose2d")


@settings(max_examples=10)
@given(n=st.integers(1, 2), cg=st.sampled_from([16, 24]), kg=st.sampled_from([16, 19]),
       groups=st.integers(1, 2), h=st.integers(1, 6), w=st.integers(1, 6),
       r=st.integers(1, 3), s=st.integers(1, 3), stride=st.integers(1, 2), pad=st.integers(0, 1),
       dilation=st.integers(1, 2), split=st.integers(2, 11), cl=st.booleans())
def test_split_random_shapes_float64(n, cg, kg, groups, h, w, r, s, stride, pad, dilation,
                                     split, cl):
    """Odd shapes, strides, padding and dilation, any split: forward and input gradient."""
    if h + 2 * pad < dilation * (r - 1) + 1 or w + 2 * pad < dilation * (s - 1) + 1:
        return  # no output pixel
    fmt = torch.channels_last if cl else torch.contiguous_format
    x = torch.randn(n, cg * groups, h, w, dtype=torch.float64).contiguous(memory_format=fmt)
    wt = torch.randn(kg * groups, cg, r, s, dtype=torch.float64)
    leaf = x.clone().requires_grad_()
    with interpreter_split_k(split), aten_forbidden():
        assert explain(x, wt, stride, pad, dilation, groups).fprop.split == split
        y = FC.conv2d(leaf, wt, None, stride, pad, dilation, groups)
        grad = torch.randn(y.shape, dtype=torch.float64)
        y.backward(grad)
    ref = x.clone().requires_grad_()
    y_ref = F.conv2d(ref, wt, None, stride, pad, dilation, groups)
    y_ref.backward(grad)
    assert_rel_close(y, y_ref, torch.float64, "output")
    assert_rel_close(leaf.grad, ref.grad, torch.float64, "grad input")


def test_split_results_are_bitwise_reproducible(launches):
    x = torch.randn(1, 48, 6, 6)
    wt = torch.randn(40, 48, 3, 3) / 20
    b = torch.randn(40)
    with interpreter_split_k(4), aten_forbidden():
        first = FC.conv2d(x, wt, b, padding=1)
        second = FC.conv2d(x, wt, b, padding=1)
        with interpreter_split_k(2):
            other = FC.conv2d(x, wt, b, padding=1)
    assert _split_launches(launches, "conv2d_fprop_igemm_kernel") == [4, 4, 2]
    assert torch.equal(first, second)
    # another split adds in another order: equal to rounding, not bitwise
    assert_rel_close(other, first.double(), torch.float32, "split 2 against split 4")


def test_the_interpreter_does_not_split_by_default():
    pb = _layer(1, 16, 8, 16, 3, torch.float32)
    assert plan_conv2d("fprop", pb).split == 1


def test_direct_and_wgrad_are_not_forced(launches):
    """The forced split is the fprop / dgrad GEMMs' only: the direct kernels have no reduction
    loop to split, and wgrad keeps its own split."""
    x = torch.randn(1, 6, 5, 5, requires_grad=True)
    wt = torch.randn(6, 1, 3, 3, requires_grad=True)
    with interpreter_split_k(4):
        plans = explain(x, wt, 1, 1, 1, 6)
        assert (plans.fprop.family, plans.fprop.split) == ("direct", 1)
        assert (plans.dgrad.split, plans.wgrad.split) == (1, 1)
        with aten_forbidden():
            FC.conv2d(x, wt, None, 1, 1, 1, 6).sum().backward()
    direct = [grid for name, grid in launches
              if name in ("conv2d_fprop_direct_kernel", "conv2d_dgrad_direct_kernel")]
    assert len(direct) == 2 and all(len(grid) == 1 for grid in direct)
    assert REDUCE not in [name for name, _ in launches]


# ------------------------------------------------------------------------ the GPU plan
def _layer(n, c, hw, k, r, dtype=torch.float16, stride=1, groups=1):
    pad = r // 2
    out = (hw + 2 * pad - r) // stride + 1
    return ConvProblem(n, c, hw, hw, k, out, out, r, r, groups, dtype, (stride, stride),
                       (pad, pad))


@pytest.fixture
def gpu_plan():
    """Plans as on an H100/H200 (132 SMs)."""
    with planning_for("sm_90"):
        yield lambda direction, pb: plan_conv2d(direction, pb)


def test_the_split_respects_its_limits(gpu_plan, monkeypatch):
    # a short reduction is not split: 16 channels, a 1x1 kernel, one block of them
    assert gpu_plan("fprop", _layer(1, 16, 7, 64, 1)).split == 1
    # the direct family has no reduction loop to split
    assert gpu_plan("fprop", _layer(1, 32, 7, 32, 3, groups=32)).split == 1
    # a GPU with very many SMs: the cap, and the workspace's 2**31 elements
    monkeypatch.setattr(P, "sm_count", lambda device: 10**7)
    assert gpu_plan("fprop", _layer(1, 4096, 7, 512, 3)).split == P.MAX_SPLIT_K
    for hw, most in ((2048, 1), (1024, 7)):  # 2**30 and 2**28 rows x columns
        pb = _layer(1, 1024, hw, 256, 1)
        plan = gpu_plan("fprop", pb)
        rows, cols, _ = P.gemm_dims("fprop", pb)
        steps = P.reduction_steps("fprop", plan.family, pb, plan.config)
        assert steps // P.MIN_SPLIT_STEPS > most  # only the workspace holds the split back
        assert plan.split == most and plan.split * rows * cols < 2**31 <= (most + 1) * rows * cols


def test_explain_shows_the_split(gpu_plan):
    x = torch.empty(1, 512, 7, 7, dtype=torch.float16, device="meta")
    wt = torch.empty(512, 512, 3, 3, dtype=torch.float16, device="meta")
    plans = explain(x, wt, padding=1)
    assert plans.fprop.split > 1 and plans.dgrad.split > 1
    text = str(plans)
    assert "fprop: implicit_gemm" in text and f"split {plans.fprop.split}" in text
    assert "split-K" in text


def test_split_launch_is_described_for_the_report(gpu_plan):
    """What the per-case report reads: the GEMM's grid (tiles, split), the workspace in the
    accumulator dtype and the reduction that follows it."""
    x = torch.empty(1, 512, 7, 7, dtype=torch.bfloat16, device="meta")
    wt = torch.empty(2048, 512, 1, 1, dtype=torch.bfloat16, device="meta")
    b = torch.empty(2048, dtype=torch.bfloat16, device="meta")
    y = torch.empty(1, 2048, 7, 7, dtype=torch.bfloat16, device="meta")
    plan, (launch, reduce) = conv2d_launch.conv2d_fprop(x, wt, b, y, (1, 1), (0, 0), (1, 1), 1)
    pb = conv2d_launch.conv_problem(x.shape, wt.shape, y.shape, 1, x.dtype)
    tiles = P.pixel_tiles("fprop", plan.family, pb, plan.config)
    assert plan.split > 1 and launch.grid == (tiles, plan.split)
    assert launch.programs == tiles * plan.split >= 132
    assert launch.meta["SPLIT_K"] and not launch.meta["HAS_BIAS"]  # the reduction adds it
    part = launch.arguments["part_ptr"]
    assert part.shape == (plan.split, 1, 49, 2048) and part.dtype == torch.float32
    assert launch.then is reduce and reduce.arguments["part_ptr"] is part
    assert reduce.kernel.fn.__name__ == REDUCE and reduce.meta["HAS_BIAS"]
    assert reduce.programs == 2 * 32  # 49 rows, 2048 channels in 32x64 tiles
    assert (reduce.meta["BLOCK_M"], reduce.meta["BLOCK_N"]) == \
        (SPLIT_REDUCE_CONFIG.block_m, SPLIT_REDUCE_CONFIG.block_n)
    # a batch-32 launch: one grid axis, no workspace, no reduction
    x32 = torch.empty(32, 512, 7, 7, dtype=torch.bfloat16, device="meta")
    y32 = torch.empty(32, 2048, 7, 7, dtype=torch.bfloat16, device="meta")
    _, (unsplit,) = conv2d_launch.conv2d_fprop(x32, wt, b, y32, (1, 1), (0, 0), (1, 1), 1)
    assert len(unsplit.grid) == 1 and unsplit.then is None and not unsplit.meta["SPLIT_K"]


def test_autotune_times_each_config_with_its_split(gpu_plan):
    pb = _layer(1, 512, 7, 512, 3)
    plan = gpu_plan("fprop", pb)
    options = autotune.candidates(plan, pb, None)
    assert [p.split for p in options] == [P.gemm_split("fprop", p.family, pb, p.config, None)
                                          for p in options]
    assert any(p.split > 1 for p in options)
