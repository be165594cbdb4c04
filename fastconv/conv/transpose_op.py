"""``fastconv::conv_transpose2d`` and its input-gradient op, registered with ``torch.library``.

A transposed convolution is the input gradient of a convolution: ``conv_transpose2d(x, w)`` is
d conv2d(z, w) / d z applied to dy = x, with ``w`` read as the conv2d weight [K, C/g, R, S] =
[C_in, C_out/g, kH, kW]. So the three directions reuse conv2d's kernels with the roles swapped:

| conv_transpose2d  | conv2d kernel | as                                                      |
|-------------------|---------------|---------------------------------------------------------|
| forward           | dgrad         | dx = out (transposed size), dy = input                  |
| grad w.r.t. input | fprop         | x = grad_output, y = grad_input (input's size)          |
| grad w.r.t. weight| wgrad         | x = grad_output, dy = input (``fastconv::conv2d_weight_grad``) |

``output_padding`` only makes the transposed output larger: the kernels take every size from the
tensors they are given, so no other argument changes. The gradient of the input can't be the
``fastconv::conv2d`` op itself: that op sizes its output from the padding, and when
``output_padding >= stride`` (allowed while it is below the dilation) the conv2d of grad_output
is larger than the input; here grad_input is allocated with the input's size instead.

The ops take normalised arguments (4-D input, pairs of ints); argument checking and the
user-facing signature live in :mod:`fastconv.functional.conv_transpose2d`.
"""
from typing import Sequence

import torch

from fastconv.conv import launch as conv2d_launch
from fastconv.conv import plan
from fastconv.ops import autocast, registry
from fastconv.ops._runtime import check_devices, fake_output, new_output
from fastconv.conv.op import conv2d_weight_grad
from fastconv.conv.shapes import conv_memory_format
from fastconv.ops.launch_cache import Finish, new_cache

_CALLS = new_cache()


def conv_transpose_output_size(size: int, kernel: int, stride: int, padding: int,
                               output_padding: int, dilation: int) -> int:
    return (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1


def conv_transpose2d_output_shape(input_shape: Sequence[int], weight_shape: Sequence[int],
                                  stride: Sequence[int], padding: Sequence[int],
                                  output_padding: Sequence[int], groups: int,
                                  dilation: Sequence[int]) -> list:
    n, _, h, w = input_shape
    _, out_per_group, kh, kw = weight_shape
    return [n, out_per_group * groups,
            conv_transpose_output_size(h, kh, stride[0], padding[0], output_padding[0],
                                       dilation[0]),
            conv_transpose_output_size(w, kw, stride[1], padding[1], output_padding[1],
                                       dilation[1])]


# ---------------------------------------------------------------------------- forward
def _add_bias(out, bias):
    # the dgrad kernel has no bias epilogue; ``out`` is ours, so adding in place is safe
    return out.add_(bias.view(1, -1, 1, 1))


def _forward_build(input, weight, bias, stride, padding, output_padding, groups, dilation):
    check_devices(input=input, weight=weight, bias=bias)
    shape = conv_transpose2d_output_shape(input.shape, weight.shape, stride, padding,
                                          output_padding, groups, dilation)
    out = new_output(shape, input, conv_memory_format(input, weight))
    # every element of ``out`` is written, output_padding rows and columns included (with 0)
    _, launches = conv2d_launch.conv2d_dgrad(input, weight, out, stride, padding, dilation,
                                             groups)
    return launches, (out if bias is None else Finish(_add_bias, out, bias))


# argument order as aten::conv_transpose2d (groups before dilation)
def _conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups, dilation):
    args = (tuple(stride), tuple(padding), tuple(output_padding), groups, tuple(dilation))
    return _CALLS("conv_transpose2d", (input, weight, bias), _forward_build, args, input.device,
                  plan.settings())


def _conv_transpose2d_fake(input, weight, bias, stride, padding, output_padding, groups,
                           dilation):
    shape = conv_transpose2d_output_shape(input.shape, weight.shape, stride, padding,
                                          output_padding, groups, dilation)
    return fake_output(shape, input, conv_memory_format(input, weight))


conv_transpose2d = registry.define(
    "conv_transpose2d(Tensor input, Tensor weight, Tensor? bias, SymInt[] stride, "
    "SymInt[] padding, "
    "SymInt[] output_padding, SymInt groups, SymInt[] dilation) -> Tensor", _conv_transpose2d,
    _conv_transpose2d_fake)


# ---------------------------------------------------------------------------- gradients
def _input_grad_build(grad_output, weight, input_size, stride, padding, dilation, groups):
    check_devices(grad_output=grad_output, weight=weight)
    grad_input = new_output(input_size, grad_output, conv_memory_format(grad_output, weight))
    _, launches = conv2d_launch.conv2d_fprop(grad_output, weight, None, grad_input, stride,
                                             padding, dilation, groups)
    return launches, grad_input


def _input_grad(grad_output, weight, input_size, stride, padding, dilation, groups):
    args = (tuple(input_size), tuple(stride), tuple(padding), tuple(dilation), groups)
    return _CALLS("conv_transpose2d_input_grad", (grad_output, weight), _input_grad_build,
                  args, grad_output.device, plan.settings())


conv_transpose2d_input_grad = registry.define(
    "conv_transpose2d_input_grad(Tensor grad_output, Tensor weight, SymInt[] input_size, "
    "SymInt[] stride, SymInt[] padding, SymInt[] dilation, SymInt groups) -> Tensor", _input_grad,
    lambda grad_output, weight, input_size, stride, padding, dilation, groups:
        fake_output(input_size, grad_output, conv_memory_format(grad_output, weight)))


# ---------------------------------------------------------------------------- autograd
class _ConvTranspose2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, run, input, weight, bias, stride, padding, output_padding, groups,
                dilation):
        ctx.save_for_backward(input, weight)
        ctx.conv = (stride, padding, dilation, groups)
        ctx.has_bias = bias is not None
        return run(input, weight, bias, stride, padding, output_padding, groups, dilation)

    @staticmethod
    def backward(ctx, grad_output):
        input, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conv
        grad_input = grad_weight = grad_bias = None
        _, *needs = ctx.needs_input_grad
        if needs[0]:
            grad_input = registry.call(conv_transpose2d_input_grad, grad_output, weight,
                                       list(input.shape), stride, padding, dilation, groups)
        if needs[1]:
            # conv2d's weight gradient with grad_output as the conv2d input and ``input`` as
            # the conv2d output gradient; it reduces over the pixels of ``input``, so the
            # extra rows and columns of output_padding are read only where a tap reaches them
            grad_weight = registry.call(conv2d_weight_grad, input, grad_output,
                                        list(weight.shape), stride, padding, dilation, groups)
        if ctx.has_bias and needs[2]:
            grad_bias = grad_output.sum(dim=(0, 2, 3))
        return None, grad_input, grad_weight, grad_bias, None, None, None, None, None


registry.autograd(conv_transpose2d, _ConvTranspose2d, differentiable=3)


# ---------------------------------------------------------------------------- autocast
# lower precision, as torch's conv_transpose2d (conv2d_weight_grad is registered with conv2d)
for _name in ("conv_transpose2d", "conv_transpose2d_input_grad"):
    autocast.register(_name, "lower_precision")
