"""What a plan is made for: a GPU architecture or Triton's interpreter.

Plans read their target here: the SM count that sizes grids and split-K, whether TMA exists,
whether blocks are sized for the interpreter. By default that is the machine's own (the
interpreter in a ``TRITON_INTERPRET=1`` process, else the tensors' GPU); ``planning_for``
names another, which is how ``explain(target=...)``, the host-overhead benchmark and the
tests plan for an H100/H200 on any machine.
"""
import contextlib
import dataclasses
from dataclasses import dataclass

import torch

from fastconv.ops import _runtime

_SM_COUNT_DEFAULT = 132  # an H100 SXM; used when no device can be asked


def sm_count(device) -> int:
    """Streaming multiprocessors the plan sizes grids for: the target's (``planning_for``), else
    ``device``'s, else an H100's 132 where none can be asked."""
    if _TARGET is not None and _TARGET.sms:
        return _TARGET.sms
    if device is not None and torch.device(device).type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return _SM_COUNT_DEFAULT


@dataclass(frozen=True)
class Target:
    """What a plan is made for: a GPU architecture (its SM count sizes the grids and the
    split-K) or Triton's interpreter (blocks sized to the problem, a fixed split-K)."""
    name: str
    interpreter: bool
    sms: int = 0  # 0: ask the device
    tma: bool = False  # tensor descriptors (TMA): sm_90 and newer
    # The interpreter's split-K of fprop / dgrad GEMMs and of weight gradients: 1, since fewer
    # programs run faster there (a target with more runs the split kernels on the CPU)
    split_k: int = 1
    wgrad_split_k: int = 1
    # How much larger than the kernel tests' the interpreter's blocks may grow (a power of
    # two): whole-model runs take 4, for up to 16x fewer program steps on wide layers
    block_scale: int = 1

    def __post_init__(self):
        s = self.block_scale
        if isinstance(s, bool) or not isinstance(s, int) or s < 1 or s & (s - 1):
            raise ValueError(f"Target: block_scale must be a power of two >= 1, got {s!r}")


TARGETS = {"sm_90": Target("sm_90", False, 132, tma=True), "sm_80": Target("sm_80", False, 108),
           "interpreter": Target("interpreter", True)}
_TARGET = None  # planning_for's target, else the machine's own


def target_of(device) -> Target:
    """The target a plan for ``device`` is made for: ``planning_for``'s, else the interpreter
    when this process interprets, else the device's architecture."""
    if _TARGET is not None:
        return _TARGET
    if _runtime.INTERPRETING:
        return TARGETS["interpreter"]
    if device is not None and torch.device(device).type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return Target(f"sm_{major}{minor}", False, sm_count(device), tma=major >= 9)
    return TARGETS["sm_90"]


@contextlib.contextmanager
def planning_for(target):
    """Make every plan in the block for ``target`` ("sm_90", "sm_80", "interpreter" or a
    :class:`Target`), whatever this machine is: what ``explain(target=...)`` and the host
    overhead benchmark use. Launching such a plan needs that target's kernels."""
    global _TARGET
    if isinstance(target, str):
        if target not in TARGETS:
            raise ValueError(f"target must be one of {', '.join(map(repr, TARGETS))}, "
                             f"got target={target!r}")
        target = TARGETS[target]
    saved, _TARGET = _TARGET, target
    try:
        yield target
    finally:
        _TARGET = saved


def target_settings() -> tuple:
    """The target part of a cached call's key: ``planning_for``'s target and whether this
    process interprets."""
    return (_TARGET, _runtime.INTERPRETING)


def named_target():
    """The target ``planning_for`` set, or None (plans follow the machine)."""
    return _TARGET


def larger_interpreter_blocks(scale: int = 4):
    """Plan for the interpreter target in force (``planning_for``'s, else the interpreter's
    own) with blocks up to ``scale`` times larger than the kernel tests': fewer, larger
    programs for whole-model runs under Triton's interpreter (``fastconv verify``, the dry-run
    benchmark), the same kernels and results. Nothing changes when plans are for a GPU."""
    target = _TARGET or (TARGETS["interpreter"] if _runtime.INTERPRETING else None)
    if target is None or not target.interpreter:
        return contextlib.nullcontext()
    return planning_for(dataclasses.replace(target, block_scale=scale))
