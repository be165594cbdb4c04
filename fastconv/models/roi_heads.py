"""Region heads of two-stage detectors on fastconv's RoI poolers: Fast R-CNN's box head on
:class:`fastconv.nn.RoIPool` and Mask R-CNN's mask head on :class:`fastconv.nn.RoIAlign`.

Both read one backbone feature map and a set of boxes in image coordinates; ``spatial_scale``
maps those to the feature map (1/16 for a stride-16 backbone such as VGG-16's conv5_3 or
ResNet's conv4). Boxes come as ``Tensor[K, 5]`` rows ``(batch_index, x1, y1, x2, y2)`` or as a
list with one ``Tensor[L, 4]`` of ``(x1, y1, x2, y2)`` rows per image, as torchvision.ops takes
them.

References:
    - Girshick. *Fast R-CNN*. ICCV 2015.
    - He, Gkioxari, Dollár, Girshick. *Mask R-CNN*. ICCV 2017.
"""
from collections import OrderedDict
from typing import Any, List, Sequence, Tuple, Union

import torch
import torch.nn as nn
from torch import Tensor

from fastconv.models._registry import register_model
from fastconv.nn import Conv2d, ConvTranspose2d, RoIAlign, RoIPool

__all__ = ["FastRCNNBoxHead", "MaskRCNNMaskHead", "fast_rcnn_box_head", "mask_rcnn_mask_head"]

Boxes = Union[Tensor, List[Tensor]]


class FastRCNNBoxHead(nn.Module):
    """Fast R-CNN's head (Girshick 2015, Fig. 1): RoI max pooling to 7×7, two fully-connected
    layers (``fc6``, ``fc7``; ReLU and dropout after each), then a classifier ``cls_score``
    (one score per class, background included) and a per-class box regressor ``bbox_pred``.

    Args:
        in_channels (int): channels of the feature map.
        num_classes (int): classes, background included.
        spatial_scale (float): feature-map pixels per image pixel. Default: 1/16.
        output_size (int): side of the pooled grid. Default: 7.
        representation_size (int): width of ``fc6`` and ``fc7``. Default: 4096.
        dropout (float): dropout probability after ``fc6`` and ``fc7``. Default: 0.5.

    Shape:
        features (Tensor[N, in_channels, H, W]), boxes (Tensor[K, 5] or list of Tensor[L_i, 4])
        -> (class scores Tensor[K, num_classes], box deltas Tensor[K, 4 * num_classes]);
        ``forward_features``: Tensor[K, in_channels, output_size, output_size].
    """

    def __init__(self, in_channels: int, num_classes: int, spatial_scale: float = 1 / 16,
                 output_size: int = 7, representation_size: int = 4096,
                 dropout: float = 0.5) -> None:
        super().__init__()
        self.roi_pool = RoIPool(output_size, spatial_scale)
        self.fc6 = nn.Linear(in_channels * output_size * output_size, representation_size)
        self.fc7 = nn.Linear(representation_size, representation_size)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(p=dropout)
        self.cls_score = nn.Linear(representation_size, num_classes)
        self.bbox_pred = nn.Linear(representation_size, 4 * num_classes)
        # the paper's initialisation of the two new output layers
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward_features(self, features: Tensor, boxes: Boxes) -> Tensor:
        """Args:
            features (Tensor[N, in_channels, H, W]): the backbone's feature map.
            boxes (Tensor[K, 5] or list of Tensor[L_i, 4]): the regions, in image coordinates.

        Returns:
            Tensor[K, in_channels, output_size, output_size]: the pooled regions.
        """
        return self.roi_pool(features, boxes)

    def forward(self, features: Tensor, boxes: Boxes) -> Tuple[Tensor, Tensor]:
        """Args:
            features (Tensor[N, in_channels, H, W]): the backbone's feature map.
            boxes (Tensor[K, 5] or list of Tensor[L_i, 4]): the regions, in image coordinates.

        Returns:
            (Tensor[K, num_classes], Tensor[K, 4 * num_classes]): class scores (logits) and
            box regression deltas for every class.
        """
        x = torch.flatten(self.forward_features(features, boxes), 1)
        x = self.dropout(self.relu(self.fc6(x)))
        x = self.dropout(self.relu(self.fc7(x)))
        return self.cls_score(x), self.bbox_pred(x)


