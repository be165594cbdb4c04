"""Pretrained weights for ``get_model(name, weights=...)``: torchvision's weight enums (or their
names) for the models torchvision has, and a local ``state_dict`` file for any model.

fastconv's models use torchvision's module names, so torchvision's checkpoints load unchanged,
with the same adjustments torchvision's own builders make (GoogLeNet's and Inception v3's
input transform and auxiliary classifiers, DenseNet's old ``norm.1``-style keys).
"""
import os
import re
import urllib.error
from pathlib import Path
from typing import Any, Callable, Dict, Union

import torch
import torch.nn as nn

Weights = Union[str, os.PathLike, "torchvision.models.WeightsEnum"]  # noqa: F821

# DenseNet checkpoints predate the ban on '.' in module names: 'denselayer1.norm.1.weight'
_OLD_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def torchvision_weights(name: str):
    """torchvision's weights enum for the model ``name`` (e.g. ``ResNet50_Weights``), or None
    where torchvision has no such model."""
    import torchvision
    try:
        return torchvision.models.get_model_weights(name)
    except (ValueError, KeyError, AttributeError):
        return None


def _is_file_argument(weights) -> bool:
    if isinstance(weights, os.PathLike):
        return True
    if not isinstance(weights, str):
        return False
    return (os.sep in weights or "/" in weights or os.path.exists(weights)
            or weights.endswith((".pth", ".pt", ".bin", ".ckpt")))


def _resolve_enum(name: str, weights):
    enum = torchvision_weights(name)
    if enum is None:
        raise ValueError(
            f"get_model({name!r}, weights={weights!r}): torchvision has no weights for {name}; "
            f"pass the path of a state_dict saved with torch.save(model.state_dict(), path)")
    members = ", ".join(enum.__members__)
    if isinstance(weights, str):
        try:
            return enum.verify(weights)
        except (ValueError, KeyError):
            raise ValueError(f"get_model({name!r}, weights={weights!r}): not a weight of "
                             f"{enum.__name__}; it has {members} (or give a file path)") from None
    try:
        return enum.verify(weights)
    except TypeError as e:
        raise TypeError(f"get_model({name!r}, weights=...): {e}; {enum.__name__} has "
                        f"{members}") from None


def _fetch(name: str, member) -> Dict[str, torch.Tensor]:
    url = member.url
    try:
        # looked up on torch.hub at call time (what torchvision's enums call, too)
        return torch.hub.load_state_dict_from_url(url, progress=True, check_hash=True,
                                                  map_location="cpu")
    except (urllib.error.URLError, OSError, ConnectionError) as e:
        filename = url.rsplit("/", 1)[-1]
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        raise RuntimeError(
            f"could not fetch the {type(member).__name__}.{member.name} weights of {name} from "
            f"{url} ({e}). Without internet access, download that file on another machine and "
            f"pass its path: get_model({name!r}, weights='/path/to/{filename}'), or copy it to "
            f"{cache}/ where torch.hub looks first") from e


def _load_file(name: str, path) -> Dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"get_model({name!r}, weights={str(path)!r}): no such file (weights= takes a "
            f"torchvision weight name such as 'DEFAULT' or the path of a saved state_dict)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"get_model({name!r}, weights={str(path)!r}): could not read a "
                         f"state_dict from the file ({type(e).__name__}: {e}); save one with "
                         f"torch.save(model.state_dict(), path)") from e
    if isinstance(state, dict) and not any(isinstance(v, torch.Tensor) for v in state.values()):
        for key in ("state_dict", "model", "model_state_dict"):  # common checkpoint wrappers
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict):
        raise ValueError(f"get_model({name!r}, weights={str(path)!r}): the file holds a "
                         f"{type(state).__name__}, not a state_dict")
    return state


def _fix_old_keys(state: Dict[str, Any]) -> Dict[str, Any]:
    fixed = {}
    for key, value in state.items():
        match = _OLD_DENSENET_KEY.match(key)
        fixed[match.group(1) + match.group(2) if match else key] = value
    return fixed


def build(name: str, builder: Callable[..., nn.Module], weights: Weights,
          kwargs: Dict[str, Any]) -> nn.Module:
    """``builder(**kwargs)`` holding ``weights`` (see :func:`fastconv.models.get_model`)."""
    kwargs = dict(kwargs)
    if _is_file_argument(weights):
        model = builder(**kwargs)
        state = _fix_old_keys(_load_file(name, weights))
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise ValueError(f"get_model({name!r}, weights={str(weights)!r}): the file's "
                             f"state_dict does not fit {name} as built ({kwargs or 'defaults'}): "
                             f"{e}") from None
        return model

    member = _resolve_enum(name, weights)
    categories = len(member.meta["categories"])
    if kwargs.get("num_classes", categories) != categories:
        raise ValueError(
            f"get_model({name!r}, weights={member}): those weights have {categories} classes, "
            f"not num_classes={kwargs['num_classes']}; load them with {categories} and call "
            f"fastconv.models.finetune(model, num_classes={kwargs['num_classes']})")
    kwargs["num_classes"] = categories
    # torchvision's builders: Google's checkpoints expect the transformed input, carry the
    # auxiliary classifiers, and keep them only if asked (GoogLeNet: not by default)
    aux = name in ("googlenet", "inception_v3")
    keep_aux = kwargs.get("aux_logits", name == "inception_v3")
    if aux:
        kwargs.setdefault("transform_input", True)
        kwargs["aux_logits"] = True
        kwargs["init_weights"] = False
    model = builder(**kwargs)
    model.load_state_dict(_fix_old_keys(_fetch(name, member)), strict=True)
    if aux and not keep_aux:
        model.aux_logits = False
        if name == "googlenet":
            model.aux1 = None
            model.aux2 = None
        else:
            model.AuxLogits = None
    return model
