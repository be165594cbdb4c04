"""``fastconv.functional.roi_align`` and ``roi_pool``: torchvision.ops' signatures and semantics
on fastconv's kernels.

Every argument is checked here, before any kernel launch, with an error that names it; boxes in
torchvision's list form are turned into the [K, 5] rois the ops take.
"""
import math
from numbers import Real
from typing import List, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from fastconv.ops import registry
from fastconv.roi import align_op, pool_op
from fastconv.functional._args import check_same, check_tensor, int_tuple, is_int, positive

Boxes = Union[Tensor, Sequence[Tensor]]
IntOrPair = Union[int, Sequence[int]]


def boxes_to_rois(boxes: Sequence[Tensor]) -> Tensor:
    """One ``Tensor[L_i, 4]`` of boxes per image -> ``Tensor[K, 5]`` rows (image index, x1, y1,
    x2, y2), in the order of ``torch.cat(boxes)``. No checks: :func:`roi_align` makes them."""
    ids = [torch.full((b.shape[0], 1), i, dtype=b.dtype, device=b.device)
           for i, b in enumerate(boxes)]
    return torch.cat([torch.cat(ids), torch.cat(list(boxes))], dim=1)


# ---------------------------------------------------------------------------- checks
def _check_output_size(fn: str, output_size) -> Tuple[int, int]:
    size = int_tuple(fn, "output_size", output_size, 2)
    positive(fn, "output_size", size)
    return size


def _check_spatial_scale(fn: str, spatial_scale) -> float:
    if isinstance(spatial_scale, bool) or not isinstance(spatial_scale, Real):
        raise TypeError(f"{fn}(): spatial_scale must be a float, got "
                        f"{type(spatial_scale).__name__} {spatial_scale!r}")
    scale = float(spatial_scale)
    # not math.isfinite: under torch.compile(dynamic=True) the scale is a SymFloat; NaN fails both
    if not 0 < scale < math.inf:
        raise ValueError(f"{fn}(): spatial_scale must be positive and finite, got "
                         f"spatial_scale={spatial_scale!r}")
    return scale


def _box_tensor(fn: str, name: str, t, columns: int, input: Tensor) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{fn}(): {name} must be a Tensor[K, 5] or a list of Tensor[L, 4], "
                        f"got {type(t).__name__}")
    if t.dim() != 2 or t.shape[1] != columns:
        want = "Tensor[K, 5] (batch index, x1, y1, x2, y2)" if columns == 5 else \
            "Tensor[L, 4] (x1, y1, x2, y2)"
        raise ValueError(f"{fn}(): expected {name} to be a {want}, got {name} of shape "
                         f"{list(t.shape)}")
    check_same(fn, name, t, "input", input)


def _in_traced_region(t: Tensor) -> bool:
    """Inside torch.compile (or on the meta device) the boxes' values can't be checked; the
    kernels then skip RoIs whose batch index is out of range (output 0)."""
    return torch.compiler.is_compiling() or t.device.type == "meta"


def _rois(fn: str, input: Tensor, boxes: Boxes) -> Tensor:
    """Validated rois [K, 5] from ``boxes`` in either of torchvision's forms."""
    n = input.shape[0]
    if isinstance(boxes, (list, tuple)):
        if len(boxes) == 0:
            raise ValueError(f"{fn}(): boxes is an empty list; pass one Tensor[L, 4] per image "
                             "(or a Tensor[K, 5])")
        for i, b in enumerate(boxes):
            _box_tensor(fn, f"boxes[{i}]", b, 4, input)
        if len(boxes) > n:
            raise ValueError(f"{fn}(): boxes has {len(boxes)} tensors (one per image) but input "
                             f"has a batch of {n}")
        return boxes_to_rois(boxes)
    _box_tensor(fn, "boxes", boxes, 5, input)
    if boxes.shape[0] and not _in_traced_region(boxes):
        # The batch index (truncated toward zero, as torchvision reads it) is checked without
        # reading it on the host: a CPU tensor raises RuntimeError here, a CUDA tensor fails a
        # device-side assert. No host sync, so the op can be captured in a CUDA graph.
        index = boxes[:, 0]
        torch._assert_async(((index > -1) & (index < n)).all(),
                            f"{fn}(): boxes[:, 0] holds batch indices and must be in "
                            f"[0, {n - 1}] for input with a batch of {n}")
    return boxes


# ---------------------------------------------------------------------------- functions
def roi_align(input: Tensor, boxes: Boxes, output_size: IntOrPair, spatial_scale: float = 1.0,
              sampling_ratio: int = -1, aligned: bool = False) -> Tensor:
    """Region of Interest (RoI) Align with average pooling (Mask R-CNN), as
    :func:`torchvision.ops.roi_align`, computed by fastconv's Triton kernels.

    Args:
        input (Tensor[N, C, H, W]): the feature maps; float16, bfloat16, float32 or float64,
            any strides (channels_last included).
        boxes (Tensor[K, 5] or List[Tensor[L, 4]]): the boxes, (x1, y1, x2, y2) in input
            coordinates before ``spatial_scale``. As a Tensor[K, 5], column 0 is the batch
            index of each box (in [0, N - 1]); as a list, tensor i holds the boxes of image i.
            Same dtype and device as ``input``. Boxes may lie partly or wholly outside the
            image, be empty or inverted; a box with a NaN coordinate pools to zeros.
        output_size (int or Tuple[int, int]): (height, width) of the output in bins.
        spatial_scale (float): maps box coordinates to input coordinates, e.g. 0.5 for a
            feature map of half the image's size. Default: 1.0
        sampling_ratio (int): sampling points per bin along each axis; if <= 0, an adaptive
            ``ceil(roi_size / output_size)`` per axis. Default: -1
        aligned (bool): shift box coordinates by -0.5 pixel (Detectron2's alignment); if
            False, the legacy behaviour, where RoIs are at least one pixel. Default: False

    Returns:
        Tensor[K, C, output_size[0], output_size[1]]: the pooled RoIs, contiguous, of the
        input's dtype.
    """
    fn = "roi_align"
    check_tensor(fn, "input", input, 4)
    pooled_h, pooled_w = _check_output_size(fn, output_size)
    scale = _check_spatial_scale(fn, spatial_scale)
    if not is_int(sampling_ratio):
        raise TypeError(f"{fn}(): sampling_ratio must be an int, got "
                        f"{type(sampling_ratio).__name__} {sampling_ratio!r}")
    # torchvision reads any int (and numpy's bool) as a truth value here, so do the same
    if not isinstance(aligned, (bool, np.bool_)) and not is_int(aligned):
        raise TypeError(f"{fn}(): aligned must be a bool, got {type(aligned).__name__} "
                        f"{aligned!r}")
    rois = _rois(fn, input, boxes)
    return registry.call(align_op.roi_align, input, rois, scale, pooled_h, pooled_w,
                         int(sampling_ratio), bool(aligned))