class MaskRCNNMaskHead(nn.Module):
    """Mask R-CNN's mask branch (He et al. 2017, Fig. 4 right): RoIAlign to 14×14 (2×2 samples
    per bin, pixel-aligned), four 3×3 convolutions with ReLU (``mask_head``), a 2×2 stride-2
    transposed convolution with ReLU (``conv5_mask``) and a 1×1 convolution to one mask logit
    map per class (``mask_logits``).

    Args:
        in_channels (int): channels of the feature map.
        num_classes (int): classes, background included.
        spatial_scale (float): feature-map pixels per image pixel. Default: 1/16.
        output_size (int): side of the RoIAlign grid; the masks have twice that. Default: 14.
        sampling_ratio (int): samples per bin side in RoIAlign. Default: 2.
        layers (sequence of int): widths of the 3×3 convolutions. Default: (256,) * 4.
        dim_reduced (int): width of the transposed convolution. Default: 256.

    Shape:
        features (Tensor[N, in_channels, H, W]), boxes (Tensor[K, 5] or list of Tensor[L_i, 4])
        -> mask logits Tensor[K, num_classes, 2 * output_size, 2 * output_size];
        ``forward_features``: Tensor[K, layers[-1], output_size, output_size].
    """

    def __init__(self, in_channels: int, num_classes: int, spatial_scale: float = 1 / 16,
                 output_size: int = 14, sampling_ratio: int = 2,
                 layers: Sequence[int] = (256, 256, 256, 256), dim_reduced: int = 256) -> None:
        super().__init__()
        self.mask_roi_pool = RoIAlign(output_size, spatial_scale, sampling_ratio, aligned=True)
        convs: "OrderedDict[str, nn.Module]" = OrderedDict()
        c_in = in_channels
        for i, width in enumerate(layers, start=1):
            convs[f"mask_fcn{i}"] = Conv2d(c_in, width, 3, padding=1)
            convs[f"relu{i}"] = nn.ReLU(inplace=True)
            c_in = width
        self.mask_head = nn.Sequential(convs)
        self.conv5_mask = ConvTranspose2d(c_in, dim_reduced, 2, stride=2)
        self.relu = nn.ReLU(inplace=True)
        self.mask_logits = Conv2d(dim_reduced, num_classes, 1)

        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward_features(self, features: Tensor, boxes: Boxes) -> Tensor:
        """Args:
            features (Tensor[N, in_channels, H, W]): the backbone's feature map.
            boxes (Tensor[K, 5] or list of Tensor[L_i, 4]): the regions, in image coordinates.

        Returns:
            Tensor[K, layers[-1], output_size, output_size]: the pooled regions after the four
            convolutions.
        """
        return self.mask_head(self.mask_roi_pool(features, boxes))

    def forward(self, features: Tensor, boxes: Boxes) -> Tensor:
        """Args:
            features (Tensor[N, in_channels, H, W]): the backbone's feature map.
            boxes (Tensor[K, 5] or list of Tensor[L_i, 4]): the regions, in image coordinates.

        Returns:
            Tensor[K, num_classes, 2 * output_size, 2 * output_size]: mask logits per class.
        """
        x = self.relu(self.conv5_mask(self.forward_features(features, boxes)))
        return self.mask_logits(x)


@register_model()
def fast_rcnn_box_head(*, num_classes: int = 21, in_channels: int = 512,
                       **kwargs: Any) -> FastRCNNBoxHead:
    """Fast R-CNN's box head for VGG-16's conv5_3 (512 channels, stride 16) and PASCAL VOC's
    20 classes plus background.

    Args:
        num_classes (int): classes, background included.
        in_channels (int): channels of the feature map.
        **kwargs: further arguments of :class:`FastRCNNBoxHead`.
    """
    return FastRCNNBoxHead(in_channels, num_classes, **kwargs)


@register_model()
def mask_rcnn_mask_head(*, num_classes: int = 91, in_channels: int = 256,
                        **kwargs: Any) -> MaskRCNNMaskHead:
    """Mask R-CNN's mask head for a 256-channel stride-16 feature map and COCO's classes as
    torchvision numbers them (91, background included).

    Args:
        num_classes (int): classes, background included.
        in_channels (int): channels of the feature map.
        **kwargs: further arguments of :class:`MaskRCNNMaskHead`.
    """
    return MaskRCNNMaskHead(in_channels, num_classes, **kwargs)
