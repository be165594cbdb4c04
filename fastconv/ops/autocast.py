"""Autocast rules for fastconv's ops: the casts torch and torchvision apply to their own ops.

``torch.library.register_autocast`` casts to one dtype fixed when it is registered, but torch's
convolutions run in whatever dtype the enclosing ``torch.autocast(dtype=...)`` names, so the rules
here are kernels of their own, registered under the ``AutocastCPU`` and ``AutocastCUDA`` dispatch
keys. Being dispatcher kernels (not Python wrappers) they apply to every caller of
``torch.ops.fastconv.*``, and ``torch.compile`` traces them like torch's own autocast kernels.

Two policies, as in ATen's ``autocast_mode.cpp`` and torchvision's ``_autograd_registrations.py``:

- ``lower_precision``: the convolutions. Floating-point tensors other than float64 are cast to
  the autocast dtype of their device type (``torch.get_autocast_dtype``) and the op runs there,
  as torch's ``conv2d`` / ``conv_transpose2d`` (``lower_precision_fp``).
- ``float32``: the RoI ops. The op runs in float32 and its floating-point outputs are cast back
  to the dtype of the first tensor argument, as torchvision's ``roi_align`` / ``roi_pool``.

Only tensors on the autocast's own device type are cast (a CPU tensor is left alone by CUDA
autocast), and the op itself runs with that autocast key excluded, as ``at::autocast`` does.
The casts are ordinary ``Tensor.to`` calls, so autograd sees them: the gradient of a float32
leaf comes back in float32.
"""
from typing import Callable

import torch

DEVICE_TYPES = ("cpu", "cuda")

# held for the life of the process: the registrations end when the Library is destroyed
_LIB = torch.library.Library("fastconv", "IMPL")


def autocast_key(device_type: str) -> str:
    """The dispatch key name of ``device_type``'s autocast, e.g. 'AutocastCUDA'."""
    return "Autocast" + torch._C._dispatch_key_for_device(device_type)


def _eligible(t, device_type: str) -> bool:
    """at::autocast::is_eligible: a floating-point tensor of this device type, not float64."""
    return (isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != torch.float64
            and t.device.type == device_type)


def _cast(args, device_type: str, dtype: torch.dtype) -> list:
    return [a.to(dtype) if _eligible(a, device_type) else a for a in args]


def _without_autocast(device_type: str):
    key = getattr(torch._C.DispatchKey, autocast_key(device_type))
    return torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(key))


def _lower_precision(op, device_type: str) -> Callable:
    def kernel(*args):
        dtype = torch.get_autocast_dtype(device_type)
        with _without_autocast(device_type):
            return op(*_cast(args, device_type, dtype))
    return kernel


def _float32(op, device_type: str) -> Callable:
    def kernel(*args):
        # the output dtype follows the first tensor argument (the input, or the gradient)
        out_dtype = args[0].dtype
        with _without_autocast(device_type):
            out = op(*_cast(args, device_type, torch.float32))
        if isinstance(out, tuple):
            return tuple(o.to(out_dtype) if o.is_floating_point() else o for o in out)
        return out.to(out_dtype)
    return kernel


_POLICIES = {"lower_precision": _lower_precision, "float32": _float32}


def register(name: str, policy: str) -> None:
    """Register ``policy`` as the CPU and CUDA autocast kernel of ``fastconv::<name>``."""
    op = getattr(torch.ops.fastconv, name).default
    for device_type in DEVICE_TYPES:
        _LIB.impl(name, _POLICIES[policy](op, device_type), autocast_key(device_type))
