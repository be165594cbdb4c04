"""``fastconv::conv2d``, its fused-epilogue twin and the gradient ops.

The ops take normalised arguments (4-D input, explicit symmetric padding pairs); argument
checking and the user-facing signature live in :mod:`fastconv.functional`. Each op is defined
through :mod:`fastconv.ops.registry`: a real kernel that replays its launches from the
per-signature cache (:mod:`fastconv.ops.launch_cache`), a fake (meta) kernel with exactly the
real one's shape, dtype and strides, so ``torch.compile`` and ``opcheck`` can trace them, and for
the forward ops an autograd formula built from the two gradient ops. Under ``torch.autocast``
every op casts as torch's conv2d does (:mod:`fastconv.ops.autocast`).
"""
import torch
from torch import Tensor

from fastconv.kernels._common import ACT_GELU, ACT_NONE, ACT_RELU, ACT_RELU6, ACT_SILU

from fastconv.conv import launch as conv2d_launch
from fastconv.conv import plan
from fastconv.ops import autocast, registry
from fastconv.ops._runtime import check_devices, fake_output, new_output
from fastconv.conv.shapes import conv2d_output_shape, conv_memory_format, memory_format_of
from fastconv.ops.launch_cache import Finish, new_cache

_CALLS = new_cache()


# ---------------------------------------------------------------------------- forward
def _conv2d_build(input, weight, bias, stride, padding, dilation, groups):
    check_devices(input=input, weight=weight, bias=bias)
    shape = conv2d_output_shape(input.shape, weight.shape, stride, padding, dilation)
    out = new_output(shape, input, conv_memory_format(input, weight))
    _, launches = conv2d_launch.conv2d_fprop(input, weight, bias, out, stride, padding,
                                             dilation, groups)
    return launches, out


def _conv2d(input, weight, bias, stride, padding, dilation, groups):
    args = (tuple(stride), tuple(padding), tuple(dilation), groups)
    return _CALLS("conv2d", (input, weight, bias), _conv2d_build, args, input.device,
                  plan.settings())


def _conv2d_fake(input, weight, bias, stride, padding, dilation, groups):
    shape = conv2d_output_shape(input.shape, weight.shape, stride, padding, dilation)
    return fake_output(shape, input, conv_memory_format(input, weight))


conv2d = registry.define(
    "conv2d(Tensor input, Tensor weight, Tensor? bias, SymInt[] stride, SymInt[] padding, "
    "SymInt[] dilation, SymInt groups) -> Tensor", _conv2d, _conv2d_fake)


# ---------------------------------------------------------------------------- fused epilogue
# activation name -> kernel code; the functional layer validates names against this
ACTIVATIONS = {"none": ACT_NONE, "relu": ACT_RELU, "relu6": ACT_RELU6, "silu": ACT_SILU,
               "gelu": ACT_GELU}
# their derivative needs the pre-activation value; relu and relu6 read it off the output
_NEEDS_PREACT = ("silu", "gelu")


def _activation_build(input, weight, bias, residual, stride, padding, dilation, groups,
                      activation, keep_preactivation):
    check_devices(input=input, weight=weight, bias=bias, residual=residual)
    shape = conv2d_output_shape(input.shape, weight.shape, stride, padding, dilation)
    fmt = conv_memory_format(input, weight)
    out = new_output(shape, input, fmt)
    preact = new_output(shape if keep_preactivation else (0,), input, fmt if
                        keep_preactivation else torch.contiguous_format)
    _, launches = conv2d_launch.conv2d_fprop(
        input, weight, bias, out, stride, padding, dilation, groups, residual=residual,
        activation=ACTIVATIONS[activation], preact=preact if keep_preactivation else None)
    return launches, (out, preact)


def _conv2d_activation(input, weight, bias, residual, stride, padding, dilation, groups,
                       activation, keep_preactivation):
    """(act(conv2d + bias + residual), the pre-activation or an empty tensor)."""
    args = (tuple(stride), tuple(padding), tuple(dilation), groups, activation,
            keep_preactivation)
    inputs = (input, weight, bias, residual)
    return _CALLS("conv2d_activation", inputs, _activation_build, args, input.device,
                  plan.settings())


