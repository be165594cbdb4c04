"""ResNet, ResNeXt, Wide ResNet and SE-ResNet(Xt) on fastconv's convolutions.

Module and parameter names are torchvision's (``conv1``, ``bn1``, ``layer1`` … ``layer4``, ``fc``;
``downsample`` inside the blocks), so a torchvision ``state_dict`` loads with ``strict=True`` and
pretrained torchvision weights work unchanged. The bottleneck is torchvision's "ResNet v1.5": the
stride sits on the 3×3 convolution, not on the first 1×1.

The SE variants (Hu et al., "Squeeze-and-Excitation Networks", 2018) add a squeeze-and-excitation
gate after the last batch norm of each bottleneck's residual branch, before the shortcut is added.
torchvision has no SE-ResNet, so those names (``se.fc1``, ``se.fc2``) are fastconv's own.
"""
from typing import Any, Callable, Dict, List, Optional, Type, Union

import torch
import torch.nn as nn
from torch import Tensor

from fastconv.models._registry import register_model
from fastconv.nn import Conv2d
from fastconv.models.init_weights import init_cnn_weights

__all__ = [
    "ResNet", "BasicBlock", "Bottleneck", "SEBottleneck", "SqueezeExcitation",
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d",
    "wide_resnet50_2", "wide_resnet101_2",
    "se_resnet50", "se_resnext50_32x4d",
]

NormLayer = Callable[[int], nn.Module]


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1,
            dilation: int = 1) -> Conv2d:
    """3×3 convolution without bias whose padding keeps the size (at stride 1)."""
    return Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=dilation,
                  groups=groups, bias=False, dilation=dilation)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> Conv2d:
    """1×1 convolution without bias."""
    return Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class SqueezeExcitation(nn.Module):
    """Squeeze-and-excitation gate: global average pool, a bottleneck of two 1×1 convolutions
    (ReLU between, sigmoid after), and a per-channel rescale of the input.

    Args:
        channels (int): channels of the input and of the gate.
        reduction (int): the bottleneck has ``channels // reduction`` channels (at least 1).

    Shape:
        input (Tensor[N, C, H, W]) -> output (Tensor[N, C, H, W]).
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        squeezed = max(channels // reduction, 1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = Conv2d(channels, squeezed, kernel_size=1)
        self.activation = nn.ReLU(inplace=True)
        self.fc2 = Conv2d(squeezed, channels, kernel_size=1)
        self.scale_activation = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        scale = self.avgpool(x)
        scale = self.activation(self.fc1(scale))
        scale = self.scale_activation(self.fc2(scale))
        return x * scale


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with a shortcut (ResNet-18/34).

    Args:
        inplanes (int): input channels.
        planes (int): output channels (``expansion`` is 1).
        stride (int): stride of the first convolution; ``downsample`` must match it.
        downsample (nn.Module, optional): maps the input to the shortcut's shape.
        groups, base_width: must be 1 and 64 (kept for a signature shared with ``Bottleneck``).
        dilation (int): must be 1.
        norm_layer (callable, optional): normalisation taking a channel count; ``BatchNorm2d``.

    Shape:
        input (Tensor[N, inplanes, H, W]) -> output (Tensor[N, planes, H / stride, W / stride]).
    """

    expansion: int = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: Optional[nn.Module] = None, groups: int = 1, base_width: int = 64,
                 dilation: int = 1, norm_layer: Optional[NormLayer] = None) -> None:
        super().__init__()
        if norm_layer is None:
            norm_layer = nn.BatchNorm2d
        if groups != 1 or base_width != 64:
            raise ValueError(f"BasicBlock needs groups=1 and base_width=64, got groups={groups}, "
                             f"base_width={base_width}")
        if dilation > 1:
            raise NotImplementedError("BasicBlock does not support dilation > 1")
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3 (grouped for ResNeXt, strided), 1×1 expand, with a shortcut
    (ResNet-50 and deeper, ResNeXt, Wide ResNet).

    The inner width is ``int(planes * base_width / 64) * groups``.

    Args:
        inplanes (int): input channels.
        planes (int): the block outputs ``planes * expansion`` (= 4 × planes) channels.
        stride (int): stride of the 3×3 convolution; ``downsample`` must match it.
        downsample (nn.Module, optional): maps the input to the shortcut's shape.
        groups (int): groups of the 3×3 convolution (cardinality).
        base_width (int): channels per group at ``planes == 64``.
        dilation (int): dilation of the 3×3 convolution.
        norm_layer (callable, optional): normalisation taking a channel count; ``BatchNorm2d``.

    Shape:
        input (Tensor[N, inplanes, H, W]) ->
        output (Tensor[N, 4 * planes, H / stride, W / stride]).
    """

    expansion: int = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: Optional[nn.Module] = None, groups: int = 1, base_width: int = 64,
                 dilation: int = 1, norm_layer: Optional[NormLayer] = None) -> None:
        super().__init__()
        if norm_layer is None:
            norm_layer = nn.BatchNorm2d
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = norm_layer(width)
        self.conv2 = conv3x3(width, width, stride, groups, dilation)
        self.bn2 = norm_layer(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def residual(self, x: Tensor) -> Tensor:
        """The residual branch, up to its last batch norm."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.residual(x)
        out += identity
        return self.relu(out)


