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


def get_model(name: str, weights=None, **kwargs) -> nn.Module:
    """Build the model registered as ``name``; keyword arguments go to its builder (e.g.
    ``num_classes=10``).

    Args:
        name (str): one of :func:`list_models`.
        weights: None (random initialisation); for a model torchvision has, one of its weights
            (``torchvision.models.ResNet50_Weights.IMAGENET1K_V2``) or their name
            (``"IMAGENET1K_V1"``, ``"DEFAULT"``, ``"ResNet50_Weights.DEFAULT"``), downloaded
            through ``torch.hub`` as torchvision does; for any model, the path of a
            ``state_dict`` saved with ``torch.save``.
    """
    if name not in _BUILDERS:
        import difflib
        close = difflib.get_close_matches(name, _BUILDERS, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"unknown model {name!r}{hint}; known: {', '.join(list_models())}")
    if weights is None:
        return _BUILDERS[name](**kwargs)
    from fastconv.models import pretrained
    return pretrained.build(name, _BUILDERS[name], weights, kwargs)
