"""The classic convolutional networks before VGG: LeNet-5, AlexNet (torchvision's single-tower
layout and the original two-tower one), ZFNet and Network in Network.

Every convolution is a :class:`fastconv.nn.Conv2d`; pooling, normalisation, activations and the
fully-connected layers are plain torch layers. Each model has ``forward_features(x)`` (the feature
map before the classifier head) and ``forward(x)`` (the head applied to it).

References:
    - LeCun, Bottou, Bengio, Haffner. *Gradient-based learning applied to document
      recognition*. Proc. IEEE, 1998.
    - Krizhevsky, Sutskever, Hinton. *ImageNet classification with deep convolutional neural
      networks*. NIPS 2012. The single-tower variant is Krizhevsky's *One weird trick for
      parallelizing convolutional neural networks* (arXiv:1404.5997), as in torchvision.
    - Zeiler, Fergus. *Visualizing and understanding convolutional networks*. ECCV 2014.
    - Lin, Chen, Yan. *Network in network*. ICLR 2014.
"""
from typing import Any, Optional, Sequence

import torch
import torch.nn as nn

from fastconv.nn import Conv2d
from fastconv.models._registry import register_model

__all__ = ["LeNet5", "AlexNet", "AlexNetOriginal", "ZFNet", "MLPConv", "NiN",
           "lenet5", "alexnet", "alexnet_original", "zfnet", "nin"]


def _response_norm() -> nn.LocalResponseNorm:
    """AlexNet's local response normalisation: n = 5, k = 2, alpha = 1e-4, beta = 0.75 in the
    paper's formula ``a / (k + alpha * sum(a_j ** 2)) ** beta``. torch divides ``alpha`` by the
    window size, hence ``alpha = 5e-4`` here."""
    return nn.LocalResponseNorm(size=5, alpha=5e-4, beta=0.75, k=2.0)