class SEBottleneck(Bottleneck):
    """A :class:`Bottleneck` whose residual branch ends with a :class:`SqueezeExcitation` gate
    (reduction 16) on its ``4 * planes`` channels. Same arguments and shapes as ``Bottleneck``."""

    reduction: int = 16

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: Optional[nn.Module] = None, groups: int = 1, base_width: int = 64,
                 dilation: int = 1, norm_layer: Optional[NormLayer] = None) -> None:
        super().__init__(inplanes, planes, stride, downsample, groups, base_width, dilation,
                         norm_layer)
        self.se = SqueezeExcitation(planes * self.expansion, self.reduction)

    def residual(self, x: Tensor) -> Tensor:
        return self.se(super().residual(x))


Block = Union[BasicBlock, Bottleneck]


class ResNet(nn.Module):
    """ResNet ("Deep Residual Learning for Image Recognition", He et al. 2016) and its
    ResNeXt / Wide ResNet / SE variants, as in torchvision.models.ResNet.

    Args:
        block (type): ``BasicBlock``, ``Bottleneck`` or ``SEBottleneck``.
        layers (list of 4 ints): blocks in ``layer1`` … ``layer4``.
        num_classes (int): outputs of ``fc``.
        zero_init_residual (bool): start the last batch norm of every residual branch at zero,
            so that each block begins as the identity.
        groups (int): groups of the bottleneck's 3×3 convolutions (ResNeXt cardinality).
        width_per_group (int): channels per group of those convolutions at the first stage.
        replace_stride_with_dilation (list of 3 bools, optional): for ``layer2`` … ``layer4``,
            keep the resolution and dilate instead of striding.
        norm_layer (callable, optional): normalisation taking a channel count; ``BatchNorm2d``.

    Shape:
        input (Tensor[N, 3, H, W]) -> output (Tensor[N, num_classes]);
        ``forward_features``: Tensor[N, 512 * block.expansion, H / 32, W / 32] (rounded up).
    """

    def __init__(self, block: Type[Block], layers: List[int], num_classes: int = 1000,
                 zero_init_residual: bool = False, groups: int = 1, width_per_group: int = 64,
                 replace_stride_with_dilation: Optional[List[bool]] = None,
                 norm_layer: Optional[NormLayer] = None) -> None:
        super().__init__()
        if norm_layer is None:
            norm_layer = nn.BatchNorm2d
        if replace_stride_with_dilation is None:
            replace_stride_with_dilation = [False, False, False]
        if len(replace_stride_with_dilation) != 3:
            raise ValueError("replace_stride_with_dilation must be None or 3 booleans, got "
                             f"{replace_stride_with_dilation}")
        if len(layers) != 4:
            raise ValueError(f"layers must give the block count of 4 stages, got {layers}")
        self._norm_layer = norm_layer
        self.inplanes = 64
        self.dilation = 1
        self.groups = groups
        self.base_width = width_per_group

        self.conv1 = Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2,
                                       dilate=replace_stride_with_dilation[0])
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2,
                                       dilate=replace_stride_with_dilation[1])
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2,
                                       dilate=replace_stride_with_dilation[2])
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

        init_cnn_weights(self, linear_std=None, zero_conv_bias=False)
        # Goyal et al. 2017: residual branches that start at zero make every block the identity
        # at initialisation, which helps large-batch training.
        if zero_init_residual:
            for m in self.modules():
                last_bn = (m.bn3 if isinstance(m, Bottleneck) else
                           m.bn2 if isinstance(m, BasicBlock) else None)
                if last_bn is not None and last_bn.weight is not None:
                    nn.init.constant_(last_bn.weight, 0)

    def _make_layer(self, block: Type[Block], planes: int, blocks: int, stride: int = 1,
                    dilate: bool = False) -> nn.Sequential:
        norm_layer = self._norm_layer
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                norm_layer(planes * block.expansion),
            )
        # The first block changes the resolution and width; it keeps the previous dilation.
        layers = [block(self.inplanes, planes, stride, downsample, self.groups, self.base_width,
                        previous_dilation, norm_layer)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes, groups=self.groups,
                                base_width=self.base_width, dilation=self.dilation,
                                norm_layer=norm_layer))
        return nn.Sequential(*layers)

    def forward_features(self, x: Tensor) -> Tensor:
        """The stem and the four stages: Tensor[N, 3, H, W] -> Tensor[N, C, H', W'], the last
        feature map before global pooling."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)

    def forward(self, x: Tensor) -> Tensor:
        x = self.avgpool(self.forward_features(x))
        return self.fc(torch.flatten(x, 1))


def _set_fixed(kwargs: Dict[str, Any], builder: str, **fixed: Any) -> Dict[str, Any]:
    """Add the arguments that define a variant, refusing a conflicting value from the caller."""
    for key, value in fixed.items():
        if key in kwargs and kwargs[key] != value:
            raise ValueError(f"{builder}() fixes {key}={value!r}; got {key}={kwargs[key]!r}")
        kwargs[key] = value
    return kwargs


@register_model()
def resnet18(*, num_classes: int = 1000, **kwargs: Any) -> ResNet:
    """ResNet-18: ``BasicBlock`` × [2, 2, 2, 2] (11.7 M parameters at 1000 classes).

    Args:
        num_classes (int): outputs of the classifier.
        **kwargs: further arguments of :class:`ResNet`.
    """
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes=num_classes, **kwargs)


@register_model()
def resnet34(*, num_classes: int = 1000, **kwargs: Any) -> ResNet:
    """ResNet-34: ``BasicBlock`` × [3, 4, 6, 3] (21.8 M parameters). Arguments as
    :func:`resnet18`."""
    return ResNet(BasicBlock, [3, 4, 6, 3], num_classes=num_classes, **kwargs)


@register_model()
def resnet50(*, num_classes: int = 1000, **kwargs: Any) -> ResNet:
    """ResNet-50 (v1.5: stride on the 3×3): ``Bottleneck`` × [3, 4, 6, 3] (25.6 M parameters).
    Arguments as :func:`resnet18`."""
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes=num_classes, **kwargs)


@register_model()
def resnet101(*, num_classes: int = 1000, **kwargs: Any) -> ResNet:
    """ResNet-101: ``Bottleneck`` × [3, 4, 23, 3] (44.5 M parameters). Arguments as
    :func:`resnet18`."""
    return ResNet(Bottleneck, [3, 4, 23, 3], num_classes=num_classes, **kwargs)


@register_model()
def resnet152(*, num_classes: int = 1000, **kwargs: Any) -> ResNet:
    """ResNet-152: ``Bottleneck`` × [3, 8, 36, 3] (60.2 M parameters). Arguments as
    :func:`resnet18`."""
    return ResNet(Bottleneck, [3, 8, 36, 3], num_classes=num_classes, **kwargs)


@register_model()
def resnext50_32x4d(*, num_classes: int = 1000, **kwargs: Any) -> ResNet:
    """ResNeXt-50 32×4d (Xie et al. 2017): ResNet-50's layout with 32 groups of 4 channels in
    the first stage's 3×3 convolutions (25.0 M parameters). Arguments as :func:`resnet18`;
    ``groups`` and ``width_per_group`` are fixed."""
    kwargs = _set_fixed(kwargs, "resnext50_32x4d", groups=32, width_per_group=4)
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes=num_classes, **kwargs)


@register_model()
def resnext101_32x8d(*, num_classes: int = 1000, **kwargs: Any) -> ResNet:
    """ResNeXt-101 32×8d: ResNet-101's layout, 32 groups of 8 channels (88.8 M parameters).
    Arguments as :func:`resnext50_32x4d`."""
    kwargs = _set_fixed(kwargs, "resnext101_32x8d", groups=32, width_per_group=8)
    return ResNet(Bottleneck, [3, 4, 23, 3], num_classes=num_classes, **kwargs)


@register_model()
def resnext101_64x4d(*, num_classes: int = 1000, **kwargs: Any) -> ResNet:
    """ResNeXt-101 64×4d: ResNet-101's layout, 64 groups of 4 channels (83.5 M parameters).
    Arguments as :func:`resnext50_32x4d`."""
    kwargs = _set_fixed(kwargs, "resnext101_64x4d", groups=64, width_per_group=4)
    return ResNet(Bottleneck, [3, 4, 23, 3], num_classes=num_classes, **kwargs)


@register_model()
def wide_resnet50_2(*, num_classes: int = 1000, **kwargs: Any) -> ResNet:
    """Wide ResNet-50-2 (Zagoruyko and Komodakis 2016): ResNet-50 with bottlenecks twice as wide
    inside; the block outputs keep ResNet-50's widths (68.9 M parameters). Arguments as
    :func:`resnet18`; ``width_per_group`` is fixed."""
    kwargs = _set_fixed(kwargs, "wide_resnet50_2", width_per_group=64 * 2)
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes=num_classes, **kwargs)


@register_model()
def wide_resnet101_2(*, num_classes: int = 1000, **kwargs: Any) -> ResNet:
    """Wide ResNet-101-2: ResNet-101 with bottlenecks twice as wide inside (126.9 M
    parameters). Arguments as :func:`wide_resnet50_2`."""
    kwargs = _set_fixed(kwargs, "wide_resnet101_2", width_per_group=64 * 2)
    return ResNet(Bottleneck, [3, 4, 23, 3], num_classes=num_classes, **kwargs)


@register_model()
def se_resnet50(*, num_classes: int = 1000, **kwargs: Any) -> ResNet:
    """SE-ResNet-50 (Hu et al. 2018): ResNet-50 whose bottlenecks end with a
    squeeze-and-excitation gate, reduction 16 (28.1 M parameters). Arguments as
    :func:`resnet18`."""
    return ResNet(SEBottleneck, [3, 4, 6, 3], num_classes=num_classes, **kwargs)


@register_model()
def se_resnext50_32x4d(*, num_classes: int = 1000, **kwargs: Any) -> ResNet:
    """SE-ResNeXt-50 32×4d: ResNeXt-50 32×4d with the squeeze-and-excitation gate of
    :func:`se_resnet50` (27.6 M parameters). Arguments as :func:`resnext50_32x4d`."""
    kwargs = _set_fixed(kwargs, "se_resnext50_32x4d", groups=32, width_per_group=4)
    return ResNet(SEBottleneck, [3, 4, 6, 3], num_classes=num_classes, **kwargs)
