"""fastconv's ops under ``torch.autocast``: the casts, output dtypes and gradient dtypes of
torch's convolutions and torchvision's RoI ops.

The convolutions are lower-precision autocast ops (inputs cast to the autocast dtype, output in
it); the RoI ops run in float32 and return the input's dtype. CPU autocast runs the kernels in
the interpreter with ATen's convolution (and torchvision's RoI kernels) made to raise; CUDA
autocast is checked on fake CUDA tensors, which go through the same dispatcher keys without a
GPU. The references (torch / torchvision under the same autocast) run outside the forbidding.
"""
import contextlib
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

import fastconv
import fastconv.functional as FC
from fastconv.ops.autocast import DEVICE_TYPES, autocast_key
from helpers import TOL, aten_forbidden, assert_rel_close, rel_err

LOW = [torch.bfloat16, torch.float16]
TV_ROI_OPS = ("roi_align", "_roi_align_backward", "roi_pool", "_roi_pool_backward")
FASTCONV_OPS = ("conv2d", "conv2d_activation", "conv2d_input_grad", "conv2d_weight_grad",
                "conv_transpose2d", "conv_transpose2d_input_grad", "roi_align",
                "roi_align_backward", "roi_pool", "roi_pool_backward")


@contextlib.contextmanager
def fastconv_only():
    with aten_forbidden(), aten_forbidden(ops=TV_ROI_OPS, namespace="torchvision"):
        yield


