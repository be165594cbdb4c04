"""Described launches, and the per-signature cache that replays them.

Every op describes what a call runs in one place (``describe``-style functions in the launch
modules): the tensors it allocates (through :func:`fastconv.ops._runtime.new_output`), the
kernel launches (:class:`KernelLaunch`: kernel, grid, arguments, constexprs), the torch ops
between them (:class:`TorchOp`) and the result. That description depends only on the call's *signature* - shapes, strides, dtypes,
devices, 16-byte alignment of the data pointers, the op's non-tensor arguments and the global
switches the plan reads - so :class:`CallCache` records it once per signature as a
:class:`CachedCall`: the allocations as specs, each launch's arguments as a template whose
tensor slots are filled from the call, and the kernel handle Triton compiled on the first
launch. A call whose signature was seen before does one dictionary lookup, allocates its
outputs and launches; no argument checking, planning or autotuning runs again.

On a GPU a recorded launch goes straight to Triton's compiled kernel (``CompiledKernel.run``,
what ``JITFunction.run`` itself ends in) instead of the JIT binder, which re-derives the
specialisation of every argument on every call. The specialisation cannot change within a
signature: integer arguments come from shapes and strides, and pointer alignment is part of the
key. Under Triton's interpreter there is no compiled kernel, and the launch goes through
``kernel[grid]`` as before.
"""
import inspect
import operator
import os
import threading
import warnings
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from fastconv.ops import _runtime


# FASTCONV_LAUNCH=jit: every launch through Triton's JIT (a diagnostic: slower on the host)
JIT_ONLY = os.environ.get("FASTCONV_LAUNCH", "") == "jit"
_WARNED = set()


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


@dataclass(frozen=True)
class KernelLaunch:
    """One launch, described: ``kernel[grid](*args, **meta)`` (``meta``: constexprs and the
    launch options ``num_warps``, ``num_stages``, ``maxnreg``), and the launch that must
    follow it on the same stream (``then``: a split-K reduction), if any."""
    kernel: object
    grid: tuple
    args: tuple
    meta: dict
    then: Optional["KernelLaunch"] = None

    @property
    def programs(self) -> int:
        """Programs (thread blocks) the grid starts."""
        total = 1
        for g in self.grid:
            total *= g
        return total

    @classmethod
    def from_kwargs(cls, kernel, grid, kwargs: dict, then=None) -> "KernelLaunch":
        """A launch described by keyword (``kernel[grid](**kwargs)``), each argument named once:
        the kernel's leading non-constexpr parameters become ``args`` (the record/replay cache
        fills its tensor slots by position), the constexprs and launch options ``meta``.

        Every non-constexpr parameter must be named, and every name must be a parameter or a
        launch option: a tensor left to ``meta`` by mistake would be replayed stale."""
        names, runtime = _parameters(kernel)
        unknown = set(kwargs) - set(names) - _LAUNCH_OPTIONS
        missing = [n for n in runtime if n not in kwargs]
        if unknown or missing:
            raise TypeError(f"{kernel.fn.__name__}: unknown arguments {sorted(unknown)}, "
                            f"missing {missing}")
        meta = dict(kwargs)
        args = tuple(meta.pop(n) for n in runtime)
        return cls(kernel, tuple(grid), args, meta, then)

    @property
    def arguments(self) -> dict:
        """Every argument by name, constexprs and launch options included."""
        return {**dict(zip(_parameters(self.kernel)[1], self.args)), **self.meta}

    def chain(self) -> list:
        """This launch and those that follow it, in order."""
        out, launch = [], self
        while launch is not None:
            out.append(launch)
            launch = launch.then
        return out

    def __call__(self):
        for launch in self.chain():
            launch.kernel[launch.grid](*launch.args, **launch.meta)


_LAUNCH_OPTIONS = {"num_warps", "num_stages", "maxnreg"}
_PARAMETERS = {}


def _parameters(kernel) -> tuple:
    """(every parameter name, the leading non-constexpr ones) of a ``@triton.jit`` kernel;
    read once per kernel (``inspect.signature`` costs more than a launch description)."""
    found = _PARAMETERS.get(kernel)
    if found is None:
        params = list(inspect.signature(kernel.fn).parameters.values())
        runtime = []
        for p in params:
            if "constexpr" in str(p.annotation):
                break
            runtime.append(p.name)
        found = _PARAMETERS[kernel] = (tuple(p.name for p in params), tuple(runtime))
    return found


# ---------------------------------------------------------------------------- recording
class _Recorder(threading.local):
    allocations: Optional[list] = None  # [(tensor, fill)] while a call is being recorded


RECORDER = _Recorder()


