"""The classic CNN architectures, built on fastconv's layers.

    import fastconv.models as M
    M.list_models()                          # ['alexnet', 'alexnet_original', ..., 'zfnet']
    model = M.get_model("resnet50", num_classes=10)
    model.load_state_dict(torchvision.models.resnet50().state_dict())   # same names
    features = model.forward_features(x)
    groups = M.finetune(model, num_classes=10, train="head")

Where torchvision has the model, module and parameter names are torchvision's, so its
state_dicts (pretrained weights included) load with ``strict=True``.
"""
from typing import Optional, Sequence, Tuple

import torch

from fastconv.models import (classic, densenet, inception, mobilenet, resnet,  # noqa: F401
                             roi_heads, shufflenet, unet, vgg)
from fastconv.models._registry import get_model, list_models, register_model
from fastconv.models.finetune import finetune

# (channels, height, width) each model is usually fed; every other model takes 3x224x224
_INPUT_SIZES = {
    "lenet5": (1, 32, 32),
    "alexnet_original": (3, 227, 227),
    "vgg8_cifar": (3, 32, 32),
    "inception_v3": (3, 299, 299),
    "unet": (3, 256, 256),
    # RoI heads: the backbone feature map they pool from (stride 16)
    "fast_rcnn_box_head": (512, 38, 50),
    "mask_rcnn_mask_head": (256, 50, 68),
}
# the smallest size at which a model's layers all have a non-empty output (used by
# `fastconv verify` under the interpreter, where every pixel costs)
_SMALL_SIZES = {
    "lenet5": (1, 32, 32),
    "alexnet": (3, 63, 63),
    "alexnet_original": (3, 67, 67),
    "zfnet": (3, 64, 64),
    "nin": (3, 64, 64),
    "inception_v3": (3, 75, 75),
    "unet": (3, 16, 16),
    "fast_rcnn_box_head": (512, 14, 14),
    "mask_rcnn_mask_head": (256, 14, 14),
}
_ROI_HEADS = ("fast_rcnn_box_head", "mask_rcnn_mask_head")


def default_input_size(name: str) -> Tuple[int, int, int]:
    """(C, H, W) of the input ``name`` is usually fed (for the RoI heads, their feature map)."""
    return _INPUT_SIZES.get(name, (3, 224, 224))


def small_input_size(name: str) -> Tuple[int, int, int]:
    """The smallest (C, H, W) ``name`` takes: what verification under the interpreter uses."""
    return _SMALL_SIZES.get(name, (3, 32, 32))


def example_inputs(name: str, batch: int = 1, size: Optional[Sequence[int]] = None,
                   device="cpu", dtype: torch.dtype = torch.float32,
                   generator: Optional[torch.Generator] = None) -> tuple:
    """The arguments of ``get_model(name).forward``: one random batch of ``size`` (default
    :func:`default_input_size`); for the RoI heads a feature map and four boxes per image (in
    image coordinates, i.e. 16 times the feature map's)."""
    size = tuple(size or default_input_size(name))
    if device == "meta" or torch.device(device).type == "meta":
        x = torch.empty((batch, *size), device="meta", dtype=dtype)
    else:
        x = torch.randn((batch, *size), generator=generator, dtype=dtype).to(device)
    if name not in _ROI_HEADS:
        return (x,)
    h, w = size[1] * 16, size[2] * 16
    fractions = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.25, 0.1, 0.9, 0.6],
                              [0.05, 0.4, 0.45, 1.0], [0.3, 0.3, 0.7, 0.8]], dtype=dtype)
    per_image = fractions * torch.tensor([w, h, w, h], dtype=dtype)
    rows = [torch.cat([torch.full((4, 1), float(i), dtype=dtype), per_image], dim=1)
            for i in range(batch)]
    boxes = torch.cat(rows).to(x.device)
    return x, boxes


__all__ = ["list_models", "get_model", "register_model", "finetune", "default_input_size",
           "small_input_size", "example_inputs"]
