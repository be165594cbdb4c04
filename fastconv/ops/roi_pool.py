"""``fastconv::roi_pool`` and its backward op, registered with ``torch.library``.

The forward returns the pooled maxima and, as torchvision's op, the int32 ``argmax`` of every
bin (h * W + w in the RoI's image, -1 for an empty bin), which the backward routes the gradient
through. Arguments are normalised; checks live in :mod:`fastconv.functional.roi`. Outputs are
contiguous [K, C, pooled_height, pooled_width]; the gradient takes the input's memory format and
is accumulated in float32 (float64) as for RoIAlign.
"""
from typing import List, Tuple

import torch
from torch import Tensor

from fastconv.ops import autocast, roi_launch
from fastconv.ops._runtime import check_devices, fake_output, new_output
from fastconv.ops.conv_shapes import memory_format_of
from fastconv.ops.roi_launch import gradient_buffer, gradient_from_buffer


# ---------------------------------------------------------------------------- forward
@torch.library.custom_op("fastconv::roi_pool", mutates_args=())
def roi_pool(input: Tensor, rois: Tensor, spatial_scale: float, pooled_height: int,
             pooled_width: int) -> Tuple[Tensor, Tensor]:
    check_devices(input=input, rois=rois)
    n, c, h, w = input.shape
    shape = [rois.shape[0], c, pooled_height, pooled_width]
    out = new_output(shape, input)
    argmax = torch.empty(shape, dtype=torch.int32, device=input.device)
    if out.numel() == 0:
        return out, argmax
    if h == 0 or w == 0:
        return out.zero_(), argmax.fill_(-1)  # every bin is empty
    roi_launch.roi_pool_forward(input, rois, spatial_scale, out, argmax)
    return out, argmax


@roi_pool.register_fake
def _(input, rois, spatial_scale, pooled_height, pooled_width):
    shape = [rois.shape[0], input.shape[1], pooled_height, pooled_width]
    return (fake_output(shape, input, torch.contiguous_format),
            input.new_empty(shape, dtype=torch.int32))


# ---------------------------------------------------------------------------- backward
@torch.library.custom_op("fastconv::roi_pool_backward", mutates_args=())
def roi_pool_backward(grad: Tensor, rois: Tensor, argmax: Tensor, input_shape: List[int],
                      channels_last: bool, deterministic: bool) -> Tensor:
    """The gradient w.r.t. the input of roi_pool: ``grad`` added at each bin's argmax."""
    check_devices(grad=grad, rois=rois, argmax=argmax)
    acc = gradient_buffer(input_shape, grad, channels_last)
    if grad.numel() and acc.numel():
        roi_launch.roi_pool_backward(grad, rois, argmax, acc, deterministic)
    return gradient_from_buffer(acc, grad.dtype)


@roi_pool_backward.register_fake
def _(grad, rois, argmax, input_shape, channels_last, deterministic):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return fake_output(input_shape, grad, fmt)


# ---------------------------------------------------------------------------- autograd
def _setup_context(ctx, inputs, output):
    input, rois, _, _, _ = inputs
    _, argmax = output
    ctx.save_for_backward(rois, argmax)
    ctx.mark_non_differentiable(argmax)
    ctx.args = (list(input.shape), memory_format_of(input) == torch.channels_last)


def _backward(ctx, grad, _grad_argmax):
    rois, argmax = ctx.saved_tensors
    grad_input = None
    if ctx.needs_input_grad[0]:
        grad_input = torch.ops.fastconv.roi_pool_backward(
            grad, rois, argmax, *ctx.args, torch.are_deterministic_algorithms_enabled())
    return grad_input, None, None, None, None


roi_pool.register_autograd(_backward, setup_context=_setup_context)


# ---------------------------------------------------------------------------- autocast
# as torchvision's: computed in float32, the result cast back to the input's dtype (the
# backward to the gradient's, which autograd has made the float32 of the forward)
for _name in ("roi_pool", "roi_pool_backward"):
    autocast.register(_name, "float32")