class not_recorded:
    """A block whose allocations are not part of the call being recorded (the autotuner's
    trial launches)."""

    def __enter__(self):
        self.saved, RECORDER.allocations = RECORDER.allocations, None

    def __exit__(self, *exc):
        RECORDER.allocations = self.saved


@dataclass(frozen=True)
class Allocation:
    """A tensor a call allocates (``_runtime.allocate``), filled with ``fill`` if given."""
    shape: tuple
    stride: tuple
    dtype: torch.dtype
    fill: Optional[float]

    def __call__(self, device) -> torch.Tensor:
        t = _runtime.allocate(self.shape, self.stride, self.dtype, device)
        if self.fill is not None:
            t.fill_(self.fill)
        return t


@dataclass(frozen=True)
class TorchOp:
    """A torch computation a call runs before or between its launches (a weight repacked for
    TMA): ``fn(*tensors)``, on the call's own tensors."""
    fn: Callable
    tensors: tuple

    def __call__(self):
        self.fn(*self.tensors)


class _OpStep:
    def __init__(self, op: TorchOp, slots):
        self.fn = op.fn
        self.slots = [slots.of(t) for t in op.tensors]

    def __call__(self, env, device):
        self.fn(*[_resolve(s, env) for s in self.slots])


class Uncachable(Exception):
    """A launch argument the cache cannot derive from the call's tensors."""


@dataclass(frozen=True)
class Finish:
    """The result of a call computed from its tensors after the launches (a cast, a sum of
    split-K partials, a bias added in place): ``fn(*tensors)``."""
    fn: Callable
    tensors: tuple

    def __init__(self, fn, *tensors):
        object.__setattr__(self, "fn", fn)
        object.__setattr__(self, "tensors", tensors)


def run_launches(launches) -> None:
    """Start a call's launches (and torch ops) in order, as described: no recording."""
    for launch in launches:
        if isinstance(launch, TorchOp):
            launch()
        else:
            launch.kernel[launch.grid](*launch.args, **launch.meta)


# ---------------------------------------------------------------------------- replay
class _Slots:
    """Maps the tensors of a recorded call to slots of the replay's environment: the call's
    input tensors first, then its allocations; a view of one of them (a stride-phase view, a
    channel slice) is re-derived from the slot with ``as_strided``."""

    def __init__(self, inputs, allocated):
        self.ids = {}
        for i, t in enumerate(list(inputs) + list(allocated)):
            if t is not None:
                self.ids.setdefault(id(t), i)
        self.bases = [(i, t) for i, t in enumerate(list(inputs) + list(allocated))
                      if t is not None]

    def of(self, value):
        """A replay function ``env -> value`` for a tensor argument, or None if ``value`` is
        not a tensor; raises Uncachable for a tensor unrelated to the call."""
        if not isinstance(value, torch.Tensor):
            return None
        slot = self.ids.get(id(value))
        if slot is not None:
            return slot
        for i, base in self.bases:
            if value.device == base.device and base.numel() and value.numel() and \
                    value.untyped_storage().data_ptr() == base.untyped_storage().data_ptr():
                size, stride = tuple(value.shape), value.stride()
                delta = value.storage_offset() - base.storage_offset()
                return lambda env, i=i: env[i].as_strided(size, stride,
                                                          env[i].storage_offset() + delta)
        raise Uncachable(f"a tensor of shape {list(value.shape)} that is neither an input of the "
                         "call nor allocated by it")


def _resolve(slot, env):
    return env[slot] if isinstance(slot, int) else slot(env)