class OpDtypes(TorchDispatchMode):
    """Records the dtypes of the tensor arguments of every fastconv op that runs."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "fastconv":
            self.calls.append((func._opname, [a.dtype for a in args if torch.is_tensor(a)]))
        return func(*args, **(kwargs or {}))


def _leaves(*tensors):
    return [t.clone().requires_grad_() for t in tensors]


# ---------------------------------------------------------------------------- convolutions
CONVS = {
    # name: (fastconv function, torch function, input shape, weight shape, kwargs)
    "conv2d": (FC.conv2d, F.conv2d, (2, 5, 7, 6), (6, 5, 3, 3), dict(padding=1, stride=(2, 1))),
    "conv2d_grouped": (FC.conv2d, F.conv2d, (1, 4, 5, 7), (6, 2, 3, 2), dict(groups=2)),
    "conv1d": (FC.conv1d, F.conv1d, (2, 3, 11), (5, 3, 3), dict(padding="same")),
    "conv_transpose2d": (FC.conv_transpose2d, F.conv_transpose2d, (1, 4, 5, 3), (4, 3, 3, 2),
                         dict(stride=2, output_padding=1)),
}


@pytest.mark.parametrize("dtype", LOW, ids=str)
@pytest.mark.parametrize("name", CONVS)
def test_convolution_casts_like_torch(name, dtype):
    fc_fn, torch_fn, x_shape, w_shape, kw = CONVS[name]
    x, w = torch.randn(x_shape), torch.randn(w_shape)
    b = torch.randn(w_shape[1] * kw.get("groups", 1) if "transpose" in name else w_shape[0])
    grad = torch.randn_like(torch_fn(x, w, b, **kw))

    def run(fn):
        xs = _leaves(x, w, b)
        with torch.autocast("cpu", dtype=dtype):
            out = fn(*xs, **kw)
        out.backward(grad.to(out.dtype))
        return out, [t.grad for t in xs]

    ref, ref_grads = run(torch_fn)
    with fastconv_only():
        out, grads = run(fc_fn)

    assert out.dtype == ref.dtype == dtype
    # the values: torch's operation on the inputs rounded to the autocast dtype, in float64
    want = torch_fn(*(t.to(dtype).double() for t in (x, w, b)), **kw)
    assert_rel_close(out, want, dtype, f"{name} output")
    xs64 = [t.to(dtype).double().requires_grad_() for t in (x, w, b)]
    torch_fn(*xs64, **kw).backward(grad.to(dtype).double())
    for what, g, g_ref, g64 in zip(("input", "weight", "bias"), grads, ref_grads, xs64):
        # gradients of float32 leaves come back through the casts in float32, as torch's
        assert g.dtype == g_ref.dtype == torch.float32, what
        assert_rel_close(g, g64.grad, dtype, f"{name} grad of {what}")


@pytest.mark.parametrize("activation", ["relu", "silu"])
def test_fused_epilogue_runs_in_autocast_dtype(activation):
    x, w, b, res = torch.randn(1, 3, 6, 5), torch.randn(4, 3, 3, 3), torch.randn(4), \
        torch.randn(1, 4, 6, 5)
    xs = _leaves(x, w, b, res)
    with fastconv_only(), torch.autocast("cpu", dtype=torch.bfloat16), OpDtypes() as log:
        out = FC.conv2d(*xs[:3], padding=1, activation=activation, residual=xs[3])
    out.float().sum().backward()
    assert out.dtype == torch.bfloat16
    assert log.calls[0] == ("conv2d_activation", [torch.bfloat16] * 4)
    act = F.relu if activation == "relu" else F.silu
    want = act(F.conv2d(*(t.to(torch.bfloat16).double() for t in (x, w, b)), padding=1)
               + res.to(torch.bfloat16).double())
    assert_rel_close(out, want, torch.bfloat16, "fused output")
    assert [t.grad.dtype for t in xs] == [torch.float32] * 4


def test_op_casts_mixed_dtypes():
    """The op itself casts whatever floating dtypes it is given, as torch's conv2d does (a
    bfloat16 input with float32 parameters is the usual case under autocast)."""
    x, w, b = torch.randn(1, 3, 5, 5, dtype=torch.bfloat16), torch.randn(4, 3, 3, 3), \
        torch.randn(4, dtype=torch.float16)
    with fastconv_only(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = torch.ops.fastconv.conv2d(x, w, b, [1, 1], [0, 0], [1, 1], 1)
    assert out.dtype == torch.bfloat16
    want = F.conv2d(x.double(), w.to(torch.bfloat16).double(), b.to(torch.bfloat16).double())
    assert_rel_close(out, want, torch.bfloat16, "mixed-dtype conv2d")


def test_functional_accepts_what_autocast_casts():
    x, w = torch.randn(1, 3, 5, 5, dtype=torch.bfloat16), torch.randn(4, 3, 3, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = F.conv2d(x, w)
        with fastconv_only():
            out = FC.conv2d(x, w)
    assert out.dtype == ref.dtype
    assert_rel_close(out, ref.double(), torch.bfloat16, "mixed-dtype functional conv2d")


def test_disabled_autocast_and_float64_are_left_alone():
    x, w = torch.randn(1, 3, 5, 4), torch.randn(2, 3, 2, 2)
    with fastconv_only(), torch.autocast("cpu", dtype=torch.bfloat16), OpDtypes() as log:
        with torch.autocast("cpu", enabled=False):
            off = FC.conv2d(x, w)
        on = FC.conv2d(x, w)
        double = FC.conv2d(x.double(), w.double())
    assert (off.dtype, on.dtype, double.dtype) == (torch.float32, torch.bfloat16, torch.float64)
    assert [dt for _, dts in log.calls for dt in dts] == [torch.float32] * 2 + \
        [torch.bfloat16] * 2 + [torch.float64] * 2
    assert_rel_close(off, F.conv2d(x.double(), w.double()), torch.float32, "autocast disabled")


# ---------------------------------------------------------------------------- RoI ops
def _roi_inputs(dtype):
    x = torch.randn(2, 3, 9, 8).to(dtype)
    boxes = torch.tensor([[0, 0.5, 1.0, 6.2, 7.9], [1, 2.0, 0.3, 7.5, 4.4],
                          [1, -1.0, 3.0, 3.5, 9.5]]).to(dtype)
    return x, boxes


ROIS = {
    "roi_align": (lambda x, b: FC.roi_align(x, b, (3, 2), 0.75, 2, True),
                  lambda x, b: torchvision.ops.roi_align(x, b, (3, 2), 0.75, 2, True)),
    "roi_pool": (lambda x, b: FC.roi_pool(x, b, (3, 2), 0.75),
                 lambda x, b: torchvision.ops.roi_pool(x, b, (3, 2), 0.75)),
}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
@pytest.mark.parametrize("name", ROIS)
def test_roi_runs_in_float32_returns_input_dtype(name, dtype):
    fc_fn, tv_fn = ROIS[name]
    x, boxes = _roi_inputs(dtype)

    def run(fn):
        xg = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = fn(xg, boxes)
        out.backward(torch.ones_like(out))
        return out, xg.grad

    if name == "roi_align":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ref = tv_fn(x, boxes)
    else:  # torchvision registers roi_pool's autocast rule for CUDA only: the same rule by hand
        ref = tv_fn(x.float(), boxes.float()).to(dtype)
    with fastconv_only(), OpDtypes() as log:
        out, grad = run(fc_fn)
    assert out.dtype == ref.dtype == dtype
    assert grad.dtype == dtype
    forward = [dts for op, dts in log.calls if op == name]
    assert forward == [[torch.float32, torch.float32]], log.calls
    backward = [dts for op, dts in log.calls if op == f"{name}_backward"]
    assert backward and backward[0][0] == torch.float32
    want = tv_fn(x.double(), boxes.double())
    assert_rel_close(out, want, dtype, f"{name} under autocast")


# ---------------------------------------------------------------------------- models
def _conv_bn_relu_stack(conv):
    # no bias before a batch norm: in training mode its gradient is rounding noise
    return nn.Sequential(conv(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         conv(8, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16),
                         nn.ReLU(), conv(16, 5, 1))


class _RoIHead(nn.Module):
    def __init__(self, conv, roi_align):
        super().__init__()
        self.pool = roi_align((4, 4), spatial_scale=0.5, sampling_ratio=2, aligned=True)
        self.conv = conv(6, 7, 3, padding=1)

    def forward(self, features, boxes):
        return F.relu(self.conv(self.pool(features, boxes)))


def _double(inputs):
    return [t.double() if torch.is_tensor(t) else [b.double() for b in t] for t in inputs]


def _train_step(model, inputs, dtype):
    with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        out = model(*inputs)
    out.float().square().mean().backward()
    return out, {n: p.grad for n, p in model.named_parameters()}


MODELS = {
    "conv_bn_relu": (lambda: _conv_bn_relu_stack(nn.Conv2d),
                     lambda: _conv_bn_relu_stack(fastconv.nn.Conv2d),
                     lambda: (torch.randn(2, 3, 9, 7),)),
    "roi_head": (lambda: _RoIHead(nn.Conv2d, torchvision.ops.RoIAlign),
                 lambda: _RoIHead(fastconv.nn.Conv2d, fastconv.nn.RoIAlign),
                 lambda: (torch.randn(2, 6, 8, 9), [torch.tensor([[1.0, 2.0, 12.0, 9.0]]),
                                                    torch.tensor([[0.0, 0.0, 17.0, 15.0],
                                                                  [4.0, 3.0, 9.0, 13.0]])])),
}


@pytest.mark.parametrize("dtype", LOW, ids=str)
@pytest.mark.parametrize("name", [
    "conv_bn_relu", "roi_head"])
def test_model_under_autocast_matches_torch(name, dtype):
    """Output and every gradient of a training step, against the float64 model: fastconv under
    autocast must be as close to it as torch under autocast is (two runs in 16 bits round
    differently, so they are not compared with each other)."""
    make_torch, make_fastconv, make_inputs = MODELS[name]
    reference, model = make_torch(), make_fastconv()
    model.load_state_dict(reference.state_dict())
    inputs = make_inputs()
    exact = copy.deepcopy(reference).double()
    want, want_grads = _train_step(exact, _double(inputs), None)
    ref, ref_grads = _train_step(reference, inputs, dtype)
    with fastconv_only():
        out, grads = _train_step(model, inputs, dtype)
    assert out.dtype == ref.dtype
    assert grads.keys() == ref_grads.keys()
    for key, got, torch_got, exact_value in [("output", out, ref, want)] + [
            (k, grads[k], ref_grads[k], want_grads[k]) for k in grads]:
        if key != "output":
            # gradients of the float32 parameters come back through the casts in float32
            assert got.dtype == torch_got.dtype == torch.float32, key
        err, torch_err = rel_err(got, exact_value), rel_err(torch_got, exact_value)
        assert err < max(TOL[dtype], 2 * torch_err), (
            f"{key}: relative error {err:.2e}, torch's under the same autocast {torch_err:.2e}")


# ---------------------------------------------------------------------------- registration, CUDA
@pytest.mark.parametrize("device_type", DEVICE_TYPES)
@pytest.mark.parametrize("op", FASTCONV_OPS)
def test_every_op_has_an_autocast_kernel(op, device_type):
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"fastconv::{op}",
                                                          autocast_key(device_type))


@contextlib.contextmanager
def _cuda_autocast(dtype):
    """CUDA autocast without a GPU: torch.autocast('cuda') turns itself off when CUDA is not
    available, so set the thread-local state it would set."""
    enabled, previous = torch.is_autocast_enabled("cuda"), torch.get_autocast_dtype("cuda")
    torch.set_autocast_enabled("cuda", True)
    torch.set_autocast_dtype("cuda", dtype)
    try:
        yield
    finally:
        torch.set_autocast_enabled("cuda", enabled)
        torch.set_autocast_dtype("cuda", previous)


@pytest.mark.parametrize("dtype", LOW, ids=str)
def test_cuda_autocast_on_fake_cuda_tensors(dtype):
    """Fake CUDA tensors carry the CUDA dispatch keys, so the AutocastCUDA kernels run and
    the fake implementations give the dtypes a GPU run would."""
    with FakeTensorMode():
        x = torch.empty(2, 3, 8, 8, device="cuda")
        w = torch.empty(4, 3, 3, 3, device="cuda", requires_grad=True)
        wt = torch.empty(3, 2, 2, 2, device="cuda")
        boxes = torch.tensor([[0, 1.0, 1.0, 5.0, 5.0]], device="cuda")
        with _cuda_autocast(dtype), OpDtypes() as log:
            got = {"conv2d": FC.conv2d(x, w, padding=1),
                   "conv_transpose2d": FC.conv_transpose2d(x, wt, stride=2),
                   "roi_align": FC.roi_align(x.half(), boxes.half(), 2),
                   "roi_pool": FC.roi_pool(x.bfloat16(), boxes.bfloat16(), 2)}
            want = {"conv2d": F.conv2d(x, w, padding=1),
                    "conv_transpose2d": F.conv_transpose2d(x, wt, stride=2),
                    "roi_align": torchvision.ops.roi_align(x.half(), boxes.half(), 2),
                    "roi_pool": torchvision.ops.roi_pool(x.bfloat16(), boxes.bfloat16(), 2)}
    assert {k: v.dtype for k, v in got.items()} == {k: v.dtype for k, v in want.items()}
    assert got["conv2d"].dtype == dtype and got["roi_pool"].dtype == torch.bfloat16
    ran = {op: dts for op, dts in log.calls if op in FASTCONV_OPS}
    assert ran["conv2d"] == [dtype, dtype] and ran["roi_align"] == [torch.float32] * 2
    assert got["conv2d"].grad_fn is not None
