"""Transfer learning: give a (pretrained) model a new classifier and choose what trains.

    model = fastconv.models.get_model("resnet50")
    model.load_state_dict(torchvision.models.resnet50(weights="DEFAULT").state_dict())
    groups = fastconv.models.finetune(model, num_classes=10, train="head")
    optimizer = torch.optim.SGD(groups, lr=0.01, momentum=0.9)   # each group has its own lr

The classifier is the model's last ``nn.Linear`` (or, for models whose head is a convolution,
such as NiN and U-Net, its last convolution), found in module-definition order; auxiliary
classifiers (GoogLeNet's ``aux1``/``aux2``, Inception v3's ``AuxLogits``) with the same number of
outputs are replaced too. New layers start from PyTorch's default initialisation.
"""
from typing import Dict, List, Sequence, Union

import torch.nn as nn

from fastconv.nn import Conv2d

TrainSpec = Union[str, Sequence[str]]


def _head_candidates(model: nn.Module) -> List[str]:
    """Names of the layers that map features to class scores, the main classifier last."""
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if linears:
        # an auxiliary head defined after the main one does not make it the classifier
        main = ([n for n in linears if "aux" not in n.lower()] or linears)[-1]
    else:
        convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
        if not convs:
            raise ValueError("finetune(): model has no nn.Linear or nn.Conv2d to use as its "
                             "classifier")
        main = convs[-1]
    out = _out_features(model.get_submodule(main))
    aux = [n for n in linears if n != main and "aux" in n.lower()
           and _out_features(model.get_submodule(n)) == out]
    return aux + [main]


def _out_features(layer: nn.Module) -> int:
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels


def _new_head(old: nn.Module, num_classes: int) -> nn.Module:
    """A layer like ``old`` (same input size, bias, device and dtype) with num_classes outputs."""
    weight = old.weight
    factory = {"device": weight.device, "dtype": weight.dtype}
    if isinstance(old, nn.Linear):
        return nn.Linear(old.in_features, num_classes, bias=old.bias is not None, **factory)
    if old.groups != 1:
        raise ValueError("finetune(): the classifier convolution is grouped; replace it by hand")
    return Conv2d(old.in_channels, num_classes, old.kernel_size, stride=old.stride,
                  padding=old.padding, dilation=old.dilation, bias=old.bias is not None,
                  padding_mode=old.padding_mode, **factory)


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def finetune(model: nn.Module, num_classes: int, train: TrainSpec = "head", lr: float = 1e-3,
             pretrained_lr_scale: float = 0.1) -> List[Dict]:
    """Replace ``model``'s classifier by a fresh one with ``num_classes`` outputs, freeze what
    is not trained, and return optimizer parameter groups.

    Args:
        model (nn.Module): the model, modified in place (e.g. a ``fastconv.models`` model with
            pretrained weights loaded).
        num_classes (int): outputs of the new classifier.
        train ('head', 'all' or list of str): what trains. ``'head'``: only the new classifier
            (feature extraction); ``'all'``: every parameter (full fine-tuning); a list of module
            names (e.g. ``['layer4']``): those modules and the new classifier, the rest frozen.
        lr (float): learning rate of the new classifier.
        pretrained_lr_scale (float): the learning rate of the trained pretrained layers is
            ``lr * pretrained_lr_scale`` (they start close to a good solution; a large step
            would undo what they learned).

    Returns:
        List[dict]: parameter groups for a ``torch.optim`` optimizer: ``{"params", "lr",
        "name"}`` with name ``"head"`` and, when pretrained layers train, ``"pretrained"``.
        Frozen parameters have ``requires_grad=False`` and are in no group.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"finetune(): model must be an nn.Module, got {type(model).__name__}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes <= 0:
        raise ValueError(f"finetune(): num_classes must be a positive int, got {num_classes!r}")
    if not (lr > 0 and pretrained_lr_scale >= 0):
        raise ValueError(f"finetune(): lr must be positive and pretrained_lr_scale non-negative, "
                         f"got lr={lr!r}, pretrained_lr_scale={pretrained_lr_scale!r}")
    if isinstance(train, str):
        if train not in ("head", "all"):
            raise ValueError(f"finetune(): train must be 'head', 'all' or a list of module "
                             f"names, got train={train!r}")
        trained_modules = []
    else:
        trained_modules = list(train)
        names = dict(model.named_modules())
        missing = [n for n in trained_modules if n not in names]
        if missing:
            raise ValueError(f"finetune(): train names modules the model does not have: "
                             f"{missing}")

    heads = _head_candidates(model)
    for name in heads:
        _set_submodule(model, name, _new_head(model.get_submodule(name), num_classes))
    head_params = [p for name in heads for p in model.get_submodule(name).parameters()]
    head_ids = {id(p) for p in head_params}

    pretrained = []
    for name, p in model.named_parameters():
        if id(p) in head_ids:
            p.requires_grad_(True)
            continue
        trains = train == "all" or any(name == m or name.startswith(m + ".")
                                       for m in trained_modules)
        p.requires_grad_(trains)
        if trains:
            pretrained.append(p)

    groups = [{"params": head_params, "lr": lr, "name": "head"}]
    if pretrained:
        groups.append({"params": pretrained, "lr": lr * pretrained_lr_scale,
                       "name": "pretrained"})
    return groups