class _Step:
    """One recorded launch: the kernel, its grid, its arguments with the tensor slots open."""

    def __init__(self, launch: KernelLaunch, slots: _Slots):
        self.kernel = launch.kernel
        self.grid = launch.grid
        self.meta = dict(launch.meta)
        self.args = list(launch.args)
        self.holes = []  # (position, slot)
        for i, value in enumerate(self.args):
            slot = slots.of(value)
            if slot is None and isinstance(getattr(value, "base", None), torch.Tensor):
                slot = _descriptor_slot(value, slots)
            if slot is not None:
                self.holes.append((i, slot))
                self.args[i] = None
        self.compiled = None  # (run, function, packed_metadata) once the JIT compiled it
        self.jit_only = JIT_ONLY

    def __call__(self, env, device):
        if self.compiled is not None:
            args = self.full.copy()
            for i, slot in self.holes:
                args[i] = env[slot] if slot.__class__ is int else slot(env)
            try:
                _launch_compiled(self.compiled, self.grid3, device, args)
                return
            except (TypeError, ValueError) as e:
                # the launcher refused its arguments before launching anything: an installed
                # Triton whose launcher takes them otherwise. The JIT path from now on.
                self.compiled, self.jit_only = None, True
                _warn_once(f"fastconv: launching {self.kernel.fn.__name__} through Triton's "
                           f"compiled kernel failed ({type(e).__name__}: {e}); this launch and "
                           "the later ones of its signature go through the JIT")
        args = list(self.args)
        for i, slot in self.holes:
            args[i] = env[slot] if slot.__class__ is int else slot(env)
        handle = self.kernel[self.grid](*args, **self.meta)
        self._remember(handle)

    def _remember(self, handle):
        """Keep the kernel Triton compiled for this launch, to start it directly next time:
        its launcher takes every parameter in order, constexprs included. Only where the
        installed Triton has those pieces, and unless FASTCONV_LAUNCH=jit; else the JIT path
        stays."""
        fn = getattr(self.kernel, "fn", None)
        if fn is None or self.jit_only or not all(hasattr(handle, a) for a in
                                 ("run", "function", "packed_metadata")):
            return
        tail = []
        for p in list(inspect.signature(fn).parameters.values())[len(self.args):]:
            if p.name in self.meta:
                tail.append(self.meta[p.name])
            elif p.default is not inspect.Parameter.empty:
                tail.append(p.default)
            else:
                return
        self.full = self.args + tail  # every parameter in order, the tensor slots open
        self.grid3 = tuple(self.grid) + (1,) * (3 - len(self.grid))
        self.compiled = (handle.run, handle.function, handle.packed_metadata)


def _descriptor_slot(desc, slots: _Slots):
    """A host-side tensor descriptor over a call's tensor: rebuilt on its base each call."""
    base = slots.of(desc.base)
    cls, rest = type(desc), {k: v for k, v in vars(desc).items() if k != "base"}

    def rebuild(env):
        return cls(base=_resolve(base, env), **rest)
    return rebuild


try:  # Triton's launch hooks (triton >= 3.4); none to honour where it has no knobs
    from triton import knobs as _knobs
except ImportError:  # pragma: no cover
    _knobs = None
# the raw current stream, as Triton's own driver asks torch for it
_current_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None)


def _launch_compiled(compiled, grid, device, args):
    """Triton's compiled kernel, launched the way ``JITFunction.run`` ends: on the current
    stream, with Triton's launch hooks honoured (their metadata is left to the JIT path: a
    hook that is set is seen at the first launch of a signature)."""
    run, function, packed = compiled
    if device.type == "cuda":
        stream = _current_stream(device.index if device.index is not None
                                 else torch.cuda.current_device())
    else:
        stream = 0
    hooks = _knobs.runtime if _knobs is not None else None
    run(grid[0], grid[1], grid[2], stream, function, packed, None,
        hooks.launch_enter_hook if hooks else None, hooks.launch_exit_hook if hooks else None,
        *args)


@dataclass
class CachedCall:
    """A call of one signature, ready to replay: allocate, launch, finish."""
    allocations: list
    steps: list
    result: object  # a slot, or a tuple of slots (``many``)
    many: bool
    finish: Optional[Callable] = None  # a Finish's function of the result's tensors
    device: torch.device = field(default=None)

    def __call__(self, inputs: tuple):
        env = list(inputs)
        device = self.device
        for alloc in self.allocations:
            env.append(alloc(device))
        for step in self.steps:
            step(env, device)
        return self._result(env)

    def _result(self, env):
        if not self.many:
            return _resolve(self.result, env)
        tensors = tuple(_resolve(s, env) for s in self.result)
        return self.finish(*tensors) if self.finish is not None else tensors


def record(inputs: tuple, build: Callable, args: tuple, device) -> tuple:
    """Run ``build(*inputs, *args)`` (which allocates, describes and returns ``(launches,
    result)``), launch what it describes, and return ``(result, CachedCall or None)``."""
    saved = RECORDER.allocations
    RECORDER.allocations = recorded = []
    try:
        launches, result = build(*inputs, *args)
    finally:
        RECORDER.allocations = saved
    allocated = [t for t, _ in recorded]
    try:
        slots = _Slots(inputs, allocated)
        steps = [_OpStep(launch, slots) if isinstance(launch, TorchOp) else _Step(launch, slots)
                 for launch in launches]
        finish, tensors = (result.fn, result.tensors) if isinstance(result, Finish) \
            else (None, result)
        many = isinstance(tensors, tuple)
        res_slots = tuple(slots.of(t) for t in tensors) if many else slots.of(tensors)
        specs = [Allocation(tuple(t.shape), t.stride(), t.dtype, fill) for t, fill in recorded]
        call = CachedCall(specs, steps, res_slots, many, finish, torch.device(device))
    except Uncachable:
        call = None
    env = list(inputs) + allocated
    if call is None:
        run_launches(launches)
        if isinstance(result, Finish):
            return result.fn(*result.tensors), None
        return result, None
    for step in call.steps:
        step(env, call.device)
    return call._result(env), call


