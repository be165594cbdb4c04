"""Bad input to fastconv.functional.conv2d, and the edge cases torch accepts.

Every call torch rejects is rejected too, with a ValueError/TypeError/RuntimeError that names the
argument, before any kernel launch (the launchers are replaced by functions that fail the test).
Edge cases torch accepts (empty batch, zero channels, 'same' with even kernels, unbatched input,
1x1 outputs, channels_last weight) run on fastconv's kernels -- ATen's convolution is overridden
to raise meanwhile -- and match torch on float64. Nothing the caller passed is modified.
"""
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from fastconv.functional import conv2d
from helpers import assert_rel_close, aten_forbidden, bad, ints, t

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ACCEPTED_ERRORS = (ValueError, TypeError, RuntimeError)


def test_launch_guard_catches_a_launch(no_launch):
    # proves the fixture patches the launchers the ops really call, so a pass below means something
    with pytest.raises(pytest.fail.Exception, match="conv2d_fprop was called"):
        conv2d(torch.randn(1, 2, 3, 3), torch.randn(2, 2, 1, 1))


# ---------------------------------------------------------------------------- bad input
def _base():
    """A valid call: input [2, 4, 5, 5], weight [6, 4, 3, 3], bias [6], float32."""
    return dict(input=torch.randn(2, 4, 5, 5), weight=torch.randn(6, 4, 3, 3),
                bias=torch.randn(6))


