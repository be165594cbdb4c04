"""fastconv: Triton kernels for convolution and RoIAlign/RoIPool, as autograd-aware
torch.library ops.

    import fastconv
    y = fastconv.functional.conv2d(x, w, stride=2, padding=1, activation="relu")
    layer = fastconv.Conv2d(64, 128, 3, padding=1)
    model = fastconv.convert(torchvision.models.resnet18())
    print(fastconv.explain(x, w, stride=2, padding=1))
    with fastconv.enabled():      # torch.nn.functional.conv2d etc. run on fastconv's kernels
        y = any_model(x)
"""
from fastconv.conv import op as _conv_op, transpose_op as _transpose_op  # noqa: F401
from fastconv.roi import align_op as _align_op, pool_op as _pool_op  # noqa: F401  (the ops)
from fastconv import functional, ops
from fastconv.functional import explain
from fastconv.nn import (Conv1d, Conv2d, ConvTranspose2d, MultiScaleRoIAlign, RoIAlign, RoIPool,
                         convert, unconvert)
from fastconv.ops import INTERPRETING
from fastconv.switch import FallbackWarning, disable, enable, enabled, is_enabled

__version__ = "0.1.0"
__all__ = ["Conv1d", "Conv2d", "ConvTranspose2d", "RoIAlign", "RoIPool", "MultiScaleRoIAlign",
           "convert", "unconvert", "explain", "functional", "ops", "models", "INTERPRETING",
           "enable", "disable", "enabled", "is_enabled", "FallbackWarning", "__version__"]

# Subpackages beside the op stack, imported on first use: ``fastconv.models.get_model(...)``
# works after a plain ``import fastconv`` without every import paying for the model zoo.
_LAZY_SUBMODULES = ("models", "verify", "summary", "bench")


def __getattr__(name):
    if name in _LAZY_SUBMODULES:
        import importlib
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY_SUBMODULES))
