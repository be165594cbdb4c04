"""MobileNet v1 and MobileNetV2 on fastconv's convolutions.

MobileNetV2 has torchvision's module names (``features``, ``classifier``; ``InvertedResidual``
blocks holding a ``conv`` sequential; convolution-norm-activation triples numbered ``0``, ``1``,
``2`` like torchvision's ``Conv2dNormActivation``), so a torchvision ``state_dict`` loads with
``strict=True`` and pretrained torchvision weights work unchanged. torchvision has no MobileNet v1;
its names here (``features``, ``depthwise``, ``pointwise``, ``classifier``) are fastconv's own.

References:
    - Howard, Zhu, Chen, Kalenichenko, Wang, Weyand, Andreetto, Adam. *MobileNets: Efficient
      convolutional neural networks for mobile vision applications*. arXiv:1704.04861, 2017.
    - Sandler, Howard, Zhu, Zhmoginov, Chen. *MobileNetV2: Inverted residuals and linear
      bottlenecks*. CVPR 2018.
"""
from typing import Any, Callable, List, Optional, Sequence

import torch
import torch.nn as nn
from torch import Tensor

from fastconv.models._registry import register_model
from fastconv.nn import Conv2d
from fastconv.models.init_weights import init_cnn_weights

__all__ = ["Conv2dNormActivation", "DepthwiseSeparable", "MobileNetV1", "InvertedResidual",
           "MobileNetV2", "mobilenet_v1", "mobilenet_v2", "make_divisible"]

NormLayer = Callable[[int], nn.Module]


def make_divisible(value: float, divisor: int, min_value: Optional[int] = None) -> int:
    """Round a channel count to the nearest multiple of ``divisor`` (at least ``min_value``,
    default ``divisor``), going up one step if rounding lost more than 10%. This is the rule of
    the TensorFlow MobileNet reference code, which torchvision follows, so widths agree with
    torchvision's for every ``width_mult``."""
    if min_value is None:
        min_value = divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class Conv2dNormActivation(nn.Sequential):
    """Convolution, normalisation, activation, as children ``0``, ``1``, ``2``.

    The padding keeps the size at stride 1 (``(kernel_size - 1) // 2 * dilation``). The
    convolution has a bias only when there is no normalisation layer.

    Args:
        in_channels (int): input channels.
        out_channels (int): output channels.
        kernel_size (int): square kernel side. Default: 3.
        stride (int): stride of the convolution. Default: 1.
        groups (int): groups of the convolution (``in_channels`` for a depthwise one). Default: 1.
        norm_layer (callable, optional): normalisation taking a channel count, or ``None`` for
            none. Default: ``BatchNorm2d``.
        activation_layer (callable, optional): activation module class (built with
            ``inplace=True``), or ``None`` for none. Default: ``ReLU``.
        dilation (int): dilation of the convolution. Default: 1.

    Shape:
        input (Tensor[N, in_channels, H, W]) ->
        output (Tensor[N, out_channels, ceil(H / stride), ceil(W / stride)]) for odd kernels.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 stride: int = 1, groups: int = 1,
                 norm_layer: Optional[NormLayer] = nn.BatchNorm2d,
                 activation_layer: Optional[Callable[..., nn.Module]] = nn.ReLU,
                 dilation: int = 1) -> None:
        padding = (kernel_size - 1) // 2 * dilation
        layers: List[nn.Module] = [
            Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation=dilation,
                   groups=groups, bias=norm_layer is None)
        ]
        if norm_layer is not None:
            layers.append(norm_layer(out_channels))
        if activation_layer is not None:
            layers.append(activation_layer(inplace=True))
        super().__init__(*layers)
        self.out_channels = out_channels


# --------------------------------------------------------------------------------- MobileNet v1
class DepthwiseSeparable(nn.Module):
    """MobileNet v1's building block: a 3×3 depthwise convolution (carrying the stride) and a 1×1
    pointwise convolution, each followed by batch norm and ReLU (Fig. 3 of the paper).

    Args:
        in_channels (int): input channels.
        out_channels (int): output channels.
        stride (int): stride of the depthwise convolution, 1 or 2.
        norm_layer (callable, optional): normalisation taking a channel count; ``BatchNorm2d``.

    Shape:
        input (Tensor[N, in_channels, H, W]) ->
        output (Tensor[N, out_channels, ceil(H / stride), ceil(W / stride)]).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int,
                 norm_layer: Optional[NormLayer] = None) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        norm_layer = norm_layer or nn.BatchNorm2d
        self.depthwise = Conv2dNormActivation(in_channels, in_channels, 3, stride,
                                              groups=in_channels, norm_layer=norm_layer)
        self.pointwise = Conv2dNormActivation(in_channels, out_channels, 1,
                                              norm_layer=norm_layer)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise(self.depthwise(x))