BAD_INPUTS = [
    # ranks
    bad("input-2d", ValueError, ["input"], input=t(4, 5)),
    bad("input-5d", ValueError, ["input"], input=t(1, 2, 4, 5, 5)),
    bad("weight-3d", ValueError, ["weight"], weight=t(6, 4, 3)),
    bad("weight-5d", ValueError, ["weight"], weight=t(6, 4, 3, 3, 1)),
    # channels and groups
    bad("channels-mismatch", ValueError, ["input", "weight"], weight=t(6, 3, 3, 3)),
    bad("groups-not-dividing-in-channels", ValueError, ["input", "groups"],
        input=t(2, 3, 5, 5), weight=t(6, 1, 3, 3), groups=2),
    bad("groups-not-dividing-out-channels", ValueError, ["groups", "weight"],
        input=t(2, 4, 5, 5), weight=t(5, 2, 3, 3), bias=t(5), groups=2),
    bad("groups-more-than-out-channels", ValueError, ["groups", "weight"],
        input=t(2, 4, 5, 5), weight=t(2, 1, 3, 3), bias=t(2), groups=4),
    bad("zero-out-channels", ValueError, ["groups", "weight"], weight=t(0, 4, 3, 3), bias=None),
    bad("groups-0", ValueError, ["groups"], groups=0),
    bad("groups-negative", ValueError, ["groups"], groups=-2),
    bad("groups-float", TypeError, ["groups"], groups=1.0),
    bad("groups-str", TypeError, ["groups"], groups="1"),
    bad("groups-bool", TypeError, ["groups"], groups=True),
    # stride / padding / dilation values
    bad("stride-0", ValueError, ["stride"], stride=0),
    bad("stride-negative", ValueError, ["stride"], stride=(1, -1)),
    bad("dilation-0", ValueError, ["dilation"], dilation=0),
    bad("dilation-negative", ValueError, ["dilation"], dilation=(-1, 1)),
    bad("stride-len-3", ValueError, ["stride"], stride=(1, 1, 1)),
    bad("stride-empty", ValueError, ["stride"], stride=()),
    bad("padding-len-3", ValueError, ["padding"], padding=(1, 1, 1)),
    bad("dilation-len-3", ValueError, ["dilation"], dilation=[1, 1, 1]),
    bad("stride-float", TypeError, ["stride"], stride=1.5),
    bad("stride-tuple-with-float", TypeError, ["stride"], stride=(1, 2.0)),
    bad("stride-str", TypeError, ["stride"], stride="1"),
    bad("dilation-float", TypeError, ["dilation"], dilation=2.0),
    bad("padding-float", TypeError, ["padding"], padding=1.0),
    bad("padding-negative", ValueError, ["padding"], padding=-1),
    bad("padding-negative-pair", ValueError, ["padding"], padding=(0, -1)),
    bad("padding-unknown-string", ValueError, ["padding"], padding="full"),
    bad("padding-uppercase-SAME", ValueError, ["padding"], padding="SAME"),
    bad("padding-same-stride-2", ValueError, ["padding", "stride"], padding="same", stride=2),
    bad("padding-same-stride-1x2", ValueError, ["padding", "stride"], padding="same",
        stride=(1, 2)),
    # dtypes
    bad("dtype-weight-float64", TypeError, ["weight", "input"],
        weight=t(6, 4, 3, 3, dtype=torch.float64)),
    bad("dtype-bias-float64", TypeError, ["bias", "input"], bias=t(6, dtype=torch.float64)),
    bad("dtype-input-float16", TypeError, ["weight", "input"],
        input=t(2, 4, 5, 5, dtype=torch.float16)),
    bad("dtype-bias-bfloat16", TypeError, ["bias"], bias=t(6, dtype=torch.bfloat16)),
    bad("int-input", TypeError, ["input"], input=ints(2, 4, 5, 5)),
    bad("int-weight", TypeError, ["weight"], weight=ints(6, 4, 3, 3)),
    bad("bool-input", TypeError, ["input"], input=lambda: torch.ones(2, 4, 5, 5, dtype=torch.bool)),
    # torch convolves int64 (and complex) tensors on the CPU; fastconv's kernels are for
    # floating point only, so it refuses them outright (DESIGN.md: dtypes)
    bad("int64-everything", TypeError, ["input"], torch_rejects=False,
        input=ints(2, 4, 5, 5), weight=ints(6, 4, 3, 3), bias=ints(6)),
    bad("int64-no-bias", TypeError, ["input"], torch_rejects=False,
        input=ints(2, 4, 5, 5), weight=ints(6, 4, 3, 3), bias=None),
    bad("complex64", TypeError, ["input"], torch_rejects=False,
        input=t(2, 4, 5, 5, dtype=torch.complex64), weight=t(6, 4, 3, 3, dtype=torch.complex64),
        bias=None),
    # devices: the meta device stands in for a second device on a CPU-only machine. torch runs a
    # cpu/meta mixture as a meta computation; fastconv's kernels can't, so it refuses
    bad("device-weight-meta", RuntimeError, ["weight", "input", "device"], torch_rejects=False,
        weight=t(6, 4, 3, 3, device="meta")),
    bad("device-bias-meta", RuntimeError, ["bias", "input", "device"], torch_rejects=False,
        bias=t(6, device="meta")),
    bad("device-input-meta", RuntimeError, ["weight", "input", "device"], torch_rejects=False,
        input=t(2, 4, 5, 5, device="meta")),
    # bias shape and type
    bad("bias-wrong-length", ValueError, ["bias"], bias=t(5)),
    bad("bias-2d", ValueError, ["bias"], bias=t(6, 1)),
    bad("bias-0d", ValueError, ["bias"], bias=lambda: torch.tensor(1.0)),
    bad("bias-list", TypeError, ["bias"], bias=[0.0] * 6),
    # not tensors
    bad("input-list", TypeError, ["input"], input=lambda: torch.randn(2, 4, 5, 5).tolist()),
    bad("input-ndarray", TypeError, ["input"], input=lambda: torch.randn(2, 4, 5, 5).numpy()),
    bad("input-none", TypeError, ["input"], input=None),
    bad("weight-list", TypeError, ["weight"], weight=lambda: torch.randn(6, 4, 3, 3).tolist()),
    # kernel vs (padded) input size
    bad("kernel-larger-than-input", ValueError, ["input", "weight"], input=t(2, 4, 2, 5)),
    bad("kernel-larger-than-padded-input-W", ValueError, ["input", "weight", "padding"],
        input=t(2, 4, 5, 1), padding=(1, 0)),
    bad("kernel-larger-through-dilation", ValueError, ["input", "dilation"], dilation=(1, 3)),
    bad("kernel-zero-size", ValueError, ["weight"], weight=t(6, 4, 0, 3)),
    bad("input-H-0", ValueError, ["input", "weight"], input=t(2, 4, 0, 5)),
    bad("input-H-0-padding-same", ValueError, ["input", "weight"], input=t(2, 4, 0, 5),
        padding="same"),
    # torch convolves an empty batch or zero channels, never an empty image, even a padded one
    bad("input-H-0-padded", ValueError, ["input"], input=t(2, 4, 0, 5), weight=t(6, 4, 1, 1),
        padding=1),
    bad("input-W-0-padded", ValueError, ["input"], input=t(1, 4, 3, 0), weight=t(6, 4, 1, 1),
        padding=1),
    bad("unbatched-input-H-0-padded", ValueError, ["input"], input=t(4, 0, 3),
        weight=t(6, 4, 1, 1), padding=1),
]


