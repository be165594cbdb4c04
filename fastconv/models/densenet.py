"""DenseNet-BC ("Densely Connected Convolutional Networks", Huang et al. 2017) on fastconv's
convolutions.

Module and parameter names are torchvision's (``features.conv0``, ``features.denseblock1
.denselayer1.norm1``, ``features.transition1.conv``, ``features.norm5``, ``classifier``), so a
torchvision ``state_dict`` loads with ``strict=True``.
"""
from collections import OrderedDict
from typing import Any, List, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as checkpoint
from torch import Tensor

from fastconv.models._registry import register_model
from fastconv.nn import Conv2d

__all__ = ["DenseNet", "DenseLayer", "DenseBlock", "Transition",
           "densenet121", "densenet161", "densenet169", "densenet201"]


class DenseLayer(nn.Module):
    """BN-ReLU-1×1 conv (to ``bn_size * growth_rate`` channels), BN-ReLU-3×3 conv (to
    ``growth_rate`` channels), optional dropout.

    Args:
        num_input_features (int): channels of the concatenated inputs.
        growth_rate (int): channels this layer adds.
        bn_size (int): the bottleneck has ``bn_size * growth_rate`` channels.
        drop_rate (float): dropout probability on the new features (training only).
        memory_efficient (bool): recompute the concatenation and the bottleneck in the backward
            pass instead of keeping them (gradient checkpointing).

    Shape:
        input (Tensor[N, C_i, H, W] or a list of them, concatenated along channels, with
        sum C_i = num_input_features) -> output (Tensor[N, growth_rate, H, W]).
    """

    def __init__(self, num_input_features: int, growth_rate: int, bn_size: int,
                 drop_rate: float, memory_efficient: bool = False) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(num_input_features)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = Conv2d(num_input_features, bn_size * growth_rate, kernel_size=1, stride=1,
                            bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = Conv2d(bn_size * growth_rate, growth_rate, kernel_size=3, stride=1,
                            padding=1, bias=False)
        self.drop_rate = float(drop_rate)
        self.memory_efficient = memory_efficient

    def bottleneck(self, *inputs: Tensor) -> Tensor:
        """Concatenate the inputs and apply BN-ReLU-1×1 conv."""
        return self.conv1(self.relu1(self.norm1(torch.cat(inputs, 1))))

    def forward(self, input: Union[Tensor, List[Tensor]]) -> Tensor:
        inputs = [input] if isinstance(input, Tensor) else list(input)
        if self.memory_efficient and any(t.requires_grad for t in inputs):
            # The concatenation grows with depth; recomputing it in the backward pass keeps
            # the memory of a dense block linear instead of quadratic in its depth.
            out = checkpoint.checkpoint(self.bottleneck, *inputs, use_reentrant=False)
        else:
            out = self.bottleneck(*inputs)
        out = self.conv2(self.relu2(self.norm2(out)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return out


class DenseBlock(nn.ModuleDict):
    """``num_layers`` :class:`DenseLayer` s named ``denselayer1`` …, each fed the block input and
    every earlier layer's output.

    Args:
        num_layers (int): layers in the block.
        num_input_features (int): channels of the block input.
        bn_size, growth_rate, drop_rate, memory_efficient: as :class:`DenseLayer`.

    Shape:
        input (Tensor[N, C, H, W]) -> output (Tensor[N, C + num_layers * growth_rate, H, W]).
    """

    def __init__(self, num_layers: int, num_input_features: int, bn_size: int,
                 growth_rate: int, drop_rate: float, memory_efficient: bool = False) -> None:
        super().__init__()
        for i in range(num_layers):
            self.add_module(f"denselayer{i + 1}", DenseLayer(
                num_input_features + i * growth_rate, growth_rate=growth_rate, bn_size=bn_size,
                drop_rate=drop_rate, memory_efficient=memory_efficient))

    def forward(self, init_features: Tensor) -> Tensor:
        features = [init_features]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    """BN-ReLU-1×1 conv-2×2 average pool between dense blocks.

    Shape:
        input (Tensor[N, num_input_features, H, W]) ->
        output (Tensor[N, num_output_features, H / 2, W / 2]) (rounded down).
    """

    def __init__(self, num_input_features: int, num_output_features: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(num_input_features)
        self.relu = nn.ReLU(inplace=True)
        self.conv = Conv2d(num_input_features, num_output_features, kernel_size=1, stride=1,
                           bias=False)
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2)


class DenseNet(nn.Module):
    """DenseNet-BC, as torchvision.models.DenseNet.

    Args:
        growth_rate (int): channels each dense layer adds (``k`` in the paper).
        block_config (4 ints): dense layers in each block.
        num_init_features (int): channels of the stem convolution.
        bn_size (int): a dense layer's bottleneck has ``bn_size * growth_rate`` channels.
        drop_rate (float): dropout after each dense layer (training only).
        num_classes (int): outputs of ``classifier``.
        memory_efficient (bool): gradient checkpointing inside the dense layers (slower, much
            less memory).

    Shape:
        input (Tensor[N, 3, H, W]) (H, W ≥ 29) -> output (Tensor[N, num_classes]);
        ``forward_features``: Tensor[N, C, H', W'] with ``C = classifier.in_features`` and
        ``H' = floor(ceil(H / 4) / 8)`` (likewise W').
    """

    def __init__(self, growth_rate: int = 32, block_config: Tuple[int, ...] = (6, 12, 24, 16),
                 num_init_features: int = 64, bn_size: int = 4, drop_rate: float = 0,
                 num_classes: int = 1000, memory_efficient: bool = False) -> None:
        super().__init__()
        self.features = nn.Sequential(OrderedDict([
            ("conv0", Conv2d(3, num_init_features, kernel_size=7, stride=2, padding=3,
                             bias=False)),
            ("norm0", nn.BatchNorm2d(num_init_features)),
            ("relu0", nn.ReLU(inplace=True)),
            ("pool0", nn.MaxPool2d(kernel_size=3, stride=2, padding=1)),
        ]))
        num_features = num_init_features
        for i, num_layers in enumerate(block_config):
            self.features.add_module(f"denseblock{i + 1}", DenseBlock(
                num_layers=num_layers, num_input_features=num_features, bn_size=bn_size,
                growth_rate=growth_rate, drop_rate=drop_rate, memory_efficient=memory_efficient))
            num_features += num_layers * growth_rate
            if i != len(block_config) - 1:
                # compression 0.5 (the "C" of DenseNet-BC)
                self.features.add_module(f"transition{i + 1}",
                                         Transition(num_features, num_features // 2))
                num_features //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(num_features))
        self.classifier = nn.Linear(num_features, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.constant_(m.bias, 0)

    def forward_features(self, x: Tensor) -> Tensor:
        """Stem, dense blocks, transitions, final BN and ReLU: the last feature map before
        global pooling."""
        return F.relu(self.features(x), inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        out = F.adaptive_avg_pool2d(self.forward_features(x), (1, 1))
        return self.classifier(torch.flatten(out, 1))


def _densenet(growth_rate: int, block_config: Tuple[int, int, int, int], num_init_features: int,
              num_classes: int, **kwargs: Any) -> DenseNet:
    return DenseNet(growth_rate, block_config, num_init_features, num_classes=num_classes,
                    **kwargs)


@register_model()
def densenet121(*, num_classes: int = 1000, **kwargs: Any) -> DenseNet:
    """DenseNet-121: growth rate 32, blocks [6, 12, 24, 16], 64 stem channels (8.0 M parameters).

    Args:
        num_classes (int): outputs of the classifier.
        **kwargs: further arguments of :class:`DenseNet` (``bn_size``, ``drop_rate``,
            ``memory_efficient``).
    """
    return _densenet(32, (6, 12, 24, 16), 64, num_classes, **kwargs)


@register_model()
def densenet161(*, num_classes: int = 1000, **kwargs: Any) -> DenseNet:
    """DenseNet-161: growth rate 48, blocks [6, 12, 36, 24], 96 stem channels (28.7 M
    parameters). Arguments as :func:`densenet121`."""
    return _densenet(48, (6, 12, 36, 24), 96, num_classes, **kwargs)


@register_model()
def densenet169(*, num_classes: int = 1000, **kwargs: Any) -> DenseNet:
    """DenseNet-169: growth rate 32, blocks [6, 12, 32, 32], 64 stem channels (14.1 M
    parameters). Arguments as :func:`densenet121`."""
    return _densenet(32, (6, 12, 32, 32), 64, num_classes, **kwargs)


@register_model()
def densenet201(*, num_classes: int = 1000, **kwargs: Any) -> DenseNet:
    """DenseNet-201: growth rate 32, blocks [6, 12, 48, 32], 64 stem channels (20.0 M
    parameters). Arguments as :func:`densenet121`."""
    return _densenet(32, (6, 12, 48, 32), 64, num_classes, **kwargs)