def _conv2d_activation_fake(input, weight, bias, residual, stride, padding, dilation, groups,
                            activation, keep_preactivation):
    shape = conv2d_output_shape(input.shape, weight.shape, stride, padding, dilation)
    fmt = conv_memory_format(input, weight)
    preact = fake_output(shape, input, fmt) if keep_preactivation else input.new_empty(0)
    return fake_output(shape, input, fmt), preact


conv2d_activation = registry.define(
    "conv2d_activation(Tensor input, Tensor weight, Tensor? bias, Tensor? residual, "
    "SymInt[] stride, SymInt[] padding, SymInt[] dilation, SymInt groups, str activation, "
    "bool keep_preactivation) -> (Tensor, Tensor)", _conv2d_activation, _conv2d_activation_fake)


def activation_backward(activation: str, grad: Tensor, out: Tensor, preact: Tensor) -> Tensor:
    """d act / d z times ``grad``, in float32 (float64 for float64) and back (elementwise,
    torch ops)."""
    if activation == "none":
        return grad
    wide = torch.float64 if grad.dtype == torch.float64 else torch.float32
    g = grad.to(wide)
    # as torch's threshold_backward / hardtanh_backward: zero where the input was clipped, the
    # gradient itself elsewhere (a NaN output passes it on)
    if activation == "relu":
        g = torch.where(out <= 0, 0.0, g)
    elif activation == "relu6":
        g = torch.where((out <= 0) | (out >= 6), 0.0, g)
    else:
        z = preact.to(wide)
        if activation == "silu":
            s = torch.sigmoid(z)
            g = g * (s * (1 + z * (1 - s)))
        else:  # gelu, exact: Phi(z) + z * phi(z)
            cdf = 0.5 * (1 + torch.erf(z * 0.7071067811865476))
            pdf = torch.exp(-0.5 * z * z) * 0.3989422804014327
            g = g * (cdf + z * pdf)
    return g.to(grad.dtype)


# ---------------------------------------------------------------------------- gradients
def _input_grad_build(grad_output, weight, input_size, stride, padding, dilation, groups):
    check_devices(grad_output=grad_output, weight=weight)
    grad_input = new_output(input_size, grad_output, memory_format_of(grad_output))
    _, launches = conv2d_launch.conv2d_dgrad(grad_output, weight, grad_input, stride, padding,
                                             dilation, groups)
    return launches, grad_input


def _conv2d_input_grad(grad_output, weight, input_size, stride, padding, dilation, groups):
    args = (tuple(input_size), tuple(stride), tuple(padding), tuple(dilation), groups)
    return _CALLS("conv2d_input_grad", (grad_output, weight), _input_grad_build, args,
                  grad_output.device, plan.settings())


conv2d_input_grad = registry.define(
    "conv2d_input_grad(Tensor grad_output, Tensor weight, SymInt[] input_size, SymInt[] stride, "
    "SymInt[] padding, SymInt[] dilation, SymInt groups) -> Tensor", _conv2d_input_grad,
    lambda grad_output, weight, input_size, stride, padding, dilation, groups:
        fake_output(input_size, grad_output, memory_format_of(grad_output)))


def _weight_grad_build(grad_output, input, weight_size, stride, padding, dilation, groups):
    check_devices(grad_output=grad_output, input=input)
    _, launches, result = conv2d_launch.conv2d_wgrad(input, grad_output, weight_size, stride,
                                                     padding, dilation, groups)
    return launches, result


def _conv2d_weight_grad(grad_output, input, weight_size, stride, padding, dilation, groups):
    args = (tuple(weight_size), tuple(stride), tuple(padding), tuple(dilation), groups)
    return _CALLS("conv2d_weight_grad", (grad_output, input), _weight_grad_build, args,
                  input.device, plan.settings())


conv2d_weight_grad = registry.define(
    "conv2d_weight_grad(Tensor grad_output, Tensor input, SymInt[] weight_size, SymInt[] stride, "
    "SymInt[] padding, SymInt[] dilation, SymInt groups) -> Tensor", _conv2d_weight_grad,
    lambda grad_output, input, weight_size, stride, padding, dilation, groups:
        input.new_empty(weight_size))


