"""How fastconv's ops are registered: ``torch.library.Library`` definitions, a cached real
implementation, a fake one, and an autograd formula as a dispatcher kernel.

``torch.library.custom_op`` with ``register_autograd`` does the same through layers of Python
that cost about 10 us per call and 25 us per forward and backward (measured in
``benchmarks/NOTES.md``); the definitions here keep what ``torch.compile``, ``opcheck``, autocast
and CUDA graphs rely on - a schema, a fake (meta) kernel, an ``Autograd`` kernel, the
``fastconv::`` names - with one dispatch to the real kernel.

The autograd kernel of an op (``autograd``) runs its ``torch.autograd.Function`` when some
tensor argument requires a gradient, and otherwise redispatches straight to the real kernel.
"""
from typing import Callable

import torch
from torch.autograd import profiler as _profiler

_LIB = torch.library.Library("fastconv", "DEF")
# "fastconv::name" -> the Python function behind the op's real kernel
IMPLEMENTATIONS = {}


def define(schema: str, impl: Callable, fake: Callable):
    """Define ``fastconv::<schema>`` with ``impl`` as its kernel on every backend (it refuses
    devices the kernels cannot run on) and ``fake`` for fake and meta tensors; returns the
    op's default overload."""
    name = schema.split("(", 1)[0]
    IMPLEMENTATIONS[f"fastconv::{name}"] = impl
    _LIB.define(schema)
    _LIB.impl(name, impl, "CompositeExplicitAutograd")
    torch.library.register_fake(f"fastconv::{name}", fake, lib=_LIB)
    return getattr(torch.ops.fastconv, name).default


def autograd(op, function: type, differentiable: int):
    """Register ``function`` (a ``torch.autograd.Function`` taking ``run`` and then the op's
    arguments) as the autograd kernel of ``op``: it runs when one of the first
    ``differentiable`` arguments is a tensor that requires a gradient (and grad mode is on);
    otherwise the op's real kernel runs directly.

    ``run(*args)`` computes the op below autograd. Where nothing sits between autograd and the
    backend - plain CPU or CUDA tensors, no fake tensors, dispatch modes or lazy conjugate
    views - it is the op's Python implementation itself, called without going back through the
    dispatcher (each trip from the dispatcher into Python costs about 4 us); otherwise it
    redispatches to the keys below autograd."""
    after_autograd = torch._C._after_autograd_keyset
    name = op._schema.name

    def kernel(keyset, *args):
        below = keyset & after_autograd
        if below.highestPriorityTypeId() in _BACKENDS:
            run = IMPLEMENTATIONS[name]
        else:
            def run(*args):
                return op.redispatch(below, *args)
        if torch.is_grad_enabled():
            for t in args[:differentiable]:
                if t is not None and t.requires_grad:
                    return function.apply(run, *args)
        return run(*args)
    _LIB.impl(op._schema.name.split("::")[1], kernel, "Autograd", with_keyset=True)


# the dispatch keys whose kernel is the op's Python implementation (``define``'s impl)
_BACKENDS = (torch._C.DispatchKey.CPU, torch._C.DispatchKey.CUDA)
_C = torch._C
_DK = torch._C.DispatchKey


def call(op, *args):
    """``op(*args)`` for an op without an autograd formula (a gradient op, called from a
    backward): its Python implementation called directly where the dispatcher would lead
    straight to it, and the dispatcher otherwise. Saves the trip through the dispatcher into
    Python (about 4 us).

    Straight to it means: plain CPU or CUDA tensors (no subclass such as fake or functional
    tensors, no meta tensor), no dispatch mode, no autocast, no functorch transform, and
    nothing for autograd to record (a higher-order gradient goes through the dispatcher, whose
    autograd fallback records that the op has no derivative); and no profiler running, which
    records the op's name at the dispatcher. Each check is a flag read
    (about 0.1 us); computing the dispatcher's key set in Python would cost 4 us."""
    grad_mode = torch.is_grad_enabled()
    for a in args:
        if isinstance(a, torch.Tensor) and (type(a) is not torch.Tensor or a.is_meta or
                                            (grad_mode and a.requires_grad)):
            return op(*args)
    if _C._len_torch_dispatch_stack() or _profiler._is_profiler_enabled or \
            not _C._dispatch_tls_is_dispatch_key_excluded(_DK.AutocastCUDA) or \
            not _C._dispatch_tls_is_dispatch_key_excluded(_DK.AutocastCPU) or \
            _C._dispatch_tls_is_dispatch_key_included(_DK.FuncTorchDynamicLayerFrontMode):
        return op(*args)
    return IMPLEMENTATIONS[op._schema.name](*args)