class MobileNetV1(nn.Module):
    """MobileNet v1 (Howard et al. 2017, Table 1): a full 3×3 stride-2 convolution with 32
    filters, then 13 depthwise separable blocks (64, 128, 128, 256, 256, 512 ×6, 1024, 1024;
    stride 2 at the 2nd, 4th, 6th and 12th), global average pooling and a linear classifier.

    The width multiplier ``alpha`` thins every layer: ``max(int(c * alpha), 8)`` channels, as the
    TensorFlow reference implementation does (``min_depth=8``). At ``width_mult=1`` the network
    has 4.2 M parameters (1000 classes). The last block has stride 1 (Table 1 of the paper lists
    stride 2, but its output is 7×7 like its input).

    Args:
        num_classes (int): outputs of the classifier. Default: 1000.
        width_mult (float): the width multiplier ``alpha``. Default: 1.0.
        dropout (float): dropout probability before the classifier (the paper gives none; 0.2
            as torchvision's MobileNetV2). Default: 0.2.
        norm_layer (callable, optional): normalisation taking a channel count; ``BatchNorm2d``.

    Shape:
        input (Tensor[N, 3, H, W]) -> output (Tensor[N, num_classes]);
        ``forward_features``: Tensor[N, max(int(1024 * width_mult), 8), ceil(H / 32),
        ceil(W / 32)].
    """

    # (output channels, stride) of the depthwise separable blocks
    cfg: Sequence[tuple] = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
                            (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2),
                            (1024, 1))

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.2,
                 norm_layer: Optional[NormLayer] = None) -> None:
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be positive, got {width_mult}")
        norm_layer = norm_layer or nn.BatchNorm2d

        def width(channels: int) -> int:
            return max(int(channels * width_mult), 8)

        in_channels = width(32)
        layers: List[nn.Module] = [Conv2dNormActivation(3, in_channels, 3, stride=2,
                                                        norm_layer=norm_layer)]
        for channels, stride in self.cfg:
            layers.append(DepthwiseSeparable(in_channels, width(channels), stride, norm_layer))
            in_channels = width(channels)
        self.features = nn.Sequential(*layers)
        self.last_channel = in_channels
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout),
                                        nn.Linear(self.last_channel, num_classes))

        init_cnn_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        """Args:
            x (Tensor[N, 3, H, W]): the images.

        Returns:
            Tensor[N, C, ceil(H / 32), ceil(W / 32)]: the output of the last block.
        """
        return self.features(x)

    def forward(self, x: Tensor) -> Tensor:
        """Args:
            x (Tensor[N, 3, H, W]): the images.

        Returns:
            Tensor[N, num_classes]: the class scores (logits).
        """
        x = self.avgpool(self.forward_features(x))
        return self.classifier(torch.flatten(x, 1))


