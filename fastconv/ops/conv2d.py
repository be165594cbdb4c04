"""``fastconv::conv2d`` and its two gradient ops, registered with ``torch.library``.

The ops take normalised arguments (4-D input, explicit symmetric padding pairs); argument
checking and the user-facing signature live in :mod:`fastconv.functional`. Each op has a fake
(meta) implementation with exactly the real one's shape, dtype and strides, so ``torch.compile``
and ``opcheck`` can trace them, and the forward op has an autograd formula built from the two
gradient ops.
"""
from typing import List, Optional

import torch
from torch import Tensor

from fastconv.ops import conv2d_launch
from fastconv.ops._runtime import check_device, new_output
from fastconv.ops.conv_shapes import conv2d_output_shape, conv_memory_format, memory_format_of


def _check_devices(**tensors) -> None:
    for name, t in tensors.items():
        if t is not None:
            check_device(name, t)


# ---------------------------------------------------------------------------- forward
@torch.library.custom_op("fastconv::conv2d", mutates_args=())
def conv2d(input: Tensor, weight: Tensor, bias: Optional[Tensor], stride: List[int],
           padding: List[int], dilation: List[int], groups: int) -> Tensor:
    _check_devices(input=input, weight=weight, bias=bias)
    shape = conv2d_output_shape(input.shape, weight.shape, stride, padding, dilation)
    out = new_output(shape, input, conv_memory_format(input, weight))
    conv2d_launch.conv2d_fprop(input, weight, bias, out, stride, padding, dilation, groups)
    return out


@conv2d.register_fake
def _(input, weight, bias, stride, padding, dilation, groups):
    shape = conv2d_output_shape(input.shape, weight.shape, stride, padding, dilation)
    return input.new_empty(shape).contiguous(memory_format=conv_memory_format(input, weight))


# ---------------------------------------------------------------------------- gradients
@torch.library.custom_op("fastconv::conv2d_input_grad", mutates_args=())
def conv2d_input_grad(grad_output: Tensor, weight: Tensor, input_size: List[int],
                      stride: List[int], padding: List[int], dilation: List[int],
                      groups: int) -> Tensor:
    _check_devices(grad_output=grad_output, weight=weight)
    grad_input = new_output(input_size, grad_output, memory_format_of(grad_output))
    conv2d_launch.conv2d_dgrad(grad_output, weight, grad_input, stride, padding, dilation, groups)
    return grad_input


@conv2d_input_grad.register_fake
def _(grad_output, weight, input_size, stride, padding, dilation, groups):
    return grad_output.new_empty(input_size).contiguous(
        memory_format=memory_format_of(grad_output))


@torch.library.custom_op("fastconv::conv2d_weight_grad", mutates_args=())
def conv2d_weight_grad(grad_output: Tensor, input: Tensor, weight_size: List[int],
                       stride: List[int], padding: List[int], dilation: List[int],
                       groups: int) -> Tensor:
    _check_devices(grad_output=grad_output, input=input)
    return conv2d_launch.conv2d_wgrad(input, grad_output, weight_size, stride, padding,
                                      dilation, groups)


@conv2d_weight_grad.register_fake
def _(grad_output, input, weight_size, stride, padding, dilation, groups):
    return input.new_empty(weight_size)


# ---------------------------------------------------------------------------- autograd
def _setup_context(ctx, inputs, output):
    input, weight, bias, stride, padding, dilation, groups = inputs
    ctx.save_for_backward(input, weight)
    ctx.conv = (list(stride), list(padding), list(dilation), groups)
    ctx.has_bias = bias is not None


def _backward(ctx, grad_output):
    input, weight = ctx.saved_tensors
    stride, padding, dilation, groups = ctx.conv
    grad_input = grad_weight = grad_bias = None
    if ctx.needs_input_grad[0]:
        grad_input = torch.ops.fastconv.conv2d_input_grad(
            grad_output, weight, list(input.shape), stride, padding, dilation, groups)
    if ctx.needs_input_grad[1]:
        grad_weight = torch.ops.fastconv.conv2d_weight_grad(
            grad_output, input, list(weight.shape), stride, padding, dilation, groups)
    if ctx.has_bias and ctx.needs_input_grad[2]:
        grad_bias = grad_output.sum(dim=(0, 2, 3))
    return grad_input, grad_weight, grad_bias, None, None, None, None


conv2d.register_autograd(_backward, setup_context=_setup_context)