@pytest.mark.parametrize("overrides, exc, names, torch_rejects", BAD_INPUTS)
def test_bad_input_is_refused_before_launch(no_launch, overrides, exc, names, torch_rejects):
    kwargs = _base()
    kwargs.update({k: v() if callable(v) else v for k, v in overrides.items()})

    with aten_forbidden(), pytest.raises(ACCEPTED_ERRORS) as info:
        conv2d(**kwargs)
    assert info.type is exc, f"raised {info.type.__name__}, expected {exc.__name__}: {info.value}"
    message = str(info.value)
    for name in names:
        assert name in message, f"the message does not name {name!r}: {message}"

    if torch_rejects:  # fastconv must not refuse what torch accepts
        with pytest.raises(ACCEPTED_ERRORS):
            F.conv2d(**kwargs)


# ---------------------------------------------------------------------------- what torch accepts
def _leaves(*tensors, dtype=torch.float32):
    return [None if x is None else x.detach().to(dtype).requires_grad_() for x in tensors]


def run_both(x, w, b, grad_seed=1, **conv):
    """fastconv in float32 (ATen's convolution forbidden) and torch in float64 on the same
    values, forward and backward; returns ((y, grads), (y_ref, grads_ref))."""
    leaves = _leaves(x, w, b)
    with aten_forbidden():
        y = conv2d(*leaves, **conv)
    grad_y = torch.randn(y.shape, generator=torch.Generator().manual_seed(grad_seed))
    with aten_forbidden():
        y.backward(grad_y)

    refs = _leaves(x, w, b, dtype=torch.float64)
    y_ref = F.conv2d(*refs, **conv)
    y_ref.backward(grad_y.double())
    grads = [None if t is None else t.grad for t in leaves]
    grads_ref = [None if t is None else t.grad for t in refs]
    return (y, grads), (y_ref, grads_ref)


def assert_matches(got, want, what):
    (y, grads), (y_ref, grads_ref) = got, want
    assert_rel_close(y, y_ref, torch.float32, f"{what}: output")
    for name, g, g_ref in zip(("input", "weight", "bias"), grads, grads_ref):
        if g_ref is not None:
            assert g is not None, f"{what}: no gradient for {name}"
            assert_rel_close(g, g_ref, torch.float32, f"{what}: grad {name}")


def test_empty_batch_forward_and_backward():
    x, w, b = torch.randn(0, 2, 4, 5), torch.randn(3, 2, 3, 3), torch.randn(3)
    got, want = run_both(x, w, b, padding=1)
    assert got[0].shape == (0, 3, 4, 5)
    assert_matches(got, want, "N=0")
    assert torch.equal(got[1][1], torch.zeros(3, 2, 3, 3)), "grad weight of an empty batch"


@pytest.mark.parametrize("activation", ["silu", "gelu", "relu", None])
def test_fused_epilogue_on_an_empty_batch(activation):
    # silu/gelu keep the pre-activation for their backward, and an empty one used to be taken
    # for a missing one: RuntimeError "needs keep_preactivation=True" in the forward
    n, c_out = 0, 3
    x = torch.randn(n, 2, 4, 5, requires_grad=True)
    w = torch.randn(c_out, 2, 3, 3, requires_grad=True)
    residual = torch.randn(n, c_out, 4, 5, requires_grad=True)
    with aten_forbidden():
        y = conv2d(x, w, None, padding=1, activation=activation, residual=residual)
        y.backward(torch.ones_like(y))
    assert y.shape == (n, c_out, 4, 5)
    assert x.grad.shape == x.shape and torch.equal(w.grad, torch.zeros_like(w))
    assert residual.grad.shape == residual.shape


