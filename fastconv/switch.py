"""``fastconv.enable()`` / ``disable()`` / ``enabled()``: torch's and torchvision's functional
convolutions and RoI functions routed to fastconv, for code that calls them directly."""
import contextlib
import functools
import sys
import threading
import warnings

from fastconv import functional
from fastconv.ops import INTERPRETING


class FallbackWarning(UserWarning):
    """A call routed to fastconv by :func:`enable` that fastconv refused, and that PyTorch's
    own implementation computed instead."""


# (module name, attribute, fastconv's function): what enable() replaces. torch.nn.Conv1d,
# Conv2d and ConvTranspose2d call these through torch.nn.functional, torchvision's RoIAlign,
# RoIPool and MultiScaleRoIAlign through their modules' globals, found when enable() runs.
def _routes():
    routes = [("torch.nn.functional", "conv1d", functional.conv1d),
              ("torch.nn.functional", "conv2d", functional.conv2d),
              ("torch.nn.functional", "conv_transpose2d", functional.conv_transpose2d)]
    try:
        import torchvision.ops  # noqa: F401  (imports its submodules)
    except ImportError:
        return routes
    # torchvision's two functions, wherever a torchvision module holds them (the package,
    # their own modules, the poolers, the detection heads)
    canonical = {"roi_align": (sys.modules["torchvision.ops.roi_align"].roi_align,
                               functional.roi_align),
                 "roi_pool": (sys.modules["torchvision.ops.roi_pool"].roi_pool,
                              functional.roi_pool)}
    for module_name in [m for m in list(sys.modules) if m.startswith("torchvision")]:
        for attr, (original, replacement) in canonical.items():
            if getattr(sys.modules[module_name], attr, None) is original:
                routes.append((module_name, attr, replacement))
    return routes


_lock = threading.Lock()
_patched = []          # (module, attribute, original), in the order they were replaced
_warned = set()


def _runs_on_fastconv(x) -> bool:
    import torch
    return isinstance(x, torch.Tensor) and (
        x.device.type == "cuda" or (INTERPRETING and x.device.type == "cpu"))


def _router(qualname, original, replacement):
    @functools.wraps(original)
    def route(*args, **kwargs):
        x = args[0] if args else kwargs.get("input")
        if not _runs_on_fastconv(x):
            return original(*args, **kwargs)
        try:
            return replacement(*args, **kwargs)
        except (TypeError, ValueError, RuntimeError, NotImplementedError) as e:
            # fastconv validates its arguments before it launches anything: a refusal here is
            # something it does not compute (e.g. integer or complex tensors)
            if qualname not in _warned:
                _warned.add(qualname)
                warnings.warn(f"fastconv.enable(): {qualname} fell back to PyTorch's own "
                              f"implementation because fastconv refused the call "
                              f"({type(e).__name__}: {e}); further fallbacks of {qualname} "
                              f"are not reported", FallbackWarning, stacklevel=2)
            return original(*args, **kwargs)
    route.__fastconv_original__ = original
    return route


def is_enabled() -> bool:
    """Whether :func:`enable` is in effect."""
    return bool(_patched)


def enable() -> None:
    """Route ``torch.nn.functional.conv1d``, ``conv2d``, ``conv_transpose2d`` and
    ``torchvision.ops.roi_align``, ``roi_pool`` to :mod:`fastconv.functional`, for every caller
    that reaches them through those modules: ``torch.nn.Conv2d`` and the other torch and
    torchvision modules, and functional calls inside third-party models (``F.conv2d(...)``).

    Only calls on CUDA tensors (and on CPU tensors under Triton's interpreter) go to fastconv;
    anything fastconv refuses runs on PyTorch's implementation, with a :class:`FallbackWarning`
    the first time per function. A name bound before ``enable()`` with ``from
    torch.nn.functional import conv2d`` keeps the original. Calling ``enable()`` again does
    nothing; :func:`disable` restores the original functions.
    """
    with _lock:
        if _patched:
            return
        for module_name, attr, replacement in _routes():
            module = sys.modules.get(module_name)
            if module is None:
                continue
            original = getattr(module, attr, None)
            if original is None or hasattr(original, "__fastconv_original__"):
                continue
            qualname = f"{module_name}.{attr}"
            if module_name.startswith("torchvision"):
                qualname = f"torchvision.ops.{attr}"
            setattr(module, attr, _router(qualname, original, replacement))
            _patched.append((module, attr, original))


def disable() -> None:
    """Undo :func:`enable`: every replaced function is the original object again."""
    with _lock:
        while _patched:
            module, attr, original = _patched.pop()
            setattr(module, attr, original)


@contextlib.contextmanager
def enabled():
    """:func:`enable` for the duration of a ``with`` block; on leaving, the switch is as it was
    before (blocks nest)."""
    was = is_enabled()
    enable()
    try:
        yield
    finally:
        if not was:
            disable()