class _PooledClassifierNet(nn.Module):
    """The shape shared by AlexNet and ZFNet (and torchvision's VGG): ``features``, an adaptive
    ``avgpool`` and a fully-connected ``classifier``."""

    features: nn.Module
    avgpool: nn.Module
    classifier: nn.Module

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Args:
            x (Tensor[N, C, H, W]): the images.

        Returns:
            Tensor[N, C', H', W']: the output of ``features``.
        """
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args:
            x (Tensor[N, C, H, W]): the images.

        Returns:
            Tensor[N, num_classes]: the class scores (logits).
        """
        x = self.avgpool(self.forward_features(x))
        return self.classifier(torch.flatten(x, 1))


# ------------------------------------------------------------------------------------- LeNet-5
class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al., 1998): C1 (6 maps, 5×5), S2, C3 (16 maps, 5×5), S4, C5 (120 maps,
    5×5, a convolution whose output is 1×1), F6 (84 units), output (``num_classes`` units).

    Where the paper's details predate today's layers, the usual modern reading is taken: S2 and
    S4 are 2×2 average pooling (the paper's subsampling has a trainable coefficient and bias per
    map), C3 sees all 6 maps of S2 (the paper's connection table links each C3 map to a subset),
    the squashing function is ``tanh`` (the paper's is ``1.7159 tanh(2x/3)``) and the output layer
    is a linear layer (the paper's is Euclidean RBF units). That gives 61,706 parameters.

    Args:
        num_classes (int): size of the output layer. Default: 10.
        in_channels (int): channels of the input image. Default: 1.

    Shapes:
        - input: ``Tensor[N, in_channels, 32, 32]``
        - ``forward_features``: ``Tensor[N, 120, 1, 1]`` (the maps of C5)
        - output: ``Tensor[N, num_classes]``
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            Conv2d(in_channels, 6, kernel_size=5),   # C1: 32 -> 28
            nn.Tanh(),
            nn.AvgPool2d(kernel_size=2, stride=2),   # S2: 28 -> 14
            Conv2d(6, 16, kernel_size=5),            # C3: 14 -> 10
            nn.Tanh(),
            nn.AvgPool2d(kernel_size=2, stride=2),   # S4: 10 -> 5
            Conv2d(16, 120, kernel_size=5),          # C5: 5 -> 1
            nn.Tanh(),
        )
        self.classifier = nn.Sequential(
            nn.Linear(120, 84),                      # F6
            nn.Tanh(),
            nn.Linear(84, num_classes),
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Args:
            x (Tensor[N, in_channels, 32, 32]): the images.

        Returns:
            Tensor[N, 120, 1, 1]: the maps of C5.
        """
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args:
            x (Tensor[N, in_channels, 32, 32]): the images.

        Returns:
            Tensor[N, num_classes]: the class scores (logits).
        """
        return self.classifier(torch.flatten(self.forward_features(x), 1))


# ------------------------------------------------------------------------------------- AlexNet
class AlexNet(_PooledClassifierNet):
    """AlexNet in torchvision's layout (the single-tower network of "One weird trick": 64, 192,
    384, 256, 256 filters, no response normalisation): the same module names and shapes as
    ``torchvision.models.AlexNet``, so its ``state_dict`` (pretrained weights included) loads
    with ``strict=True``.

    Args:
        num_classes (int): size of the last layer. Default: 1000.
        dropout (float): dropout probability before the first two fully-connected layers.
            Default: 0.5.

    Shapes:
        - input: ``Tensor[N, 3, H, W]`` with H, W >= 63 (224 in training)
        - ``forward_features``: ``Tensor[N, 256, H', W']`` (6×6 at 224)
        - output: ``Tensor[N, num_classes]``
    """

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(256 * 6 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )


class AlexNetOriginal(_PooledClassifierNet):
    """AlexNet as published in 2012, for 227×227 inputs: 96, 256, 384, 384, 256 filters, the
    two GPU towers kept as ``groups=2`` in conv2, conv4 and conv5 (conv1 sees the whole image,
    conv3 and the fully-connected layers see both towers), local response normalisation after
    the ReLU of conv1 and conv2, overlapping 3×3 stride-2 max pooling after the normalisations
    and after conv5, dropout on the outputs of fc6 and fc7.

    ``init_weights`` follows the paper: weights ~ N(0, 0.01), biases 1 in conv2, conv4, conv5
    and the hidden fully-connected layers, 0 elsewhere. The adaptive average pooling is the
    identity at 227×227 and lets smaller images through.

    Args:
        num_classes (int): size of the last layer. Default: 1000.
        dropout (float): dropout probability after fc6 and fc7. Default: 0.5.
        init_weights (bool): initialise as in the paper (else torch's defaults). Default: True.

    Shapes:
        - input: ``Tensor[N, 3, H, W]`` with H, W >= 67 (227 in the paper)
        - ``forward_features``: ``Tensor[N, 256, H', W']`` (6×6 at 227)
        - output: ``Tensor[N, num_classes]``
    """

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5,
                 init_weights: bool = True) -> None:
        super().__init__()
        self.features = nn.Sequential(
            Conv2d(3, 96, kernel_size=11, stride=4),                 # 227 -> 55
            nn.ReLU(inplace=True),
            _response_norm(),
            nn.MaxPool2d(kernel_size=3, stride=2),                    # 55 -> 27
            Conv2d(96, 256, kernel_size=5, padding=2, groups=2),     # 27
            nn.ReLU(inplace=True),
            _response_norm(),
            nn.MaxPool2d(kernel_size=3, stride=2),                    # 27 -> 13
            Conv2d(256, 384, kernel_size=3, padding=1),              # 13
            nn.ReLU(inplace=True),
            Conv2d(384, 384, kernel_size=3, padding=1, groups=2),    # 13
            nn.ReLU(inplace=True),
            Conv2d(384, 256, kernel_size=3, padding=1, groups=2),    # 13
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),                    # 13 -> 6
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Linear(256 * 6 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, num_classes),
        )
        if init_weights:
            self._init_as_in_the_paper()

    def _init_as_in_the_paper(self) -> None:
        convs = [m for m in self.features if isinstance(m, nn.Conv2d)]
        linears = [m for m in self.classifier if isinstance(m, nn.Linear)]
        # the paper: biases of 1 give the ReLUs positive inputs early in training
        ones = {id(convs[1]), id(convs[3]), id(convs[4]), id(linears[0]), id(linears[1])}
        for m in convs + linears:
            nn.init.normal_(m.weight, mean=0.0, std=0.01)
            nn.init.constant_(m.bias, 1.0 if id(m) in ones else 0.0)


# --------------------------------------------------------------------------------------- ZFNet
class ZFNet(_PooledClassifierNet):
    """ZFNet (Zeiler & Fergus, 2014): AlexNet with a 7×7 stride-2 conv1 of 96 filters and a
    5×5 stride-2 conv2 of 256 filters, ReLU, 3×3 stride-2 max pooling and local contrast
    normalisation after conv1 and conv2, then three 3×3 convolutions.

    The default widths of conv3–conv5 are 512, 1024, 512: the larger model of the paper's
    Table 2 ("Our Model (Layer 3,4,5: 512,1024,512 maps)"), its best single network; Fig. 3's
    model has 384, 384, 256 (``conv3_5_channels=(384, 384, 256)``). Padding and ceil-mode
    pooling reproduce the map sizes of Fig. 3 exactly: 224 -> 110 -> 55 -> 26 -> 13 -> 6.

    Args:
        num_classes (int): size of the last layer. Default: 1000.
        dropout (float): dropout probability after fc6 and fc7. Default: 0.5.
        conv3_5_channels (Sequence[int]): filters of conv3, conv4, conv5.
            Default: (512, 1024, 512).

    Shapes:
        - input: ``Tensor[N, 3, H, W]`` with H, W >= 47 (224 in the paper)
        - ``forward_features``: ``Tensor[N, conv3_5_channels[2], H', W']`` (6×6 at 224)
        - output: ``Tensor[N, num_classes]``
    """

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5,
                 conv3_5_channels: Sequence[int] = (512, 1024, 512)) -> None:
        super().__init__()
        c3, c4, c5 = conv3_5_channels
        self.features = nn.Sequential(
            Conv2d(3, 96, kernel_size=7, stride=2, padding=1),        # 224 -> 110
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),   # 110 -> 55
            _response_norm(),
            Conv2d(96, 256, kernel_size=5, stride=2),                 # 55 -> 26
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),   # 26 -> 13
            _response_norm(),
            Conv2d(256, c3, kernel_size=3, padding=1),                # 13
            nn.ReLU(inplace=True),
            Conv2d(c3, c4, kernel_size=3, padding=1),                 # 13
            nn.ReLU(inplace=True),
            Conv2d(c4, c5, kernel_size=3, padding=1),                 # 13
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),   # 13 -> 6
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Linear(c5 * 6 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, num_classes),
        )


