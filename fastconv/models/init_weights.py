"""The weight initialisation most of torchvision's CNNs share, in one place.

He-normal convolution weights (fan_out, ReLU gain), zero convolution biases, norms at the
identity (weight 1, bias 0), and, where a model asks for it, N(0, std^2) linear weights with zero
biases. The models differ only in which layer types the rule covers; each passes those.
"""
from typing import Optional, Tuple, Type

import torch.nn as nn


def init_cnn_weights(model: nn.Module, linear_std: Optional[float] = 0.01,
                 conv_types: Tuple[Type[nn.Module], ...] = (nn.Conv2d,),
                 zero_conv_bias: bool = True) -> None:
    """Initialise ``model``'s layers in place, in ``model.modules()`` order (so that a seeded
    model draws the same numbers as torchvision's).

    Args:
        linear_std: standard deviation of the linear layers' weights; None leaves linear layers
            at torch's default (as ResNet does).
        conv_types: the convolution classes to initialise (U-Net and the mask head add
            ``nn.ConvTranspose2d``).
        zero_conv_bias: zero the convolutions' biases; False leaves them at torch's default
            (ResNet's rule, which the squeeze-and-excitation gates' biased 1x1 convs keep).
    """
    for m in model.modules():
        if isinstance(m, conv_types):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if zero_conv_bias and m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif linear_std is not None and isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, linear_std)
            nn.init.zeros_(m.bias)
