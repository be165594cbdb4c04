"""``fastconv.convert``: swap the convolutions and RoI modules of an existing model for
fastconv's."""
import copy

import torch.nn as nn
import torchvision.ops as tvops

from fastconv.nn.conv import Conv1d, Conv2d
from fastconv.nn.conv_transpose import ConvTranspose2d
from fastconv.nn.roi import MultiScaleRoIAlign, RoIAlign, RoIPool

# torch/torchvision module type -> fastconv type. Only exact types are swapped: a user subclass of
# nn.Conv2d may override forward(), and replacing it would silently change what it computes.
_REPLACEMENTS = {nn.Conv1d: Conv1d, nn.Conv2d: Conv2d, nn.ConvTranspose2d: ConvTranspose2d,
                 tvops.RoIAlign: RoIAlign, tvops.RoIPool: RoIPool,
                 tvops.MultiScaleRoIAlign: MultiScaleRoIAlign}


def convert(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Return ``model`` with every ``nn.Conv1d``, ``nn.Conv2d`` and ``nn.ConvTranspose2d``
    replaced by fastconv's :class:`Conv1d`, :class:`Conv2d` and :class:`ConvTranspose2d`, and
    every ``torchvision.ops.RoIAlign``, ``RoIPool`` and ``MultiScaleRoIAlign`` (the box and
    mask poolers of torchvision's Faster/Mask R-CNN) by fastconv's :class:`RoIAlign`,
    :class:`RoIPool` and :class:`MultiScaleRoIAlign`. Only these exact types are replaced;
    subclasses of them are left as they are.

    The replacements hold the very same parameters and buffers (and hooks, and attributes such
    as a ``MultiScaleRoIAlign``'s cached ``scales``), so ``state_dict``, optimisers and training
    state carry over. With ``inplace=False`` (the default) the model is deep-copied first and
    the original is left untouched.

    Args:
        model (nn.Module): any model; it may itself be an ``nn.Conv2d`` or an RoI module.
        inplace (bool): modify ``model`` itself instead of a copy.

    Returns:
        nn.Module: the converted model.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"convert(): model must be an nn.Module, got {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    for module in model.modules():
        new_type = _REPLACEMENTS.get(type(module))
        if new_type is not None:
            # the fastconv classes add no state to their torch/torchvision base classes, so
            # changing the class keeps parameters, buffers, hooks and training mode as they were
            module.__class__ = new_type
    return model


def unconvert(model: nn.Module, inplace: bool = False) -> nn.Module:
    """The inverse of :func:`convert`: every fastconv module becomes the torch / torchvision
    module it subclasses, holding the same parameters. A fastconv model turned back this way
    computes with ATen (and torchvision's RoI kernels): the reference it is verified against.

    Args:
        model (nn.Module): any model.
        inplace (bool): modify ``model`` itself instead of a deep copy.

    Returns:
        nn.Module: the model with torch's layers.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"unconvert(): model must be an nn.Module, got {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    back = {new: old for old, new in _REPLACEMENTS.items()}
    for module in model.modules():
        old_type = back.get(type(module))
        if old_type is not None:
            module.__class__ = old_type
    return model
