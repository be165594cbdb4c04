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
    """Register ``function`` (a ``torch.autograd.Function`` taking the op's arguments) as the
    autograd kernel of ``op``: it runs when one of the first ``differentiable`` arguments is a
    tensor that requires a gradient (and grad mode is on); otherwise the op's real kernel
    runs directly."""
    after_autograd = torch._C._after_autograd_keyset

    def kernel(keyset, *args):
        if torch.is_grad_enabled():
            for t in args[:differentiable]:
                if t is not None and t.requires_grad:
                    return function.apply(*args)
        # straight on to the kernel below autograd, without a second trip through the
        # dispatcher's front
        return op.redispatch(keyset & after_autograd, *args)
    _LIB.impl(op._schema.name.split("::")[1], kernel, "Autograd", with_keyset=True)


def redispatch(op, *args):
    """``op(*args)`` below autograd: what a ``Function.forward`` calls."""
    with torch._C._AutoDispatchBelowAutograd():
        return op(*args)