# ---------------------------------------------------------------------------- autograd
def _both_grads_build(grad_output, input, weight, stride, padding, dilation, groups):
    launches, grad_input = _input_grad_build(grad_output, weight, tuple(input.shape), stride,
                                             padding, dilation, groups)
    more, grad_weight = _weight_grad_build(grad_output, input, tuple(weight.shape), stride,
                                           padding, dilation, groups)
    if isinstance(grad_weight, Finish):
        total = grad_weight.fn
        return launches + more, Finish(lambda gi, *part: (gi, total(*part)), grad_input,
                                       *grad_weight.tensors)
    return launches + more, (grad_input, grad_weight)


def _both_grads(grad_output, input, weight, stride, padding, dilation, groups):
    """(grad_input, grad_weight): both gradient ops' launches replayed as one call, under one
    signature (a backward that wants both, on the eager path: one key and one lookup instead
    of two)."""
    args = (tuple(stride), tuple(padding), tuple(dilation), groups)
    return _CALLS("conv2d_backward", (grad_output, input, weight), _both_grads_build, args,
                  input.device, plan.settings())


def conv_backward(input, weight, conv, grad_output, needs_input, needs_weight, needs_bias):
    """(grad_input, grad_weight, grad_bias) of conv2d, each only when asked for."""
    stride, padding, dilation, groups = conv
    grad_input = grad_weight = grad_bias = None
    if needs_input and needs_weight and not torch.is_grad_enabled() and \
            registry.straight(grad_output, input, weight):
        grad_input, grad_weight = _both_grads(grad_output, input, weight, stride, padding,
                                              dilation, groups)
        needs_input = needs_weight = False
    if needs_input:
        grad_input = registry.call(conv2d_input_grad, grad_output, weight, list(input.shape),
                                   stride, padding, dilation, groups)
    if needs_weight:
        grad_weight = registry.call(conv2d_weight_grad, grad_output, input, list(weight.shape),
                                    stride, padding, dilation, groups)
    if needs_bias:
        grad_bias = grad_output.sum(dim=(0, 2, 3))
    return grad_input, grad_weight, grad_bias


class _Conv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, run, input, weight, bias, stride, padding, dilation, groups):
        ctx.save_for_backward(input, weight)
        ctx.conv = (stride, padding, dilation, groups)
        ctx.has_bias = bias is not None
        return run(input, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad_output):
        input, weight = ctx.saved_tensors
        _, *needs = ctx.needs_input_grad
        grads = conv_backward(input, weight, ctx.conv, grad_output, needs[0], needs[1],
                              ctx.has_bias and needs[2])
        return (None, *grads, None, None, None, None)


registry.autograd(conv2d, _Conv2d, differentiable=3)


class _Conv2dActivation(torch.autograd.Function):
    @staticmethod
    def forward(ctx, run, input, weight, bias, residual, stride, padding, dilation, groups,
                activation, keep_preactivation):
        # the flag, not preact's size: an empty batch keeps an empty pre-activation
        if activation in _NEEDS_PREACT and not keep_preactivation:
            raise RuntimeError("fastconv::conv2d_activation: the backward of "
                               f"activation={activation!r} needs keep_preactivation=True")
        out, preact = run(input, weight, bias, residual, stride, padding, dilation, groups,
                          activation, keep_preactivation)
        ctx.save_for_backward(input, weight, out, preact)
        ctx.conv = (stride, padding, dilation, groups)
        ctx.has_bias = bias is not None
        ctx.activation = activation
        ctx.mark_non_differentiable(preact)
        return out, preact

    @staticmethod
    def backward(ctx, grad_out, _grad_preact):
        input, weight, out, preact = ctx.saved_tensors
        _, *needs = ctx.needs_input_grad
        grad_z = activation_backward(ctx.activation, grad_out, out, preact)
        grads = conv_backward(input, weight, ctx.conv, grad_z, needs[0], needs[1],
                              ctx.has_bias and needs[2])
        grad_residual = grad_z if needs[3] else None
        return (None, *grads, grad_residual, None, None, None, None, None, None)


registry.autograd(conv2d_activation, _Conv2dActivation, differentiable=4)


# ---------------------------------------------------------------------------- autocast
# torch's conv2d is a lower-precision autocast op; its gradients get tensors already in that
# dtype from autograd, and a direct call under autocast is cast the same way
for _name in ("conv2d", "conv2d_activation", "conv2d_input_grad", "conv2d_weight_grad"):
    autocast.register(_name, "lower_precision")
