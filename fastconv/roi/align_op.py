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
def _forward_build(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio,
                   aligned):
    check_devices(input=input, rois=rois)
    n, c, h, w = input.shape
    out = new_output([rois.shape[0], c, pooled_height, pooled_width], input)
    if out.numel() == 0:
        return [], out
    if h == 0 or w == 0:
        return [], Finish(torch.Tensor.zero_, out)  # no pixel to sample: bins average nothing
    # adaptive sampling: the forward and the reduction of its split partial sums
    return roi_launch.roi_align_forward_launch(input, rois, spatial_scale, pooled_height,
                                               pooled_width, sampling_ratio, aligned,
                                               out).chain(), out


def _roi_align(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio,
               aligned):
    args = (spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned)
    return _CALLS("roi_align", (input, rois), _forward_build, args, input.device,
                  target_settings())


roi_align = registry.define(
    "roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
    "SymInt pooled_width, SymInt sampling_ratio, bool aligned) -> Tensor", _roi_align,
    lambda input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned:
        fake_output([rois.shape[0], input.shape[1], pooled_height, pooled_width], input,
                    torch.contiguous_format))


# ---------------------------------------------------------------------------- backward
def _backward_build(grad, rois, input_shape, spatial_scale, pooled_height, pooled_width,
                    sampling_ratio, aligned, channels_last, deterministic):
    check_devices(grad=grad, rois=rois)
    acc = gradient_buffer(input_shape, grad, channels_last)
    launches = []
    if grad.numel() and acc.numel():
        launches.append(roi_launch.roi_align_backward_launch(
            grad, rois, spatial_scale, sampling_ratio, aligned, acc, deterministic))
    dtype = grad.dtype  # not grad itself: a recorded call keeps no tensor of the call
    return launches, Finish(lambda acc: gradient_from_buffer(acc, dtype), acc)


def _roi_align_backward(grad, rois, input_shape, spatial_scale, pooled_height, pooled_width,
                        sampling_ratio, aligned, channels_last, deterministic):
    """The gradient w.r.t. the input of roi_align, for ``grad`` [K, C, pooled_h, pooled_w]."""
    args = (tuple(input_shape), spatial_scale, pooled_height, pooled_width, sampling_ratio,
            aligned, channels_last, deterministic)
    return _CALLS("roi_align_backward", (grad, rois), _backward_build, args, grad.device,
                  target_settings())


def _backward_fake(grad, rois, input_shape, spatial_scale, pooled_height, pooled_width,
                   sampling_ratio, aligned, channels_last, deterministic):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return fake_output(input_shape, grad, fmt)


roi_align_backward = registry.define(
    "roi_align_backward(Tensor grad, Tensor rois, SymInt[] input_shape, float spatial_scale, "
    "SymInt pooled_height, SymInt pooled_width, SymInt sampling_ratio, bool aligned, "
    "bool channels_last, bool deterministic) -> Tensor", _roi_align_backward, _backward_fake)


# ---------------------------------------------------------------------------- autograd
class _RoIAlign(torch.autograd.Function):
    @staticmethod
    def forward(ctx, run, input, rois, spatial_scale, pooled_height, pooled_width,
                sampling_ratio, aligned):
        ctx.save_for_backward(rois)
        ctx.args = (list(input.shape), spatial_scale, pooled_height, pooled_width,
                    sampling_ratio, aligned, memory_format_of(input) == torch.channels_last)
        return run(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio,
                   aligned)

    @staticmethod
    def backward(ctx, grad):
        rois, = ctx.saved_tensors
        grad_input = None
        if ctx.needs_input_grad[1]:
            grad_input = registry.call(roi_align_backward, grad, rois, *ctx.args,
                                       torch.are_deterministic_algorithms_enabled())
        return None, grad_input, None, None, None, None, None, None


registry.autograd(roi_align, _RoIAlign, differentiable=1)


# ---------------------------------------------------------------------------- autocast
# as torchvision's: computed in float32, the result cast back to the input's dtype (the
# backward to the gradient's, which autograd has made the float32 of the forward)
for _name in ("roi_align", "roi_align_backward"):
    autocast.register(_name, "float32")
