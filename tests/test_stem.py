"""The stem forward (kernels/conv2d_fprop_stem.py): convolutions over few input channels whose
reduction runs over the flattened (r, s, c) index, so that tl.dot steps span several taps.

The plan sends it forwards with fewer than 16 input channels, groups == 1 and R*S*C >= 16
(ResNet's 7x7/2 and MobileNet's 3x3/2 over RGB images); a 1x1 over 3 channels, depthwise and
thin-group convolutions stay on the direct kernels. Checked here in Triton's interpreter
against torch in float64, and compiled for sm_90 (the last test: 0 spills, tensor-core
instructions for 16-bit).
"""
import pytest
import torch
import torch.nn.functional as F

import fastconv
import fastconv.functional as FC
from fastconv.numerics import OP_TOLERANCE

from helpers import (DTYPES, LaunchView, assert_rel_close, aten_forbidden, compiled_rows,
                     interpreter_split_k, print_compiled_rows, rel_err)

STEM = "conv2d_fprop_stem_kernel"

# (id, N, C, H, W, K, (R, S), stride, padding, dilation)
CASES = [
    ("resnet-7x7s2", 1, 3, 19, 23, 16, (7, 7), 2, 3, 1),
    ("mobilenet-3x3s2", 2, 3, 19, 23, 16, (3, 3), 2, 1, 1),
    ("5x5-dil2", 1, 3, 13, 11, 8, (5, 5), 1, 4, 2),
    ("c1-5x5", 2, 1, 9, 10, 5, (5, 5), 1, 2, 1),
    ("c4-3x3", 1, 4, 8, 9, 24, (3, 3), 1, 1, 1),
    ("c8-3x3s2", 1, 8, 11, 7, 16, (3, 3), 2, 0, 1),
    ("c12-3x5", 1, 12, 7, 9, 20, (3, 5), 1, (1, 2), 1),
]


@pytest.fixture
def kernels_run(kernel_launches):
    """The names of the kernels launched while the test runs."""
    return LaunchView(kernel_launches, lambda launch: launch[0])