@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no-bias"])
def test_zero_input_channels_give_the_bias(with_bias):
    # The sum over zero channels is 0, so the output is the bias broadcast over [N, 6, P, Q].
    # (torch itself returns a [N, 0, P, Q] tensor here, on CPU and for meta tensors alike, so
    # the reference is written out instead of asking torch.)
    x, w = torch.randn(2, 0, 5, 4), torch.randn(6, 0, 3, 3)
    b = torch.randn(6) if with_bias else None
    x, w, b = _leaves(x, w, b)
    with aten_forbidden():
        y = conv2d(x, w, b, padding=(1, 0))
        grad_y = torch.randn_like(y)
        y.backward(grad_y)
    want = (b.detach() if with_bias else torch.zeros(6)).view(1, 6, 1, 1).expand(2, 6, 5, 2)
    assert y.shape == (2, 6, 5, 2)
    assert torch.equal(y, want)
    assert x.grad.shape == x.shape and w.grad.shape == w.shape
    if with_bias:
        assert_rel_close(b.grad, grad_y.double().sum((0, 2, 3)), torch.float32, "grad bias")


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
@pytest.mark.parametrize("kernel, dilation, padding", [
    ((2, 4), (1, 3), "same"),   # totals 1 and 9: the extra row/column goes after the input
    ((4, 2), (2, 1), "same"),   # totals 6 and 1
    ((3, 3), (2, 2), "same"),   # symmetric
    ((2, 3), (1, 2), "valid"),
], ids=["same-2x4-dil1x3", "same-4x2-dil2x1", "same-3x3-dil2", "valid-2x3-dil1x2"])
def test_padding_strings(kernel, dilation, padding):
    x, w, b = torch.randn(1, 2, 5, 7), torch.randn(2, 2, *kernel), torch.randn(2)
    got, want = run_both(x, w, b, padding=padding, dilation=dilation)
    if padding == "same":
        assert got[0].shape[2:] == x.shape[2:]
    assert_matches(got, want, f"padding={padding!r}")


def test_valid_padding_with_stride():
    x, w = torch.randn(1, 2, 5, 6), torch.randn(2, 2, 3, 2)
    assert_matches(*run_both(x, w, None, padding="valid", stride=2), "valid, stride 2")


def test_one_element_stride_list():
    x, w, b = torch.randn(1, 2, 5, 6), torch.randn(2, 2, 3, 3), torch.randn(2)
    got, want = run_both(x, w, b, stride=[2], padding=[1], dilation=[1])
    assert got[0].shape == (1, 2, 3, 3)
    assert_matches(got, want, "stride=[2]")


@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no-bias"])
def test_unbatched_input(with_bias):
    x, w = torch.randn(2, 4, 5), torch.randn(3, 2, 3, 3)
    b = torch.randn(3) if with_bias else None
    got, want = run_both(x, w, b, padding=1)
    assert got[0].shape == (3, 4, 5)
    assert got[1][0].shape == x.shape
    assert_matches(got, want, "unbatched")


@pytest.mark.parametrize("input_hw, kernel, padding, dilation", [
    ((2, 3), (4, 3), (1, 0), 1),
    ((5, 3), (3, 2), 0, 2),
], ids=["padded", "dilated"])
def test_kernel_as_large_as_the_padded_input(input_hw, kernel, padding, dilation):
    x, w, b = torch.randn(2, 2, *input_hw), torch.randn(2, 2, *kernel), torch.randn(2)
    got, want = run_both(x, w, b, padding=padding, dilation=dilation)
    assert got[0].shape == (2, 2, 1, 1)
    assert_matches(got, want, "1x1 output")


