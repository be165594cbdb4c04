"""VGG (Simonyan & Zisserman, *Very deep convolutional networks for large-scale image
recognition*, ICLR 2015) on fastconv's convolutions.

``vgg11`` … ``vgg19_bn`` have torchvision's module names and shapes (``features``, ``avgpool``,
``classifier``), so a ``torchvision.models.vgg*`` ``state_dict`` (pretrained weights included)
loads with ``strict=True``. ``vgg8_cifar`` is the 8-convolution VGG with batch norm commonly
trained on CIFAR-10 (32×32 images, one fully-connected layer).
"""
from typing import Any, Dict, List, Union

import torch
import torch.nn as nn

from fastconv.nn import Conv2d
from fastconv.models._registry import register_model
from fastconv.models.init_weights import init_cnn_weights

__all__ = ["VGG", "CifarVGG", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn",
           "vgg19", "vgg19_bn", "vgg8_cifar"]

# Output channels of each 3×3 convolution; "M" is a 2×2 stride-2 max pooling. The letters are
# the columns of the paper's Table 1 (A: 11 weight layers, B: 13, D: 16, E: 19).
_CFGS: Dict[str, List[Union[str, int]]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
          512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
          512, 512, 512, 512, "M"],
}


def _make_layers(cfg: List[Union[str, int]], batch_norm: bool = False,
                 in_channels: int = 3) -> nn.Sequential:
    """The convolutional trunk described by ``cfg``: 3×3 padding-1 convolutions (each followed
    by ``BatchNorm2d`` when ``batch_norm``, then ReLU) and 2×2 max pooling at each "M". The
    flat ``nn.Sequential`` gives torchvision's parameter names (``features.0.weight``, …)."""
    layers: List[nn.Module] = []
    channels = in_channels
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        layers.append(Conv2d(channels, int(v), kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(int(v)))
        layers.append(nn.ReLU(inplace=True))
        channels = int(v)
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """VGG for ImageNet, with torchvision's layout: ``features`` (the convolutions and
    poolings), ``avgpool`` (adaptive, to 7×7) and ``classifier`` (4096, 4096, ``num_classes``).

    Args:
        features (nn.Module): the convolutional trunk, e.g. from ``_make_layers``; must output
            512 channels.
        num_classes (int): size of the last layer. Default: 1000.
        init_weights (bool): initialise as torchvision does (Kaiming-normal convolutions,
            N(0, 0.01) linear layers, zero biases, unit batch-norm scales). Default: True.
        dropout (float): dropout probability after the first two fully-connected layers.
            Default: 0.5.

    Shapes:
        - input: ``Tensor[N, 3, H, W]`` with H, W >= 32 (224 in training)
        - ``forward_features``: ``Tensor[N, 512, H/32, W/32]``
        - output: ``Tensor[N, num_classes]``
    """

    def __init__(self, features: nn.Module, num_classes: int = 1000, init_weights: bool = True,
                 dropout: float = 0.5) -> None:
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, num_classes),
        )
        if init_weights:
            init_cnn_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Args:
            x (Tensor[N, 3, H, W]): the images.

        Returns:
            Tensor[N, 512, H/32, W/32]: the output of ``features``.
        """
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args:
            x (Tensor[N, 3, H, W]): the images.

        Returns:
            Tensor[N, num_classes]: the class scores (logits).
        """
        x = self.avgpool(self.forward_features(x))
        return self.classifier(torch.flatten(x, 1))


class CifarVGG(nn.Module):
    """VGG for 32×32 images: a ``features`` trunk that pools the image down to 1×1, then a
    single linear ``classifier`` on the 512 channels.

    Args:
        features (nn.Module): the convolutional trunk; must output ``Tensor[N, 512, 1, 1]``
            for a 32×32 input.
        num_classes (int): size of the last layer. Default: 10.

    Shapes:
        - input: ``Tensor[N, 3, 32, 32]``
        - ``forward_features``: ``Tensor[N, 512, 1, 1]``
        - output: ``Tensor[N, num_classes]``
    """

    def __init__(self, features: nn.Module, num_classes: int = 10) -> None:
        super().__init__()
        self.features = features
        self.classifier = nn.Linear(512, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Args:
            x (Tensor[N, 3, 32, 32]): the images.

        Returns:
            Tensor[N, 512, 1, 1]: the output of ``features``.
        """
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args:
            x (Tensor[N, 3, 32, 32]): the images.

        Returns:
            Tensor[N, num_classes]: the class scores (logits).
        """
        return self.classifier(torch.flatten(self.forward_features(x), 1))


def _vgg(cfg: str, batch_norm: bool, num_classes: int, **kwargs: Any) -> VGG:
    return VGG(_make_layers(_CFGS[cfg], batch_norm=batch_norm), num_classes=num_classes,
               **kwargs)


@register_model()
def vgg11(*, num_classes: int = 1000, **kwargs: Any) -> VGG:
    """VGG-11 (configuration A). Keyword arguments go to :class:`VGG` (``dropout``,
    ``init_weights``)."""
    return _vgg("A", False, num_classes, **kwargs)


@register_model()
def vgg11_bn(*, num_classes: int = 1000, **kwargs: Any) -> VGG:
    """VGG-11 (configuration A) with batch normalisation. See :func:`vgg11`."""
    return _vgg("A", True, num_classes, **kwargs)


@register_model()
def vgg13(*, num_classes: int = 1000, **kwargs: Any) -> VGG:
    """VGG-13 (configuration B). See :func:`vgg11`."""
    return _vgg("B", False, num_classes, **kwargs)


@register_model()
def vgg13_bn(*, num_classes: int = 1000, **kwargs: Any) -> VGG:
    """VGG-13 (configuration B) with batch normalisation. See :func:`vgg11`."""
    return _vgg("B", True, num_classes, **kwargs)


@register_model()
def vgg16(*, num_classes: int = 1000, **kwargs: Any) -> VGG:
    """VGG-16 (configuration D). See :func:`vgg11`."""
    return _vgg("D", False, num_classes, **kwargs)


@register_model()
def vgg16_bn(*, num_classes: int = 1000, **kwargs: Any) -> VGG:
    """VGG-16 (configuration D) with batch normalisation. See :func:`vgg11`."""
    return _vgg("D", True, num_classes, **kwargs)


@register_model()
def vgg19(*, num_classes: int = 1000, **kwargs: Any) -> VGG:
    """VGG-19 (configuration E). See :func:`vgg11`."""
    return _vgg("E", False, num_classes, **kwargs)


@register_model()
def vgg19_bn(*, num_classes: int = 1000, **kwargs: Any) -> VGG:
    """VGG-19 (configuration E) with batch normalisation. See :func:`vgg11`."""
    return _vgg("E", True, num_classes, **kwargs)


@register_model()
def vgg8_cifar(*, num_classes: int = 10, **kwargs: Any) -> CifarVGG:
    """The 8-convolution VGG with batch normalisation for CIFAR-10: configuration A's trunk
    (64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M; each convolution followed by
    BatchNorm2d and ReLU) and one ``Linear(512, num_classes)``, 9.2M parameters. This is the
    model trained as ``VGG('VGG11')`` in kuangliu/pytorch-cifar (models/vgg.py), a common
    CIFAR-10 baseline; its ``state_dict`` keys are the same (``features.N.*``,
    ``classifier.*``). Keyword arguments go to :class:`CifarVGG`.

    Shapes:
        - input: ``Tensor[N, 3, 32, 32]``
        - output: ``Tensor[N, num_classes]``
    """
    return CifarVGG(_make_layers(_CFGS["A"], batch_norm=True), num_classes=num_classes, **kwargs)