def _inputs(case, dtype, channels_last, bias=True):
    _, n, c, h, w, k, (r, s), *_ = case
    x = torch.randn(n, c, h, w, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    wt = torch.randn(k, c, r, s, dtype=dtype)
    b = torch.randn(k, dtype=dtype) if bias else None
    return x, wt, b


def _conv(case):
    return dict(stride=case[7], padding=case[8], dilation=case[9])


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_stem_forward_matches_torch(kernels_run, case, dtype, channels_last):
    x, w, b = _inputs(case, dtype, channels_last)
    with aten_forbidden():
        y = FC.conv2d(x, w, b, **_conv(case))
    assert list(kernels_run) == [STEM]
    ref = F.conv2d(x.double(), w.double(), b.double(), **_conv(case))
    assert_rel_close(y, ref, dtype, case[0])
    # written in the input's memory format, as torch does (one channel: both formats at once)
    if x.shape[1] > 1:
        assert y.is_contiguous(memory_format=torch.channels_last) == channels_last


def test_stem_forward_float64(kernels_run):
    case = CASES[0]
    x, w, b = _inputs(case, torch.float64, True)
    with aten_forbidden():
        y = FC.conv2d(x, w, b, **_conv(case))
    assert list(kernels_run) == [STEM]
    assert rel_err(y, F.conv2d(x, w, b, **_conv(case))) < OP_TOLERANCE[torch.float64]


@pytest.mark.parametrize("activation", ["relu", "silu", "gelu"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_stem_fused_activation_and_residual(kernels_run, activation, dtype):
    case = CASES[0]
    x, w, b = _inputs(case, dtype, True)
    ref = F.conv2d(x.double(), w.double(), b.double(), **_conv(case))
    res = torch.randn(ref.shape, dtype=dtype).contiguous(memory_format=torch.channels_last)
    with aten_forbidden():
        y = FC.conv2d(x, w, b, **_conv(case), activation=activation, residual=res)
    assert list(kernels_run) == [STEM]
    act = {"relu": F.relu, "silu": F.silu, "gelu": F.gelu}[activation]
    assert_rel_close(y, act(ref + res.double()), dtype, activation)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", [CASES[0], CASES[2]], ids=[CASES[0][0], CASES[2][0]])
def test_stem_backward_through_autograd(case, dtype):
    """The forward runs the stem kernel; autograd's input and weight gradients (the implicit
    GEMM kernels: 16 output channels) and the bias gradient stay right, activation included."""
    x, w, b = (t.requires_grad_() for t in _inputs(case, dtype, True))
    with aten_forbidden():
        y = FC.conv2d(x, w, b, **_conv(case), activation="silu")
        dy = torch.randn_like(y)
        gx, gw, gb = torch.autograd.grad(y, (x, w, b), dy)
    xd, wd, bd = (t.detach().double().requires_grad_() for t in (x, w, b))
    ref = F.silu(F.conv2d(xd, wd, bd, **_conv(case)))
    rx, rw, rb = torch.autograd.grad(ref, (xd, wd, bd), dy.double())
    assert_rel_close(y, ref, dtype, "y")
    for name, got, want in (("dx", gx, rx), ("dw", gw, rw), ("db", gb, rb)):
        assert_rel_close(got, want, dtype, name)


def test_stem_gradcheck_float64():
    x = torch.randn(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 2, 3, 3, dtype=torch.float64, requires_grad=True)  # 3*3*2 = 18 >= 16
    assert fastconv.explain(x, w, padding=1).fprop.family == "stem"
    assert torch.autograd.gradcheck(lambda x, w: FC.conv2d(x, w, padding=1), (x, w))


def test_stem_split_k_adds_its_ranges(kernels_run):
    """Split two ways (the interpreter's plan does not split unless told), the ranges of the
    flat (r, s, c) reduction go to the workspace and the reduction kernel runs the epilogue."""
    case = CASES[0]  # 147 = 3 steps of 64 in the interpreter: ranges of 2 steps and 1
    x, w, b = _inputs(case, torch.float32, True)
    with interpreter_split_k(2), aten_forbidden():
        y = FC.conv2d(x, w, b, **_conv(case), activation="relu")
    assert list(kernels_run) == [STEM, "conv2d_split_reduce_kernel"]
    ref = F.relu(F.conv2d(x.double(), w.double(), b.double(), **_conv(case)))
    assert_rel_close(y, ref, torch.float32, "split")


def test_stem_replays_from_the_call_cache(kernel_launches):
    from fastconv.ops.launch_cache import CACHES
    case = CASES[1]
    hits = sum(c.hits for c in CACHES)
    outs = []
    with aten_forbidden():
        for _ in range(3):
            x, w, b = _inputs(case, torch.float16, True)
            outs.append((FC.conv2d(x, w, b, **_conv(case)), x, w, b))
    assert [launch[0] for launch in kernel_launches] == [STEM] * 3
    assert sum(c.hits for c in CACHES) >= hits + 2
    for y, x, w, b in outs:  # each replay read its own tensors
        assert_rel_close(y, F.conv2d(x.double(), w.double(), b.double(), **_conv(case)),
                         torch.float16, "replay")


# (id, C, K, groups, (R, S), family of the forward)
ROUTES = [
    ("resnet-stem", 3, 64, 1, (7, 7), "stem"),
    ("mobilenet-stem", 3, 32, 1, (3, 3), "stem"),
    ("1x1-over-3", 3, 16, 1, (1, 1), "direct"),       # 3 < 16: nothing to pack
    ("c1-3x3", 1, 8, 1, (3, 3), "direct"),            # 9 < 16
    ("depthwise", 16, 16, 16, (3, 3), "direct"),
    ("thin-groups", 12, 24, 4, (3, 3), "direct"),
    ("16-channels", 16, 16, 1, (3, 3), "implicit_gemm"),
]


@pytest.mark.parametrize("route", ROUTES, ids=[r[0] for r in ROUTES])
def test_plan_sends_few_channel_forwards_to_the_stem(route):
    _, c, k, groups, (r, s), family = route
    x = torch.empty(32, c, 64, 64, dtype=torch.bfloat16, device="meta")
    w = torch.empty(k, c // groups, r, s, dtype=torch.bfloat16, device="meta")
    for target in ("interpreter", "sm_90", "sm_80"):
        plan = fastconv.explain(x, w, padding=r // 2, groups=groups, target=target).fprop
        assert plan.family == family, (target, plan.reason)
        if family == "stem":
            assert plan.kernel_name == STEM
            assert "(r, s, c)" in plan.reason and f"{r * s * c}" in plan.reason


def test_stem_beats_tma_for_8_channels_on_sm_90():
    """8 channels, 16-bit, channels_last: TMA could take it, but would fill an eighth of each
    64-channel step; the stem packs the taps."""
    x = torch.empty(32, 8, 64, 64, dtype=torch.bfloat16, device="meta").contiguous(
        memory_format=torch.channels_last)
    w = torch.empty(64, 8, 3, 3, dtype=torch.bfloat16, device="meta")
    assert fastconv.explain(x, w, padding=1, target="sm_90").fprop.family == "stem"


def test_direct_reason_names_the_window_when_the_stem_cannot_pack_it():
    x = torch.empty(2, 3, 8, 8, device="meta")
    w = torch.empty(16, 3, 1, 1, device="meta")
    reason = fastconv.explain(x, w).fprop.reason
    assert "1x1 taps x 3 = 3 < 16" in reason, reason


@pytest.mark.parametrize("case", [CASES[0], CASES[1]], ids=[CASES[0][0], CASES[1][0]])
def test_only_the_1x1_and_depthwise_neighbours_take_the_direct_kernel(kernels_run, case):
    """A stem, then a 1x1 over 3 channels and a depthwise conv in the same process: each
    launches its own family's kernel."""
    x, w, b = _inputs(case, torch.float32, True)
    with aten_forbidden():
        FC.conv2d(x, w, b, **_conv(case))
        FC.conv2d(x, torch.randn(8, x.shape[1], 1, 1))
        FC.conv2d(x, torch.randn(x.shape[1], 1, 3, 3), padding=1, groups=x.shape[1])
    assert list(kernels_run) == [STEM, "conv2d_fprop_direct_kernel",
                                 "conv2d_fprop_direct_kernel"]


# ------------------------------------------------------------------ sm_90 code generation
# The stems of the benchmark models at batch 32, as their launches specialise the kernel:
# (id, C, K, kernel, stride, padding, H)
COMPILE_CASES = [
    ("resnet50-conv1", 3, 64, 7, 2, 3, 224),
    ("mobilenet-v2-stem", 3, 32, 3, 2, 1, 224),
]
COMPILE_DTYPES = ("bfloat16", "float16", "float32")
COMPILE_LAYOUTS = ("channels_last", "nchw")


def _compile(job):
    """One JSON-able row: the sm_90 compile of one stem launch (fastconv's own compile report
    helpers, as tests/test_depthwise_compile.py uses them)."""
    from fastconv.bench import compile_report as CR
    from fastconv.conv import launch as L
    from fastconv.ops.target import planning_for

    index, dtype_name, layout, bias = job
    name, c, k, r, stride, pad, h = COMPILE_CASES[index]
    dtype = getattr(torch, dtype_name)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = torch.empty(32, c, h, h, dtype=dtype, device="meta").contiguous(memory_format=fmt)
    w = torch.empty(k, c, r, r, dtype=dtype, device="meta")
    p = (h + 2 * pad - r) // stride + 1
    y = torch.empty(32, k, p, p, dtype=dtype, device="meta").contiguous(memory_format=fmt)
    b = torch.empty(k, dtype=dtype, device="meta") if bias else None
    with planning_for("sm_90"):
        plan, launches = L.conv2d_fprop(x, w, b, y, (stride, stride), (pad, pad), (1, 1), 1)
    row = CR.compile_variant(CR.variant_of_launch(launches[0], direction="fprop",
                                                  family=plan.family, dtype=dtype), 90)
    cfg = plan.config
    return dict(case=name, dtype=dtype_name, layout=layout, bias=bias, family=plan.family,
                launches=len(launches), kernel=row["kernel"],
                tile=f"{cfg.block_m}x{cfg.block_n}x{cfg.block_k}/{cfg.num_warps}",
                registers=row["registers"], stack=row["stack"],
                tensor_cores=row["tensor_cores"], error=row["error"])


def _compile_jobs():
    return [(i, d, lay, bias) for i in range(len(COMPILE_CASES)) for d in COMPILE_DTYPES
            for lay in COMPILE_LAYOUTS for bias in (False, True)]


def main():
    print_compiled_rows(_compile, _compile_jobs())


@pytest.fixture(scope="module")
def compiled():
    return compiled_rows(__file__)


def test_stem_launches_compile_for_sm_90_on_the_tensor_cores_without_spills(compiled):
    assert len(compiled) == len(_compile_jobs())
    label = "{case} {dtype} {layout} bias={bias} {kernel} {tile}".format
    bad = [f"{label(**r)}: {r['error'] or str(r['stack']) + ' bytes of stack'}"
           for r in compiled if r["error"] or int(r["stack"]) > 0]
    assert not bad, "\n".join(bad)
    assert {(r["family"], r["kernel"], r["launches"]) for r in compiled} == {("stem", STEM, 1)}
    # 16-bit on wgmma (float32 too while cuDNN's TF32 switch is on, torch's default)
    no_mma = [label(**r) for r in compiled
              if r["dtype"] != "float32" and "wgmma" not in r["tensor_cores"]]
    assert not no_mma, "\n".join(no_mma)


if __name__ == "__main__":
    main()