def test_channels_last_weight_with_nchw_input():
    x = torch.randn(2, 2, 4, 5)
    w = torch.randn(3, 2, 3, 3).contiguous(memory_format=torch.channels_last)
    b = torch.randn(3)
    got, want = run_both(x, w, b, padding=1)
    cl = torch.channels_last
    assert got[0].is_contiguous(memory_format=cl) == want[0].is_contiguous(memory_format=cl), (
        f"output strides {got[0].stride()}, torch's {want[0].stride()}")
    assert_matches(got, want, "channels_last weight")


# ---------------------------------------------------------------------------- inputs untouched
def _contiguous():
    return torch.randn(2, 2, 4, 5), torch.randn(3, 2, 3, 3), torch.randn(3)


def _channels_last():
    cl = torch.channels_last
    return (torch.randn(2, 2, 4, 5).contiguous(memory_format=cl),
            torch.randn(3, 2, 3, 3).contiguous(memory_format=cl), torch.randn(3))


def _sliced():
    return (torch.randn(2, 4, 6, 5)[:, ::2, 1:-1],   # channel- and row-sliced view
            torch.randn(3, 2, 3, 5)[..., 1:4],        # column-sliced weight
            torch.randn(6)[::2])                      # strided bias


def _sliced_channels_last():
    x = torch.randn(2, 2, 6, 10).contiguous(memory_format=torch.channels_last)
    return x[:, :, 1:-1, ::2], torch.randn(3, 2, 3, 3), torch.randn(3)


@pytest.mark.parametrize("make", [_contiguous, _channels_last, _sliced, _sliced_channels_last],
                         ids=["contiguous", "channels_last", "sliced", "sliced-channels_last"])
def test_arguments_are_not_modified(make):
    x, w, b = (t.requires_grad_() for t in make())
    before = [(t.detach().clone(), t.stride(), t.storage_offset(), t.data_ptr()) for t in (x, w, b)]
    with aten_forbidden():
        y = conv2d(x, w, b, padding=1, stride=(1, 2))
        grad_y = torch.randn_like(y)
        y.backward(grad_y)
    for name, t, (values, stride, offset, ptr) in zip(("input", "weight", "bias"), (x, w, b),
                                                     before):
        assert torch.equal(t.detach(), values), f"{name} values changed"
        assert (t.stride(), t.storage_offset(), t.data_ptr()) == (stride, offset, ptr), (
            f"{name} strides/storage changed")

    refs = _leaves(x, w, b, dtype=torch.float64)
    y_ref = F.conv2d(*refs, padding=1, stride=(1, 2))
    y_ref.backward(grad_y.double())
    for name, g, g_ref in zip(("input", "weight", "bias"), (x.grad, w.grad, b.grad), refs):
        assert_rel_close(g, g_ref.grad, torch.float32, f"{make.__name__}: grad {name}")
    assert_rel_close(y, y_ref, torch.float32, f"{make.__name__}: output")


def test_strided_bias():
    """A bias view with a stride (b[::2]) is read element by element, not as b_ptr + k."""
    x, w, b = torch.randn(1, 2, 3, 3), torch.randn(3, 2, 1, 1), torch.randn(6)[::2]
    with aten_forbidden():
        y = conv2d(x, w, b)
    assert_rel_close(y, F.conv2d(x.double(), w.double(), b.double()), torch.float32, "output")


# ---------------------------------------------------------------------------- CPU, no interpreter
def test_cpu_tensors_without_interpreter_are_refused():
    script = textwrap.dedent("""
        import torch
        import fastconv.ops
        from fastconv.functional import conv2d
        from fastconv.conv import launch as conv2d_launch

        assert not fastconv.ops.INTERPRETING

        def launched(*args, **kwargs):
            raise SystemExit("a launcher was called")

        conv2d_launch.conv2d_fprop = conv2d_launch.conv2d_dgrad = launched
        conv2d_launch.conv2d_wgrad = launched
        try:
            conv2d(torch.randn(1, 2, 4, 4), torch.randn(3, 2, 3, 3), torch.randn(3))
        except RuntimeError as e:
            print(e)
        else:
            raise SystemExit("no error")
    """)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "TRITON_INTERPRET=1" in proc.stdout, proc.stdout
