"""U-Net for semantic segmentation on fastconv's convolutions and transposed convolutions.

Reference:
    Ronneberger, Fischer, Brox. *U-Net: Convolutional networks for biomedical image
    segmentation*. MICCAI 2015.

Two departures from the paper, both usual today: the 3×3 convolutions are padded (padding 1), so
the output has the input's size and the skip connections need no cropping; and each convolution
is followed by batch norm (``batch_norm=False`` gives the paper's convolution-with-bias + ReLU).
torchvision has no U-Net; the module names (``inc``, ``down1`` … ``down4``, ``up1`` … ``up4``,
``outc``) are fastconv's own.
"""
from typing import Any, List

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from fastconv.models._registry import register_model
from fastconv.nn import Conv2d, ConvTranspose2d
from fastconv.models.init_weights import init_cnn_weights

__all__ = ["DoubleConv", "Down", "Up", "UNet", "unet"]


class DoubleConv(nn.Sequential):
    """Two 3×3 convolutions (padding 1), each followed by batch norm (optional) and ReLU.

    Args:
        in_channels (int): input channels.
        out_channels (int): output channels of both convolutions.
        batch_norm (bool): batch norm after each convolution (then the convolutions have no
            bias). Default: True.

    Shape:
        input (Tensor[N, in_channels, H, W]) -> output (Tensor[N, out_channels, H, W]).
    """

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool = True) -> None:
        layers: List[nn.Module] = []
        for c_in in (in_channels, out_channels):
            layers.append(Conv2d(c_in, out_channels, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class Down(nn.Sequential):
    """A step of the contracting path: 2×2 max pooling, then :class:`DoubleConv`.

    Shape:
        input (Tensor[N, in_channels, H, W]) -> output (Tensor[N, out_channels, H / 2, W / 2])
        (rounded down).
    """

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool = True) -> None:
        super().__init__(nn.MaxPool2d(2), DoubleConv(in_channels, out_channels, batch_norm))


class Up(nn.Module):
    """A step of the expanding path: a 2×2 stride-2 transposed convolution halving the
    channels, concatenation with the skip connection from the contracting path (the skip's
    channels first), then :class:`DoubleConv`.

    When the contracting path rounded an odd size down, the upsampled map is one pixel short;
    it is zero-padded at the bottom and right to the skip's size.

    Args:
        in_channels (int): channels of the input from below; the skip has ``in_channels // 2``.
        out_channels (int): output channels.
        batch_norm (bool): batch norm in the :class:`DoubleConv`. Default: True.

    Shape:
        input (Tensor[N, in_channels, h, w]), skip (Tensor[N, in_channels // 2, H, W]) with
        H in {2h, 2h + 1} -> output (Tensor[N, out_channels, H, W]).
    """

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool = True) -> None:
        super().__init__()
        self.up = ConvTranspose2d(in_channels, in_channels // 2, kernel_size=2, stride=2)
        self.conv = DoubleConv(in_channels // 2 * 2, out_channels, batch_norm)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = self.up(x)
        dh, dw = skip.shape[-2] - x.shape[-2], skip.shape[-1] - x.shape[-1]
        if dh or dw:
            x = F.pad(x, [0, dw, 0, dh])
        return self.conv(torch.cat([skip, x], dim=1))


class UNet(nn.Module):
    """U-Net (Ronneberger et al. 2015): a contracting path of a :class:`DoubleConv` and four
    :class:`Down` steps doubling the width (``base_width`` … ``16 * base_width``), an expanding
    path of four :class:`Up` steps with skip connections, and a 1×1 convolution to
    ``num_classes`` per-pixel logits.

    Args:
        in_channels (int): channels of the input image. Default: 3.
        num_classes (int): output channels (one logit map per class). Default: 2.
        base_width (int): width of the first level (64 in the paper). Default: 64.
        batch_norm (bool): batch norm after every 3×3 convolution. Default: True.

    Shape:
        input (Tensor[N, in_channels, H, W]) with H, W >= 16 ->
        output (Tensor[N, num_classes, H, W]);
        ``forward_features``: Tensor[N, base_width, H, W].
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 2, base_width: int = 64,
                 batch_norm: bool = True) -> None:
        super().__init__()
        w = base_width
        self.inc = DoubleConv(in_channels, w, batch_norm)
        self.down1 = Down(w, 2 * w, batch_norm)
        self.down2 = Down(2 * w, 4 * w, batch_norm)
        self.down3 = Down(4 * w, 8 * w, batch_norm)
        self.down4 = Down(8 * w, 16 * w, batch_norm)
        self.up1 = Up(16 * w, 8 * w, batch_norm)
        self.up2 = Up(8 * w, 4 * w, batch_norm)
        self.up3 = Up(4 * w, 2 * w, batch_norm)
        self.up4 = Up(2 * w, w, batch_norm)
        self.outc = Conv2d(w, num_classes, kernel_size=1)

        init_cnn_weights(self, linear_std=None, conv_types=(nn.Conv2d, nn.ConvTranspose2d))

    def forward_features(self, x: Tensor) -> Tensor:
        """Args:
            x (Tensor[N, in_channels, H, W]): the images, H, W >= 16.

        Returns:
            Tensor[N, base_width, H, W]: the last feature map of the expanding path.
        """
        if min(x.shape[-2:]) < 16:
            raise ValueError(f"UNet needs an input of at least 16×16 (four 2×2 poolings), got "
                             f"{tuple(x.shape[-2:])}")
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        x = self.down4(x4)
        x = self.up1(x, x4)
        x = self.up2(x, x3)
        x = self.up3(x, x2)
        return self.up4(x, x1)

    def forward(self, x: Tensor) -> Tensor:
        """Args:
            x (Tensor[N, in_channels, H, W]): the images, H, W >= 16.

        Returns:
            Tensor[N, num_classes, H, W]: per-pixel class scores (logits).
        """
        return self.outc(self.forward_features(x))


@register_model()
def unet(*, in_channels: int = 3, num_classes: int = 2, base_width: int = 64,
         **kwargs: Any) -> UNet:
    """U-Net with padded convolutions and batch norm (31.0 M parameters at ``base_width=64``).

    Args:
        in_channels (int): channels of the input image.
        num_classes (int): output logit maps.
        base_width (int): width of the first level.
        **kwargs: further arguments of :class:`UNet` (``batch_norm``).
    """
    return UNet(in_channels=in_channels, num_classes=num_classes, base_width=base_width, **kwargs)
