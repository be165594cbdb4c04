"""``fastconv::roi_align`` and its backward op, registered with ``torch.library``.

The ops take normalised arguments (rois as Tensor[K, 5], the output size as two ints); the
user-facing signature and the checks live in :mod:`fastconv.functional.roi`. The output is
contiguous [K, C, pooled_height, pooled_width] whatever the input's layout, as torchvision's.

The backward accumulates in a float32 (float64) buffer, which the RoIs' scattered samples add
into, and casts once at the end: more accurate than adding in 16 bits, and atomics on bfloat16
are not available everywhere. The buffer, and so the gradient, takes the input's memory format.
Whether the backward may use atomics is an argument of the op, read from
``torch.are_deterministic_algorithms_enabled()`` when autograd calls it.
"""
from typing import List

import torch
from torch import Tensor

from fastconv.ops import autocast, roi_launch
from fastconv.ops._runtime import check_devices, fake_output, new_output
from fastconv.ops.conv_shapes import memory_format_of
from fastconv.ops.roi_launch import gradient_buffer, gradient_from_buffer


# ---------------------------------------------------------------------------- forward
@torch.library.custom_op("fastconv::roi_align", mutates_args=())
def roi_align(input: Tensor, rois: Tensor, spatial_scale: float, pooled_height: int,
              pooled_width: int, sampling_ratio: int, aligned: bool) -> Tensor:
    check_devices(input=input, rois=rois)
    n, c, h, w = input.shape
    out = new_output([rois.shape[0], c, pooled_height, pooled_width], input)
    if out.numel() == 0:
        return out
    if h == 0 or w == 0:
        return out.zero_()  # no pixel to sample: every bin averages nothing
    roi_launch.roi_align_forward(input, rois, spatial_scale, pooled_height, pooled_width,
                                 sampling_ratio, aligned, out)
    return out


@roi_align.register_fake
def _(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    return fake_output([rois.shape[0], input.shape[1], pooled_height, pooled_width], input,
                       torch.contiguous_format)


# ---------------------------------------------------------------------------- backward
@torch.library.custom_op("fastconv::roi_align_backward", mutates_args=())
def roi_align_backward(grad: Tensor, rois: Tensor, input_shape: List[int], spatial_scale: float,
                       pooled_height: int, pooled_width: int, sampling_ratio: int,
                       aligned: bool, channels_last: bool, deterministic: bool) -> Tensor:
    """The gradient w.r.t. the input of roi_align, for ``grad`` [K, C, pooled_h, pooled_w]."""
    check_devices(grad=grad, rois=rois)
    acc = gradient_buffer(input_shape, grad, channels_last)
    if grad.numel() and acc.numel():
        roi_launch.roi_align_backward(grad, rois, spatial_scale, sampling_ratio, aligned, acc,
                                      deterministic)
    return gradient_from_buffer(acc, grad.dtype)


@roi_align_backward.register_fake
def _(grad, rois, input_shape, spatial_scale, pooled_height, pooled_width, sampling_ratio,
      aligned, channels_last, deterministic):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return fake_output(input_shape, grad, fmt)


# ---------------------------------------------------------------------------- autograd
def _setup_context(ctx, inputs, output):
    input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned = inputs
    ctx.save_for_backward(rois)
    ctx.args = (list(input.shape), spatial_scale, pooled_height, pooled_width, sampling_ratio,
                aligned, memory_format_of(input) == torch.channels_last)


def _backward(ctx, grad):
    rois, = ctx.saved_tensors
    grad_input = None
    if ctx.needs_input_grad[0]:
        grad_input = torch.ops.fastconv.roi_align_backward(
            grad, rois, *ctx.args, torch.are_deterministic_algorithms_enabled())
    return grad_input, None, None, None, None, None, None


roi_align.register_autograd(_backward, setup_context=_setup_context)


# ---------------------------------------------------------------------------- autocast
# as torchvision's: computed in float32, the result cast back to the input's dtype (the
# backward to the gradient's, which autograd has made the float32 of the forward)
for _name in ("roi_align", "roi_align_backward"):
    autocast.register(_name, "float32")