def roi_pool(input: Tensor, boxes: Boxes, output_size: IntOrPair,
             spatial_scale: float = 1.0) -> Tensor:
    """Region of Interest (RoI) max pooling (Fast R-CNN), as :func:`torchvision.ops.roi_pool`,
    computed by fastconv's Triton kernels.

    Args:
        input (Tensor[N, C, H, W]): the feature maps; float16, bfloat16, float32 or float64,
            any strides (channels_last included).
        boxes (Tensor[K, 5] or List[Tensor[L, 4]]): the boxes, as for :func:`roi_align`.
            Coordinates are rounded (half away from zero) after ``spatial_scale``.
        output_size (int or Tuple[int, int]): (height, width) of the output in bins.
        spatial_scale (float): maps box coordinates to input coordinates. Default: 1.0

    Returns:
        Tensor[K, C, output_size[0], output_size[1]]: the maximum of each bin (0 for a bin that
        covers no pixel), contiguous, of the input's dtype.
    """
    fn = "roi_pool"
    check_tensor(fn, "input", input, 4)
    pooled_h, pooled_w = _check_output_size(fn, output_size)
    scale = _check_spatial_scale(fn, spatial_scale)
    if input.shape[2] * input.shape[3] >= 2**31:
        raise ValueError(f"{fn}(): input has {input.shape[2]} x {input.shape[3]} pixels per "
                         "channel; the argmax of a bin is an int32 index into H * W, so H * W "
                         "must be below 2**31")
    rois = _rois(fn, input, boxes)
    output, _ = registry.call(pool_op.roi_pool, input, rois, scale, pooled_h, pooled_w)
    return output


def multi_level_roi_align(features: Sequence[Tensor], boxes: Boxes, levels: Tensor,
                          output_size: IntOrPair, scales: Sequence[float],
                          sampling_ratio: int = -1) -> Tensor:
    """RoIAlign of each box on the feature map of its level (FPN's multi-scale pooling, as in
    :class:`torchvision.ops.MultiScaleRoIAlign`).

    Every level pools every box, those of other levels with a batch index of -1, which the
    kernels skip (zeros, no gradient), and the levels' results are added: the same values as
    gathering each level's boxes, without reading ``levels`` on the host (no device sync, so
    it can be captured in a CUDA graph).

    Args:
        features (List[Tensor[N, C, H_l, W_l]]): one feature map per level.
        boxes (Tensor[K, 5] or List[Tensor[L, 4]]): as for :func:`roi_align`.
        levels (Tensor[K]): the level (index into ``features``) of each box, an integer tensor.
        output_size, sampling_ratio: as for :func:`roi_align` (``aligned`` is False).
        scales (List[float]): the spatial scale of each level.

    Returns:
        Tensor[K, C, output_size[0], output_size[1]], in the first level's dtype.
    """
    fn = "multi_level_roi_align"
    if len(features) != len(scales) or not features:
        raise ValueError(f"{fn}(): expected one scale per feature map, got {len(features)} "
                         f"feature maps and {len(scales)} scales")
    pooled_h, pooled_w = _check_output_size(fn, output_size)
    if not is_int(sampling_ratio):
        raise TypeError(f"{fn}(): sampling_ratio must be an int, got "
                        f"{type(sampling_ratio).__name__} {sampling_ratio!r}")
    for i, feature in enumerate(features):
        check_tensor(fn, f"features[{i}]", feature, 4)
    rois = _rois(fn, features[0], boxes)
    if not isinstance(levels, Tensor) or levels.shape != rois.shape[:1] \
            or levels.is_floating_point():
        raise ValueError(f"{fn}(): levels must be an integer Tensor[{rois.shape[0]}], one level "
                         f"per box, got {type(levels).__name__} "
                         f"{list(getattr(levels, 'shape', []))}")
    result = None
    for level, (feature, scale) in enumerate(zip(features, scales)):
        index = torch.where(levels == level, rois[:, 0], -1.0)
        level_rois = torch.cat([index.to(rois.dtype)[:, None], rois[:, 1:]], dim=1)
        pooled = registry.call(align_op.roi_align, feature, level_rois,
                               _check_spatial_scale(fn, scale), pooled_h, pooled_w,
                               int(sampling_ratio), False)
        # under autocast the levels may come in different dtypes; the result has the first's
        result = pooled if result is None else result + pooled.to(result.dtype)
    return result


__all__: List[str] = ["roi_align", "roi_pool", "multi_level_roi_align"]
