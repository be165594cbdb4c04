"""``fastconv.RoIAlign``, ``RoIPool`` and ``MultiScaleRoIAlign``: torchvision's RoI modules
computed by fastconv's kernels.

Each is a subclass of its torchvision module with no constructor of its own, so it has the same
constructor, attributes and ``repr``, and ``fastconv.convert`` can swap a torchvision instance's
class in place.
"""
import math
from typing import Union

import torch
import torchvision.ops as tvops
from torch import Tensor
from torchvision.ops.poolers import LevelMapper

from fastconv import functional as FC
from fastconv.functional.roi import boxes_to_rois


def _qualified_repr(module, cls, text: str) -> str:
    """torchvision's repr with ``fastconv.`` before the class name (a user's subclass keeps its
    own)."""
    return f"fastconv.{text}" if type(module) is cls else text


class RoIAlign(tvops.RoIAlign):
    """
    See :func:`fastconv.functional.roi_align`.
    """

    def __repr__(self) -> str:
        return _qualified_repr(self, RoIAlign, super().__repr__())

    def forward(self, input: Tensor, rois: Union[Tensor, list[Tensor]]) -> Tensor:
        return FC.roi_align(input, rois, self.output_size, self.spatial_scale,
                            self.sampling_ratio, self.aligned)


class RoIPool(tvops.RoIPool):
    """
    See :func:`fastconv.functional.roi_pool`.
    """

    def __repr__(self) -> str:
        return _qualified_repr(self, RoIPool, super().__repr__())

    def forward(self, input: Tensor, rois: Union[Tensor, list[Tensor]]) -> Tensor:
        return FC.roi_pool(input, rois, self.output_size, self.spatial_scale)


class MultiScaleRoIAlign(tvops.MultiScaleRoIAlign):
    """Multi-scale RoIAlign for feature pyramids, as :class:`torchvision.ops.MultiScaleRoIAlign`
    (same constructor, attributes and results) with every level pooled by
    :func:`fastconv.functional.roi_align`.

    Each box is pooled from the pyramid level given by eq. 1 of the FPN paper,
    ``floor(canonical_level + log2(sqrt(area) / canonical_scale))`` clamped to the levels present.
    The scales of the levels and the level mapper are inferred on the first forward (from the
    largest image shape) and kept in ``scales`` and ``map_levels``.

    Args:
        featmap_names (List[str]): the names of the feature maps used for the pooling.
        output_size (List[Tuple[int, int]] or List[int]): output size of the pooled region.
        sampling_ratio (int): sampling ratio of RoIAlign.
        canonical_scale (int, optional): box side length mapped to ``canonical_level``.
        canonical_level (int, optional): pyramid level of a ``canonical_scale``-sized box.
    """

    def __repr__(self) -> str:
        return _qualified_repr(self, MultiScaleRoIAlign, super().__repr__())

    def forward(self, x: dict[str, Tensor], boxes: list[Tensor],
                image_shapes: list[tuple[int, int]]) -> Tensor:
        """
        Args:
            x (OrderedDict[Tensor]): feature maps ``Tensor[N, C, H_l, W_l]`` of each level, all
                with the same number of channels; the levels are taken in the dict's order.
            boxes (List[Tensor[L, 4]]): boxes of each image, (x1, y1, x2, y2) in image
                coordinates, ``0 <= x1 < x2`` and ``0 <= y1 < y2``.
            image_shapes (List[Tuple[height, width]]): image sizes before the backbone; they
                give the scale of each level.

        Returns:
            Tensor[K, C, output_size[0], output_size[1]]: one pooled region per box, in the
            order of ``torch.cat(boxes)``.
        """
        features = [v for k, v in x.items() if k in self.featmap_names]
        if not features:
            raise ValueError(f"MultiScaleRoIAlign: none of featmap_names={self.featmap_names} "
                             f"is a key of the feature dict (keys: {list(x)})")
        if self.scales is None or self.map_levels is None:
            self.scales, self.map_levels = _infer_scales_and_mapper(
                features, image_shapes, self.canonical_scale, self.canonical_level)
        rois = boxes_to_rois(boxes)

        if len(features) == 1:
            return FC.roi_align(features[0], rois, self.output_size, self.scales[0],
                                self.sampling_ratio)

        levels = _map_to_levels(torch.cat(boxes, dim=0), self.map_levels)
        return FC.multi_level_roi_align(features, rois, levels, self.output_size, self.scales,
                                        self.sampling_ratio)


def _infer_scales_and_mapper(features: list[Tensor], image_shapes: list[tuple[int, int]],
                             canonical_scale: int, canonical_level: int):
    """Scale of each level, a power of two from its height over the largest image height, and the
    level mapper spanning the first to the last level."""
    if not image_shapes:
        raise ValueError("images list should not be empty")
    max_height = max(int(shape[0]) for shape in image_shapes)
    scales = []
    for feature in features:
        # the ratio is rounded in float32 (as torchvision does), so both pick the same power
        exponent = torch.tensor(float(feature.shape[-2]) / float(max_height)).log2().round()
        scales.append(2 ** float(exponent))
    k_min = int(-math.log2(scales[0]))
    k_max = int(-math.log2(scales[-1]))
    # torchvision's LevelMapper holds the parameters, so ``map_levels`` is the object torchvision
    # code expects; the mapping itself is _map_to_levels
    mapper = LevelMapper(k_min, k_max, canonical_scale=canonical_scale,
                         canonical_level=canonical_level)
    return scales, mapper


def _map_to_levels(boxes: Tensor, mapper: LevelMapper) -> Tensor:
    """FPN eq. 1: index (from 0 = first level) of the level each box of ``Tensor[K, 4]`` is
    pooled from."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    side = torch.sqrt(area)
    eps = torch.tensor(mapper.eps, dtype=side.dtype)
    level = torch.floor(mapper.lvl0 + torch.log2(side / mapper.s0) + eps)
    level = torch.clamp(level, min=mapper.k_min, max=mapper.k_max)
    return level.to(torch.int64) - mapper.k_min
