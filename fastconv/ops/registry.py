"""How fastconv's ops are registered and called: ``torch.library.Library`` definitions, a cached
real implementation, a fake one, an autograd formula as a dispatcher kernel, and a direct call
for the eager path.

``torch.library.custom_op`` with ``register_autograd`` does the same through layers of Python
that cost about 10 us per call and 25 us per forward and backward (measured in
``benchmarks/NOTES.md``); the definitions here keep what ``torch.compile``, ``opcheck``, autocast
and CUDA graphs rely on - a schema, a fake (meta) kernel, an ``Autograd`` kernel, the
``fastconv::`` names - with one trip from the dispatcher into Python per call.

The eager path skips even that one where nothing but the op's own Python would run
(``call``): the functional layer and the backward formulas call the op's implementation, and
its ``torch.autograd.Function`` when a gradient is wanted, directly. Each trip from the
dispatcher into Python costs about 4 us (its arguments converted there and back); a call that
a dispatch mode, a tensor subclass, autocast, a functorch transform, the profiler or a tracing
compiler must see goes through the dispatcher as before.
"""
from typing import Callable

import torch
from torch.autograd import profiler as _profiler

_LIB = torch.library.Library("fastconv", "DEF")
# "fastconv::name" -> the Python function behind the op's real kernel
IMPLEMENTATIONS = {}
# "fastconv::name" -> (its torch.autograd.Function, how many leading arguments are
# differentiable), for the ops with an autograd formula
AUTOGRAD = {}


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
    AUTOGRAD[name] = (function, differentiable)

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
    """``op(*args)``, as the dispatcher would compute it, without the dispatcher where it would
    lead straight to the op's Python (``straight``): the implementation itself, or for an op
    with an autograd formula whose differentiable arguments require a gradient, its
    ``torch.autograd.Function`` applied to it (as the op's autograd kernel does). What the
    functional layer and the backward formulas call."""
    if torch.compiler.is_compiling():  # traced: the graph must hold the op itself
        return op(*args)
    grad_mode = torch.is_grad_enabled()
    first_grad = -1  # the first tensor argument that requires a gradient
    for i, a in enumerate(args):
        if isinstance(a, torch.Tensor):
            if type(a) is not torch.Tensor or a.is_meta:
                return op(*args)
            if grad_mode and first_grad < 0 and a.requires_grad:
                first_grad = i
    if _seen_by_others():
        return op(*args)
    name = op._schema.name
    impl = IMPLEMENTATIONS[name]
    if first_grad >= 0:
        formula = AUTOGRAD.get(name)
        if formula is None:
            # the dispatcher's autograd fallback records that the op has no derivative, so a
            # higher-order gradient fails instead of being zero
            return op(*args)
        function, differentiable = formula
        if first_grad < differentiable:
            return function.apply(impl, *args)
    return impl(*args)


def straight(*args) -> bool:
    """Whether the dispatcher would take a call with these arguments straight to an op's
    Python implementation (or its autograd kernel): plain CPU or CUDA tensors (no subclass
    such as fake or functional tensors, no meta tensor), no dispatch mode, no autocast, no
    functorch transform, no profiler (it records the op's name at the dispatcher) and no
    tracing compiler. Each check is a flag read (about 0.1 us); computing the dispatcher's key
    set in Python would cost 4 us."""
    if torch.compiler.is_compiling():  # traced: the graph must hold the op itself
        return False
    for a in args:
        if isinstance(a, torch.Tensor) and (type(a) is not torch.Tensor or a.is_meta):
            return False
    return not _seen_by_others()


def _seen_by_others() -> bool:
    """A dispatch mode, the profiler, autocast or a functorch transform is on: it must see the
    op through the dispatcher."""
    return (_C._len_torch_dispatch_stack() > 0 or _profiler._is_profiler_enabled or
            not _C._dispatch_tls_is_dispatch_key_excluded(_DK.AutocastCUDA) or
            not _C._dispatch_tls_is_dispatch_key_excluded(_DK.AutocastCPU) or
            _C._dispatch_tls_is_dispatch_key_included(_DK.FuncTorchDynamicLayerFrontMode))
