"""The model registry: ``list_models()``, ``get_model(name, **kwargs)`` and the decorator that
fills them, in the style of torchvision.models and timm."""
from typing import Callable, Dict, List, Optional

import torch.nn as nn

_BUILDERS: Dict[str, Callable[..., nn.Module]] = {}


def register_model(name: Optional[str] = None):
    """Register a builder under ``name`` (default: the function's name). Every builder takes
    ``num_classes`` as a keyword argument."""
    def decorate(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or fn.__name__
        if key in _BUILDERS:
            raise ValueError(f"a model named {key!r} is already registered")
        _BUILDERS[key] = fn
        return fn
    return decorate


def list_models() -> List[str]:
    """The names ``get_model`` accepts, sorted."""
    return sorted(_BUILDERS)


def get_model(name: str, **kwargs) -> nn.Module:
    """Build the model registered as ``name``; keyword arguments go to its builder (e.g.
    ``num_classes=10``)."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; fastconv.models.list_models() gives the "
                         f"{len(_BUILDERS)} known names")
    return _BUILDERS[name](**kwargs)
