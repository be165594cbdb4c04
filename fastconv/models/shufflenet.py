"""ShuffleNet (v1, with group 1×1 convolutions) and ShuffleNet V2 on fastconv's convolutions.

ShuffleNet V2 has torchvision's module names (``conv1``, ``maxpool``, ``stage2`` … ``stage4``,
``conv5``, ``fc``; blocks with ``branch1`` and ``branch2``), so a torchvision ``state_dict``
loads with ``strict=True`` and pretrained torchvision weights work unchanged. torchvision has no
ShuffleNet v1; it uses the same stage names, and its units name their layers ``compress``,
``depthwise`` and ``expand``.

References:
    - Zhang, Zhou, Lin, Sun. *ShuffleNet: An extremely efficient convolutional neural network
      for mobile devices*. CVPR 2018 (arXiv:1707.01083, 2017).
    - Ma, Zhang, Zheng, Sun. *ShuffleNet V2: Practical guidelines for efficient CNN architecture
      design*. ECCV 2018.
"""
from typing import Any, Dict, List, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from fastconv.models._registry import register_model
from fastconv.nn import Conv2d
from fastconv.models.init_weights import init_cnn_weights

__all__ = ["channel_shuffle", "ShuffleUnit", "ShuffleNetV1", "InvertedResidual", "ShuffleNetV2",
           "shufflenet_v1_g3", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5",
           "shufflenet_v2_x2_0"]


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """Interleave the channels of ``groups`` groups, so that the next group convolution sees
    channels from every group of the previous one.

    Args:
        x (Tensor[N, C, H, W]): C divisible by ``groups``.
        groups (int): the number of groups.

    Returns:
        Tensor[N, C, H, W]: channel ``g * (C / groups) + i`` of the input is channel
        ``i * groups + g`` of the output.
    """
    n, c, h, w = x.shape
    x = x.view(n, groups, c // groups, h, w).transpose(1, 2)
    return x.reshape(n, c, h, w)


# --------------------------------------------------------------------------------- ShuffleNet v1
class ShuffleUnit(nn.Module):
    """ShuffleNet v1's unit (Fig. 2 b/c of the paper): a group 1×1 convolution to the bottleneck
    width with batch norm and ReLU, a channel shuffle, a 3×3 depthwise convolution carrying the
    stride with batch norm (no ReLU), a group 1×1 convolution with batch norm; then at stride 1
    the input is added, at stride 2 a 3×3 stride-2 average pooling of the input is concatenated;
    a ReLU ends the unit.

    The bottleneck has a quarter of ``out_channels``. At stride 2 the branch produces
    ``out_channels - in_channels`` channels, so the concatenation has ``out_channels``.

    Args:
        in_channels (int): input channels.
        out_channels (int): output channels.
        stride (int): 1 (``in_channels == out_channels``) or 2.
        groups (int): groups of the 1×1 convolutions.
        group_first (bool): whether the first 1×1 convolution is grouped (the paper does not
            group it in the first unit of stage 2, whose input has only 24 channels).

    Shape:
        input (Tensor[N, in_channels, H, W]) ->
        output (Tensor[N, out_channels, ceil(H / stride), ceil(W / stride)]).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, groups: int,
                 group_first: bool = True) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        if stride == 1 and in_channels != out_channels:
            raise ValueError(f"a stride-1 unit adds its input, so in_channels ({in_channels}) "
                             f"must equal out_channels ({out_channels})")
        self.stride = stride
        self.first_groups = groups if group_first else 1
        mid = out_channels // 4
        branch_out = out_channels - in_channels if stride == 2 else out_channels
        if mid % groups or branch_out % groups or in_channels % self.first_groups:
            raise ValueError(f"groups={groups} must divide the unit's widths (in {in_channels}, "
                             f"bottleneck {mid}, out {branch_out})")
        self.compress = nn.Sequential(
            Conv2d(in_channels, mid, 1, groups=self.first_groups, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
        )
        self.depthwise = nn.Sequential(
            Conv2d(mid, mid, 3, stride=stride, padding=1, groups=mid, bias=False),
            nn.BatchNorm2d(mid),
        )
        self.expand = nn.Sequential(
            Conv2d(mid, branch_out, 1, groups=groups, bias=False),
            nn.BatchNorm2d(branch_out),
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.compress(x)
        if self.first_groups > 1:
            out = channel_shuffle(out, self.first_groups)
        out = self.expand(self.depthwise(out))
        if self.stride == 1:
            return F.relu(x + out)
        shortcut = F.avg_pool2d(x, kernel_size=3, stride=2, padding=1)
        return F.relu(torch.cat((shortcut, out), dim=1))


class ShuffleNetV1(nn.Module):
    """ShuffleNet v1 1× (Zhang et al. 2017, Table 1): a 3×3 stride-2 convolution with 24
    filters, 3×3 stride-2 max pooling, stages 2–4 of 4, 8 and 4 :class:`ShuffleUnit` s (the
    first of each with stride 2), global average pooling and a linear classifier.

    Args:
        groups (int): groups of the 1×1 convolutions, one of 1, 2, 3, 4, 8; it sets the stage
            widths (240, 480, 960 for 3 groups). Default: 3.
        num_classes (int): outputs of the classifier. Default: 1000.
        stages_repeats (list of 3 ints): units per stage. Default: [4, 8, 4].

    Shape:
        input (Tensor[N, 3, H, W]) -> output (Tensor[N, num_classes]);
        ``forward_features``: Tensor[N, C4, ceil(H / 32), ceil(W / 32)] (C4 = 960 for 3 groups).
    """

    stage2_channels: Dict[int, int] = {1: 144, 2: 200, 3: 240, 4: 272, 8: 384}

    def __init__(self, groups: int = 3, num_classes: int = 1000,
                 stages_repeats: Sequence[int] = (4, 8, 4)) -> None:
        super().__init__()
        if groups not in self.stage2_channels:
            raise ValueError(f"groups must be one of {sorted(self.stage2_channels)}, got {groups}")
        if len(stages_repeats) != 3:
            raise ValueError(f"stages_repeats must give 3 unit counts, got {stages_repeats}")
        self.groups = groups
        stem = 24
        self.conv1 = nn.Sequential(
            Conv2d(3, stem, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(stem),
            nn.ReLU(inplace=True),
        )
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        self.stage2: nn.Sequential
        self.stage3: nn.Sequential
        self.stage4: nn.Sequential
        in_channels = stem
        for i, repeats in enumerate(stages_repeats):
            out_channels = self.stage2_channels[groups] * 2 ** i
            units = [ShuffleUnit(in_channels, out_channels, 2, groups, group_first=i > 0)]
            units += [ShuffleUnit(out_channels, out_channels, 1, groups)
                      for _ in range(repeats - 1)]
            setattr(self, f"stage{i + 2}", nn.Sequential(*units))
            in_channels = out_channels
        self.last_channel = in_channels
        self.fc = nn.Linear(in_channels, num_classes)

        init_cnn_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        """Args:
            x (Tensor[N, 3, H, W]): the images.

        Returns:
            Tensor[N, C4, ceil(H / 32), ceil(W / 32)]: the output of ``stage4``.
        """
        x = self.maxpool(self.conv1(x))
        x = self.stage2(x)
        x = self.stage3(x)
        return self.stage4(x)

    def forward(self, x: Tensor) -> Tensor:
        """Args:
            x (Tensor[N, 3, H, W]): the images.

        Returns:
            Tensor[N, num_classes]: the class scores (logits).
        """
        return self.fc(self.forward_features(x).mean((2, 3)))


# --------------------------------------------------------------------------------- ShuffleNet V2
class InvertedResidual(nn.Module):
    """ShuffleNet V2's unit (Fig. 3 c/d of the paper), as torchvision's.

    At stride 1 the channels are split in two halves: one passes unchanged, the other goes
    through ``branch2`` (1×1 conv, BN, ReLU, 3×3 depthwise conv, BN, 1×1 conv, BN, ReLU). At
    stride 2 there is no split: ``branch1`` (3×3 depthwise stride 2, BN, 1×1 conv, BN, ReLU) and
    ``branch2`` (with a stride-2 depthwise convolution) both see the whole input. The halves are
    concatenated and shuffled with 2 groups.

    Args:
        inp (int): input channels.
        oup (int): output channels (even; at stride 1 equal to ``inp``).
        stride (int): 1, 2 or 3.

    Shape:
        input (Tensor[N, inp, H, W]) -> output (Tensor[N, oup, ceil(H / stride), ceil(W / stride)]).
    """

    def __init__(self, inp: int, oup: int, stride: int) -> None:
        super().__init__()
        if not 1 <= stride <= 3:
            raise ValueError(f"stride must be 1, 2 or 3, got {stride}")
        self.stride = stride
        half = oup // 2
        if stride == 1 and inp != 2 * half:
            raise ValueError(f"a stride-1 unit splits its input in two, so inp ({inp}) must "
                             f"equal oup ({oup}) and be even")

        if stride > 1:
            self.branch1 = nn.Sequential(
                self.depthwise_conv(inp, 3, stride),
                nn.BatchNorm2d(inp),
                Conv2d(inp, half, 1, bias=False),
                nn.BatchNorm2d(half),
                nn.ReLU(inplace=True),
            )
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            Conv2d(inp if stride > 1 else half, half, 1, bias=False),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
            self.depthwise_conv(half, 3, stride),
            nn.BatchNorm2d(half),
            Conv2d(half, half, 1, bias=False),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
        )

    @staticmethod
    def depthwise_conv(channels: int, kernel_size: int, stride: int = 1) -> Conv2d:
        """A depthwise convolution without bias whose padding keeps the size at stride 1."""
        return Conv2d(channels, channels, kernel_size, stride, padding=kernel_size // 2,
                      groups=channels, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            kept, x2 = x.chunk(2, dim=1)
            out = torch.cat((kept, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    """ShuffleNet V2 (Ma et al. 2018), as torchvision.models.ShuffleNetV2: ``conv1`` (3×3
    stride 2, BN, ReLU), ``maxpool`` (3×3 stride 2), ``stage2`` … ``stage4`` (the first unit of
    each with stride 2), ``conv5`` (1×1, BN, ReLU), global average pooling and ``fc``.

    Args:
        stages_repeats (list of 3 ints): units per stage.
        stages_out_channels (list of 5 ints): widths of conv1, the three stages and conv5.
        num_classes (int): outputs of ``fc``. Default: 1000.
        inverted_residual (callable): the unit class. Default: :class:`InvertedResidual`.

    Shape:
        input (Tensor[N, 3, H, W]) -> output (Tensor[N, num_classes]);
        ``forward_features``: Tensor[N, stages_out_channels[-1], ceil(H / 32), ceil(W / 32)].
    """

    def __init__(self, stages_repeats: List[int], stages_out_channels: List[int],
                 num_classes: int = 1000, inverted_residual: Any = InvertedResidual) -> None:
        super().__init__()
        if len(stages_repeats) != 3:
            raise ValueError(f"stages_repeats must give 3 unit counts, got {stages_repeats}")
        if len(stages_out_channels) != 5:
            raise ValueError(f"stages_out_channels must give 5 widths, got {stages_out_channels}")
        self._stage_out_channels = list(stages_out_channels)

        in_channels = stages_out_channels[0]
        self.conv1 = nn.Sequential(
            Conv2d(3, in_channels, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
        )
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        self.stage2: nn.Sequential
        self.stage3: nn.Sequential
        self.stage4: nn.Sequential
        for i, (repeats, out_channels) in enumerate(zip(stages_repeats, stages_out_channels[1:4])):
            units = [inverted_residual(in_channels, out_channels, 2)]
            units += [inverted_residual(out_channels, out_channels, 1) for _ in range(repeats - 1)]
            setattr(self, f"stage{i + 2}", nn.Sequential(*units))
            in_channels = out_channels

        out_channels = stages_out_channels[-1]
        self.conv5 = nn.Sequential(
            Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )
        self.fc = nn.Linear(out_channels, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        """Args:
            x (Tensor[N, 3, H, W]): the images.

        Returns:
            Tensor[N, stages_out_channels[-1], ceil(H / 32), ceil(W / 32)]: the output of
            ``conv5``.
        """
        x = self.maxpool(self.conv1(x))
        x = self.stage2(x)
        x = self.stage3(x)
        x = self.stage4(x)
        return self.conv5(x)

    def forward(self, x: Tensor) -> Tensor:
        """Args:
            x (Tensor[N, 3, H, W]): the images.

        Returns:
            Tensor[N, num_classes]: the class scores (logits).
        """
        return self.fc(self.forward_features(x).mean((2, 3)))


@register_model()
def shufflenet_v1_g3(*, num_classes: int = 1000, **kwargs: Any) -> ShuffleNetV1:
    """ShuffleNet v1 1× with 3 groups (stage widths 240, 480, 960; 1.9 M parameters).

    Args:
        num_classes (int): outputs of the classifier.
        **kwargs: further arguments of :class:`ShuffleNetV1` (not ``groups``).
    """
    if kwargs.get("groups", 3) != 3:
        raise ValueError(f"shufflenet_v1_g3() fixes groups=3; got groups={kwargs['groups']}")
    kwargs.pop("groups", None)
    return ShuffleNetV1(groups=3, num_classes=num_classes, **kwargs)


def _shufflenet_v2(stages_out_channels: List[int], num_classes: int,
                   **kwargs: Any) -> ShuffleNetV2:
    return ShuffleNetV2([4, 8, 4], stages_out_channels, num_classes=num_classes, **kwargs)


@register_model()
def shufflenet_v2_x0_5(*, num_classes: int = 1000, **kwargs: Any) -> ShuffleNetV2:
    """ShuffleNet V2 ×0.5: widths 24, 48, 96, 192, 1024 (1.4 M parameters).

    Args:
        num_classes (int): outputs of the classifier.
        **kwargs: further arguments of :class:`ShuffleNetV2`.
    """
    return _shufflenet_v2([24, 48, 96, 192, 1024], num_classes, **kwargs)


@register_model()
def shufflenet_v2_x1_0(*, num_classes: int = 1000, **kwargs: Any) -> ShuffleNetV2:
    """ShuffleNet V2 ×1.0: widths 24, 116, 232, 464, 1024 (2.3 M parameters). Arguments as
    :func:`shufflenet_v2_x0_5`."""
    return _shufflenet_v2([24, 116, 232, 464, 1024], num_classes, **kwargs)


@register_model()
def shufflenet_v2_x1_5(*, num_classes: int = 1000, **kwargs: Any) -> ShuffleNetV2:
    """ShuffleNet V2 ×1.5: widths 24, 176, 352, 704, 1024 (3.5 M parameters). Arguments as
    :func:`shufflenet_v2_x0_5`."""
    return _shufflenet_v2([24, 176, 352, 704, 1024], num_classes, **kwargs)


@register_model()
def shufflenet_v2_x2_0(*, num_classes: int = 1000, **kwargs: Any) -> ShuffleNetV2:
    """ShuffleNet V2 ×2.0: widths 24, 244, 488, 976, 2048 (7.4 M parameters). Arguments as
    :func:`shufflenet_v2_x0_5`."""
    return _shufflenet_v2([24, 244, 488, 976, 2048], num_classes, **kwargs)
