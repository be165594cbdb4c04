"""How an op call gets from the dispatcher to fastconv's Python, and back out again.

- Plain CPU/CUDA tensors: the functional layer calls the op's implementation (or its
  autograd.Function) itself, without the dispatcher (``registry.call``), and a backward that
  wants both gradients replays both gradient ops' launches as one call.
- Anything else between autograd and the backend - a dispatch mode, fake or meta tensors,
  autocast, the profiler, a higher-order gradient - goes through the dispatcher, which sees
  the op by name.
- The caches forget the least recently used signature, not the oldest.
"""
import contextlib

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import fastconv.functional as FC
from fastconv.conv import op as conv_op
from fastconv.ops import registry
from fastconv.ops.launch_cache import LRU, CACHES
from helpers import rel_err


class _SeenOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func._schema.name)
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def direct_calls(*names):
    """Count the calls of each op's implementation that do not come through the dispatcher
    (which holds the implementation registered at definition, not this spy)."""
    counts = dict.fromkeys(names, 0)
    saved = {n: registry.IMPLEMENTATIONS[f"fastconv::{n}"] for n in names}

    def spy(name):
        def impl(*args):
            counts[name] += 1
            return saved[name](*args)
        return impl
    for n in names:
        registry.IMPLEMENTATIONS[f"fastconv::{n}"] = spy(n)
    try:
        yield counts
    finally:
        registry.IMPLEMENTATIONS.update({f"fastconv::{n}": f for n, f in saved.items()})


CONV_OPS = ("conv2d", "conv2d_input_grad", "conv2d_weight_grad")


def _conv(requires_grad=False):
    x = torch.randn(1, 16, 5, 6, requires_grad=requires_grad)
    w = torch.randn(16, 16, 3, 3, requires_grad=requires_grad)
    return x, w


def _backward_signatures():
    return [key for key in conv_op._CALLS.entries if key[0] == "conv2d_backward"]


def test_plain_tensors_go_straight_to_the_implementations():
    """The forward's implementation runs without the dispatcher; a backward that wants both
    gradients replays both ops' launches as one call."""
    x, w = _conv(requires_grad=True)
    with direct_calls(*CONV_OPS) as counts:
        out = FC.conv2d(x, w, padding=1)
        out.backward(torch.ones_like(out))
    assert counts == {"conv2d": 1, "conv2d_input_grad": 0, "conv2d_weight_grad": 0}
    assert len(_backward_signatures()) == 1
    ref_x, ref_w = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    ref = torch.nn.functional.conv2d(ref_x, ref_w, padding=1)
    ref.backward(torch.ones_like(ref))
    assert rel_err(out, ref) < 1e-5
    assert rel_err(x.grad, ref_x.grad) < 1e-5 and rel_err(w.grad, ref_w.grad) < 1e-5


@pytest.mark.parametrize("wanted", ["input", "weight"])
def test_one_gradient_runs_its_own_op(wanted):
    x, w = _conv()
    (x if wanted == "input" else w).requires_grad_()
    with direct_calls(*CONV_OPS) as counts:
        out = FC.conv2d(x, w, padding=1)
        out.backward(torch.ones_like(out))
    assert counts == {"conv2d": 1, "conv2d_input_grad": int(wanted == "input"),
                      "conv2d_weight_grad": int(wanted == "weight")}
    assert not _backward_signatures()
    ref_x, ref_w = x.detach().double(), w.detach().double()
    (ref_x if wanted == "input" else ref_w).requires_grad_()
    ref = torch.nn.functional.conv2d(ref_x, ref_w, padding=1)
    ref.backward(torch.ones_like(ref))
    got, expected = (x.grad, ref_x.grad) if wanted == "input" else (w.grad, ref_w.grad)
    assert rel_err(got, expected) < 1e-5


def test_a_dispatch_mode_sees_every_op_by_name():
    x, w = _conv(requires_grad=True)
    with direct_calls(*CONV_OPS) as counts, _SeenOps() as mode:
        out = FC.conv2d(x, w, padding=1)
        out.backward(torch.ones_like(out))
    assert counts == dict.fromkeys(CONV_OPS, 0)
    assert {f"fastconv::{n}" for n in CONV_OPS} <= set(mode.names)
    assert not _backward_signatures()
    assert x.grad is not None and w.grad is not None


def test_fake_tensors_get_the_fake_kernels():
    from torch._subclasses.fake_tensor import FakeTensorMode
    with direct_calls(*CONV_OPS) as counts, FakeTensorMode():
        x, w = _conv(requires_grad=True)
        out = FC.conv2d(x, w, padding=1, stride=2)
        gx = conv_op.conv_backward(x.detach(), w.detach(), ([2, 2], [1, 1], [1, 1], 1),
                                   torch.empty(1, 16, 3, 3), True, True, False)[0]
    assert counts == dict.fromkeys(CONV_OPS, 0)
    assert out.shape == (1, 16, 3, 3) and gx.shape == (1, 16, 5, 6)


@pytest.mark.parametrize("context", ["autocast", "profiler", "create_graph"])
def test_gradient_ops_go_through_the_dispatcher_when_something_must_see_them(context):
    x, w = _conv(requires_grad=True)
    g = torch.randn(1, 16, 5, 6)
    with direct_calls("conv2d_input_grad", "conv2d_weight_grad") as counts:
        out = FC.conv2d(x, w, padding=1)
        if context == "autocast":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out.backward(g)
        elif context == "profiler":
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as p:
                out.backward(g)
            names = {e.name for e in p.events()}
            assert {"fastconv::conv2d_input_grad", "fastconv::conv2d_weight_grad"} <= names
        else:
            gx, = torch.autograd.grad(out, x, g, create_graph=True)
            # the dispatcher's autograd fallback marks it: no derivative, not a silent zero
            assert gx.grad_fn is not None
    assert counts == {"conv2d_input_grad": 0, "conv2d_weight_grad": 0}


def test_the_cache_forgets_the_least_recently_used():
    cache = LRU(capacity=3)
    try:
        for k in "abc":
            cache.put(k, k.upper())
        assert cache.get("a") == "A"  # a is now the most recent; b the least
        cache.put("d", "D")
        assert cache.get("b") is None
        assert sorted(cache.values()) == ["A", "C", "D"] and len(cache) == 3
        assert (cache.hits, cache.misses) == (1, 1)
    finally:
        CACHES.remove(cache)
