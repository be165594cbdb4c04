"""``fastconv::roi_pool`` and its backward op, registered with ``torch.library``.

The forward returns the pooled maxima and, as torchvision's op, the int32 ``argmax`` of every
bin (h * W + w in the RoI's image, -1 for an empty bin), which the backward routes the gradient
through. Arguments are normalised; checks live in :mod:`fastconv.functional.roi`. Outputs are
contiguous [K, C, pooled_height, pooled_width]; the gradient takes the input's memory format and
is accumulated in float32 (float64) as for RoIAlign.
"""
import torch

from fastconv.ops import autocast, registry
from fastconv.roi import launch as roi_launch
from fastconv.ops._runtime import check_devices, fake_output, new_output
from fastconv.conv.shapes import memory_format_of
from fastconv.ops.target import target_settings
from fastconv.ops.launch_cache import Finish, new_cache
from fastconv.roi.launch import gradient_buffer, gradient_from_buffer

_CALLS = new_cache()


# ---------------------------------------------------------------------------- forward
def _empty_bins(out, argmax):
    return out.zero_(), argmax.fill_(-1)  # every bin is empty


def _forward_build(input, rois, spatial_scale, pooled_height, pooled_width):
    check_devices(input=input, rois=rois)
    n, c, h, w = input.shape
    shape = [rois.shape[0], c, pooled_height, pooled_width]
    out = new_output(shape, input)
    argmax = new_output(shape, input, dtype=torch.int32)
    if out.numel() == 0:
        return [], (out, argmax)
    if h == 0 or w == 0:
        return [], Finish(_empty_bins, out, argmax)
    return [roi_launch.roi_pool_forward_launch(input, rois, spatial_scale, out, argmax)], \
        (out, argmax)


def _roi_pool(input, rois, spatial_scale, pooled_height, pooled_width):
    args = (spatial_scale, pooled_height, pooled_width)
    return _CALLS("roi_pool", (input, rois), _forward_build, args, input.device,
                  target_settings())


def _roi_pool_fake(input, rois, spatial_scale, pooled_height, pooled_width):
    shape = [rois.shape[0], input.shape[1], pooled_height, pooled_width]
    return (fake_output(shape, input, torch.contiguous_format),
            input.new_empty(shape, dtype=torch.int32))


roi_pool = registry.define(
    "roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
    "SymInt pooled_width) -> (Tensor, Tensor)", _roi_pool, _roi_pool_fake)


# ---------------------------------------------------------------------------- backward
def _backward_build(grad, rois, argmax, input_shape, channels_last, deterministic):
    check_devices(grad=grad, rois=rois, argmax=argmax)
    acc = gradient_buffer(input_shape, grad, channels_last)
    launches = []
    if grad.numel() and acc.numel():
        launches.append(roi_launch.roi_pool_backward_launch(grad, rois, argmax, acc,
                                                            deterministic))
    dtype = grad.dtype  # not grad itself: a recorded call keeps no tensor of the call
    return launches, Finish(lambda acc: gradient_from_buffer(acc, dtype), acc)


def _roi_pool_backward(grad, rois, argmax, input_shape, channels_last, deterministic):
    """The gradient w.r.t. the input of roi_pool: ``grad`` added at each bin's argmax."""
    args = (tuple(input_shape), channels_last, deterministic)
    return _CALLS("roi_pool_backward", (grad, rois, argmax), _backward_build, args,
                  grad.device, target_settings())


def _backward_fake(grad, rois, argmax, input_shape, channels_last, deterministic):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return fake_output(input_shape, grad, fmt)


roi_pool_backward = registry.define(
    "roi_pool_backward(Tensor grad, Tensor rois, Tensor argmax, SymInt[] input_shape, "
    "bool channels_last, bool deterministic) -> Tensor", _roi_pool_backward, _backward_fake)


# ---------------------------------------------------------------------------- autograd
class _RoIPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, run, input, rois, spatial_scale, pooled_height, pooled_width):
        out, argmax = run(input, rois, spatial_scale, pooled_height, pooled_width)
        ctx.save_for_backward(rois, argmax)
        ctx.mark_non_differentiable(argmax)
        ctx.args = (list(input.shape), memory_format_of(input) == torch.channels_last)
        return out, argmax

    @staticmethod
    def backward(ctx, grad, _grad_argmax):
        rois, argmax = ctx.saved_tensors
        grad_input = None
        if ctx.needs_input_grad[1]:
            grad_input = registry.call(roi_pool_backward, grad, rois, argmax, *ctx.args,
                                       torch.are_deterministic_algorithms_enabled())
        return None, grad_input, None, None, None, None


registry.autograd(roi_pool, _RoIPool, differentiable=1)


# ---------------------------------------------------------------------------- autocast
# as torchvision's: computed in float32, the result cast back to the input's dtype (the
# backward to the gradient's, which autograd has made the float32 of the forward)
for _name in ("roi_pool", "roi_pool_backward"):
    autocast.register(_name, "float32")