# --------------------------------------------------------------------------- Network in Network
class MLPConv(nn.Sequential):
    """An mlpconv block of Network in Network: a k×k convolution followed by two 1×1
    convolutions (a small multilayer perceptron shared across positions), each with a ReLU.

    Args:
        in_channels (int): channels of the input.
        out_channels (int): channels of the 1×1 convolutions' output.
        kernel_size (int): size of the first convolution.
        stride (int): stride of the first convolution. Default: 1.
        padding (int): padding of the first convolution. Default: 0.
        mid_channels (int, optional): channels of the first convolution and of the first 1×1
            convolution. Default: ``out_channels``.

    Shapes:
        - input: ``Tensor[N, in_channels, H, W]``
        - output: ``Tensor[N, out_channels, H', W']``, H' = (H + 2·padding − kernel_size) //
          stride + 1
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, mid_channels: Optional[int] = None) -> None:
        mid = out_channels if mid_channels is None else mid_channels
        super().__init__(
            Conv2d(in_channels, mid, kernel_size, stride=stride, padding=padding),
            nn.ReLU(inplace=True),
            Conv2d(mid, mid, kernel_size=1),
            nn.ReLU(inplace=True),
            Conv2d(mid, out_channels, kernel_size=1),
            nn.ReLU(inplace=True),
        )


class NiN(nn.Module):
    """Network in Network for ImageNet, in the layout of the authors' released ImageNet model:
    four mlpconv blocks (11×11 stride 4 with 96 maps; 5×5 with 256; 3×3 with 384; 3×3 with 1024
    and a last 1×1 to ``num_classes`` maps), 3×3 stride-2 max pooling between the first three
    (ceil mode, as in Caffe), dropout before the last block, and global average pooling of the
    ``num_classes`` confidence maps in place of fully-connected layers.

    ``features`` (the first three blocks with their pooling) does not depend on
    ``num_classes``; ``classifier`` (dropout, the last mlpconv block, global average pooling)
    does, so replacing it is enough for transfer learning.

    Args:
        num_classes (int): maps of the last block, one per class. Default: 1000.
        dropout (float): dropout probability before the last block. Default: 0.5.

    Shapes:
        - input: ``Tensor[N, 3, H, W]`` with H, W >= 39 (224 in training)
        - ``forward_features``: ``Tensor[N, 384, H', W']`` (6×6 at 224)
        - output: ``Tensor[N, num_classes]``
    """

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            MLPConv(3, 96, kernel_size=11, stride=4),                 # 224 -> 54
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),   # 54 -> 27
            MLPConv(96, 256, kernel_size=5, padding=2),               # 27
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),   # 27 -> 13
            MLPConv(256, 384, kernel_size=3, padding=1),              # 13
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),   # 13 -> 6
        )
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            MLPConv(384, num_classes, kernel_size=3, padding=1, mid_channels=1024),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(1),
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Args:
            x (Tensor[N, 3, H, W]): the images.

        Returns:
            Tensor[N, 384, H', W']: the output of the third mlpconv block, pooled.
        """
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args:
            x (Tensor[N, 3, H, W]): the images.

        Returns:
            Tensor[N, num_classes]: the class scores (logits): the spatial means of the last
            block's confidence maps.
        """
        return self.classifier(self.forward_features(x))


# -------------------------------------------------------------------------------------- builders
@register_model()
def lenet5(*, num_classes: int = 10, **kwargs: Any) -> LeNet5:
    """LeNet-5 for 32×32 single-channel images. See :class:`LeNet5`."""
    return LeNet5(num_classes=num_classes, **kwargs)


@register_model()
def alexnet(*, num_classes: int = 1000, **kwargs: Any) -> AlexNet:
    """AlexNet in torchvision's layout (its weights load unchanged). See :class:`AlexNet`."""
    return AlexNet(num_classes=num_classes, **kwargs)


@register_model()
def alexnet_original(*, num_classes: int = 1000, **kwargs: Any) -> AlexNetOriginal:
    """The two-tower AlexNet of 2012 for 227×227 images. See :class:`AlexNetOriginal`."""
    return AlexNetOriginal(num_classes=num_classes, **kwargs)


@register_model()
def zfnet(*, num_classes: int = 1000, **kwargs: Any) -> ZFNet:
    """ZFNet with 512, 1024, 512 filters in conv3–conv5. See :class:`ZFNet`."""
    return ZFNet(num_classes=num_classes, **kwargs)


@register_model()
def nin(*, num_classes: int = 1000, **kwargs: Any) -> NiN:
    """Network in Network for ImageNet. See :class:`NiN`."""
    return NiN(num_classes=num_classes, **kwargs)