# --------------------------------------------------------------------------------- MobileNetV2
class InvertedResidual(nn.Module):
    """MobileNetV2's inverted residual block: a 1×1 expansion (skipped when ``expand_ratio`` is
    1) with ReLU6, a 3×3 depthwise convolution carrying the stride with ReLU6, and a linear 1×1
    projection; the input is added back when the shapes agree (stride 1, same width).

    Children of ``conv`` (torchvision's numbering): ``0`` expansion, ``1`` depthwise, ``2``
    projection convolution, ``3`` its batch norm; without expansion ``0`` is the depthwise one.

    Args:
        inp (int): input channels.
        oup (int): output channels.
        stride (int): stride of the depthwise convolution, 1 or 2.
        expand_ratio (float): hidden width over input width.
        norm_layer (callable, optional): normalisation taking a channel count; ``BatchNorm2d``.

    Shape:
        input (Tensor[N, inp, H, W]) -> output (Tensor[N, oup, ceil(H / stride), ceil(W / stride)]).
    """

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: float,
                 norm_layer: Optional[NormLayer] = None) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        norm_layer = norm_layer or nn.BatchNorm2d
        self.stride = stride
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup

        layers: List[nn.Module] = []
        if expand_ratio != 1:
            layers.append(Conv2dNormActivation(inp, hidden, 1, norm_layer=norm_layer,
                                               activation_layer=nn.ReLU6))
        layers += [
            Conv2dNormActivation(hidden, hidden, 3, stride, groups=hidden, norm_layer=norm_layer,
                                 activation_layer=nn.ReLU6),
            # the projection is linear: a ReLU on the narrow output would destroy information
            Conv2d(hidden, oup, 1, bias=False),
            norm_layer(oup),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = oup

    def forward(self, x: Tensor) -> Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 (Sandler et al. 2018), as torchvision.models.MobileNetV2.

    Layout (Table 2 of the paper): a 3×3 stride-2 convolution with 32 filters, 17 inverted
    residual blocks in 7 groups given by ``inverted_residual_setting`` rows ``[t, c, n, s]``
    (expansion, output channels, repeats, stride of the first), a 1×1 convolution to 1280
    channels, global average pooling, dropout and a linear classifier. 3.5 M parameters at
    ``width_mult=1`` and 1000 classes.

    Args:
        num_classes (int): outputs of the classifier. Default: 1000.
        width_mult (float): multiplies every width (the last one only when > 1). Default: 1.0.
        inverted_residual_setting (list of [t, c, n, s], optional): the block groups.
        round_nearest (int): widths are rounded to multiples of this (1: no rounding).
            Default: 8.
        block (callable, optional): the block class; ``InvertedResidual``.
        norm_layer (callable, optional): normalisation taking a channel count; ``BatchNorm2d``.
        dropout (float): dropout probability before the classifier. Default: 0.2.

    Shape:
        input (Tensor[N, 3, H, W]) -> output (Tensor[N, num_classes]);
        ``forward_features``: Tensor[N, last_channel, ceil(H / 32), ceil(W / 32)].
    """

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0,
                 inverted_residual_setting: Optional[List[List[int]]] = None,
                 round_nearest: int = 8, block: Optional[Callable[..., nn.Module]] = None,
                 norm_layer: Optional[NormLayer] = None, dropout: float = 0.2) -> None:
        super().__init__()
        block = block or InvertedResidual
        norm_layer = norm_layer or nn.BatchNorm2d
        if inverted_residual_setting is None:
            inverted_residual_setting = [
                # t, c, n, s
                [1, 16, 1, 1],
                [6, 24, 2, 2],
                [6, 32, 3, 2],
                [6, 64, 4, 2],
                [6, 96, 3, 1],
                [6, 160, 3, 2],
                [6, 320, 1, 1],
            ]
        if not inverted_residual_setting or any(len(row) != 4 for row in inverted_residual_setting):
            raise ValueError("inverted_residual_setting must be a non-empty list of [t, c, n, s] "
                             f"rows, got {inverted_residual_setting}")

        input_channel = make_divisible(32 * width_mult, round_nearest)
        self.last_channel = make_divisible(1280 * max(1.0, width_mult), round_nearest)
        features: List[nn.Module] = [
            Conv2dNormActivation(3, input_channel, 3, stride=2, norm_layer=norm_layer,
                                 activation_layer=nn.ReLU6)
        ]
        for t, c, n, s in inverted_residual_setting:
            output_channel = make_divisible(c * width_mult, round_nearest)
            for i in range(n):
                features.append(block(input_channel, output_channel, s if i == 0 else 1,
                                      expand_ratio=t, norm_layer=norm_layer))
                input_channel = output_channel
        features.append(Conv2dNormActivation(input_channel, self.last_channel, 1,
                                             norm_layer=norm_layer, activation_layer=nn.ReLU6))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout),
                                        nn.Linear(self.last_channel, num_classes))

        # torchvision's MobileNetV2 leaves kaiming's default nonlinearity (leaky_relu, a=0):
        # the same gain, sqrt(2), as relu
        init_cnn_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        """Args:
            x (Tensor[N, 3, H, W]): the images.

        Returns:
            Tensor[N, last_channel, ceil(H / 32), ceil(W / 32)]: the output of ``features``.
        """
        return self.features(x)

    def forward(self, x: Tensor) -> Tensor:
        """Args:
            x (Tensor[N, 3, H, W]): the images.

        Returns:
            Tensor[N, num_classes]: the class scores (logits).
        """
        x = nn.functional.adaptive_avg_pool2d(self.forward_features(x), 1)
        return self.classifier(torch.flatten(x, 1))


@register_model()
def mobilenet_v1(*, num_classes: int = 1000, **kwargs: Any) -> MobileNetV1:
    """MobileNet v1 (4.2 M parameters at ``width_mult=1``; 0.47 M at 0.25 with 1000 classes).

    Args:
        num_classes (int): outputs of the classifier.
        **kwargs: further arguments of :class:`MobileNetV1` (``width_mult``, ``dropout``, ...).
    """
    return MobileNetV1(num_classes=num_classes, **kwargs)


@register_model()
def mobilenet_v2(*, num_classes: int = 1000, **kwargs: Any) -> MobileNetV2:
    """MobileNetV2, as ``torchvision.models.mobilenet_v2`` (3.5 M parameters).

    Args:
        num_classes (int): outputs of the classifier.
        **kwargs: further arguments of :class:`MobileNetV2` (``width_mult``, ``dropout``, ...).
    """
    return MobileNetV2(num_classes=num_classes, **kwargs)