# ---------------------------------------------------------------------------- the cache
_STAMP = operator.itemgetter(1)


class LRU:
    """A dictionary of at most ``capacity`` entries that forgets the least recently used, so
    that memory stays flat however many signatures a process sees.

    A hit stamps its entry with a counter instead of moving it to the end of an ordered
    dictionary: the key (a nested tuple, hashed anew by every dictionary operation) is hashed
    once per call. Eviction, which only a new signature's insertion can cause, finds the oldest
    stamp by a scan in C (about 20 us over 1,024 entries, on a call that records anyway)."""

    def __init__(self, capacity: int = 1024):
        self.capacity = capacity
        self.entries = {}  # key -> [entry, stamp of its last use, key]
        self.clock = 0
        self.hits = 0
        self.misses = 0
        CACHES.append(self)

    def __len__(self):
        return len(self.entries)

    def values(self):
        """The entries, in no particular order."""
        return [slot[0] for slot in self.entries.values()]

    def clear(self):
        self.entries.clear()

    def get(self, key):
        slot = self.entries.get(key)
        if slot is None:
            self.misses += 1
            return None
        self.hits += 1
        self.clock += 1
        slot[1] = self.clock
        return slot[0]

    def put(self, key, entry):
        self.clock += 1
        self.entries[key] = [entry, self.clock, key]
        if len(self.entries) > self.capacity:
            del self.entries[min(self.entries.values(), key=_STAMP)[2]]


CACHES = []


class CallCache(LRU):
    """An LRU of :class:`CachedCall` by signature."""

    def __call__(self, op: str, inputs: tuple, build: Callable, args: tuple, device,
                 settings: tuple = ()):
        """The result of the call of ``op`` on ``inputs`` (tensors or None) and ``args``:
        ``run`` under its ``signature``."""
        return self.run(signature(op, inputs, args, settings), inputs, build, args, device)

    def run(self, key, inputs: tuple, build: Callable, args: tuple, device):
        """The result of the call ``inputs`` of signature ``key``: replayed if the signature was
        seen, else built (``build`` and ``args`` as in :func:`record`) and remembered."""
        entry = self.get(key)
        if entry is not None:
            return entry(inputs)
        result, entry = record(inputs, build, args, device)
        if entry is not None and not _capturing(device):
            self.put(key, entry)
        return result


def _capturing(device) -> bool:
    """A CUDA graph capture is in progress: an entry built now was not autotuned, so it is not
    kept for the eager calls that follow."""
    return torch.device(device).type == "cuda" and torch.cuda.is_current_stream_capturing()


def new_cache(capacity: int = 1024) -> CallCache:
    return CallCache(capacity)


def clear_caches() -> None:
    """Forget every recorded call and normalised signature (after a change to what the plan
    reads, such as a config table; the switches it reads on every call are in the key)."""
    for cache in CACHES:
        cache.clear()


# ---------------------------------------------------------------------------- signatures
def signature(op: str, tensors: tuple, args: tuple, settings: tuple = ()) -> tuple:
    """The cache key of a call: the op; what a launch may depend on of each tensor (shape,
    strides, dtype, device - -1 for the CPU, else the CUDA index - and the alignment of its
    data pointer: Triton specialises on 16-byte alignment, the channel vector width on
    alignment up to 16 bytes); the non-tensor arguments; and the process-wide switches its
    launches depend on: TF32 for convolutions (``torch.backends.cudnn.allow_tf32``, read here
    at its source), deterministic algorithms, and the family's plan ``settings`` (its
    target). Written out flat: it runs on every call."""
    keys, ids = [], []
    for t in tensors:
        if t is None:
            keys.append(None)
        else:
            ids.append(id(t))
            keys.append((t.shape, t.stride(), t.dtype, t.get_device(), t.data_ptr() % 16))
    # the same tensor passed for two arguments (residual=input) replays with one slot for
    # both: a call that passes two tensors there is another signature
    aliased = len(set(ids)) < len(ids) and tuple(
        ids.index(id(t)) if t is not None else -1 for t in tensors)
    return (op, tuple(keys), args, aliased, _cudnn_allow_tf32(),
            torch.are_deterministic_algorithms_enabled(), settings)


_cudnn_allow_tf32 = torch._C._get_cudnn_allow_tf32
