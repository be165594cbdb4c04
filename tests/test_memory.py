"""Memory: repeated calls do not grow memory, and every workspace is freed.

One training-like step runs the forward and backward of conv2d (split-K everywhere: the
forward's and input gradient's workspaces, the weight gradient's partial sums),
conv_transpose2d, roi_align and roi_pool, on tiny shapes, in the interpreter's whole-model mode.

Each interpreted kernel launch costs 20 to 60 ms even on these shapes (the kernel's body runs
as Python), so 1,000 steps with their kernels (14 launches each) would take ten minutes. The
1,000-step loop therefore runs everything fastconv does (validation, plans, allocations and
workspaces, launch descriptions, autograd) with the launches themselves counted but not
interpreted; a shorter loop with the kernels running checks the same bounds; and every tensor
a step creates, workspaces included, must be gone once the caller drops its results.
"""
import gc
import re
import weakref

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import fastconv.functional as FC
from interpreter_speed import whole_model
from helpers import aten_forbidden, interpreter_split_k

TV_OPS = ("roi_align", "_roi_align_backward", "roi_pool", "_roi_pool_backward")
WARM_UP = 50
LAUNCHES_PER_STEP = 14  # conv2d 3 GEMMs + 2 reductions, conv_transpose2d 3 + 2, RoI 2 + 2


def rss_bytes() -> int:
    """Resident set size of this process (Linux)."""
    with open("/proc/self/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1)) * 1024


def live_tensors() -> int:
    gc.collect()
    # type(), not isinstance(): some module-level objects warn when their __class__ is read
    return sum(1 for o in gc.get_objects() if issubclass(type(o), torch.Tensor))


def _leaves():
    gen = torch.Generator().manual_seed(0)

    def leaf(*shape):
        return torch.randn(*shape, generator=gen).requires_grad_()
    # conv2d: 17 x 20 output pixels, more than one reduction block of the weight gradient
    return {"x": leaf(1, 16, 17, 19), "w": leaf(16, 16, 1, 2), "b": leaf(16),
            "xt": leaf(1, 16, 1, 2), "wt": leaf(16, 16, 2, 1), "f": leaf(1, 2, 3, 3)}


ROIS = torch.tensor([[0, 0.2, 0.3, 1.5, 1.9], [0, 1.0, 0.5, 2.5, 2.0]])


def step(t: dict) -> None:
    """One forward and backward of every op; the caller's gradients are dropped after."""
    y = FC.conv2d(t["x"], t["w"], t["b"], padding=(0, 1), activation="relu")
    z = FC.conv_transpose2d(t["xt"], t["wt"], stride=(1, 2))
    a = FC.roi_align(t["f"], ROIS, 1, 1.0, 1, True)
    p = FC.roi_pool(t["f"], [ROIS[:, 1:]], 1, 1.0)
    (y.sum() + z.sum() + a.sum() + p.sum()).backward()
    for leaf in t.values():
        leaf.grad = None


@pytest.fixture
def split_everything(monkeypatch):
    """Every convolution split along its reduction, so that each call allocates the split-K
    workspaces (fprop and dgrad) and the weight gradient's partial sums (where the reduction
    has more than one block: conv2d's, with the kernel tests' block sizes)."""
    with interpreter_split_k(2, wgrad=2):
        yield


@pytest.fixture
def launches_counted(monkeypatch):
    """Launches reach the interpreter, are counted, and return without running the kernel."""
    from triton.runtime import interpreter
    count = [0]

    def count_only(self, *args, **kwargs):
        count[0] += 1
    monkeypatch.setattr(interpreter.GridExecutor, "__call__", count_only)
    return count


def _loop(steps: int, warm_up: int = WARM_UP) -> tuple:
    """(RSS growth, live-tensor growth, gc-object growth) of ``steps`` steps after warm-up."""
    t = _leaves()
    with aten_forbidden(), aten_forbidden(TV_OPS, "torchvision"), whole_model(block_scale=1):
        for _ in range(warm_up):
            step(t)
        tensors, objects, rss = live_tensors(), len(gc.get_objects()), rss_bytes()
        for _ in range(steps):
            step(t)
        tensors_after, objects_after = live_tensors(), len(gc.get_objects())
        rss_after = rss_bytes()
    return rss_after / rss - 1, tensors_after - tensors, objects_after - objects


def test_a_thousand_steps_hold_memory_flat(split_everything, launches_counted):
    rss, tensors, objects = _loop(1000)
    print(f"1000 steps: RSS {rss:+.2%}, {tensors:+d} tensors, {objects:+d} objects")
    assert launches_counted[0] == (WARM_UP + 1000) * LAUNCHES_PER_STEP
    assert tensors == 0, f"{tensors} more tensors alive after 1000 steps"
    # a leak of one small object per step would show as 1000
    assert objects < 100, f"{objects} more gc-tracked objects after 1000 steps"
    assert rss < 0.05, f"RSS grew by {rss:.1%} over 1000 steps"


def test_steps_with_their_kernels_hold_memory_flat(split_everything):
    """Fewer steps, the kernels interpreted: the first call settles the interpreter's caches."""
    rss, tensors, objects = _loop(40, warm_up=5)
    print(f"40 steps with kernels: RSS {rss:+.2%}, {tensors:+d} tensors, {objects:+d} objects")
    assert tensors == 0, f"{tensors} more tensors alive after 40 steps"
    assert objects < 20, f"{objects} more gc-tracked objects after 40 steps"
    assert rss < 0.05, f"RSS grew by {rss:.1%} over 40 steps"


class TensorsMade(TorchDispatchMode):
    """Weak references to every tensor an op returns while the mode is on, inside fastconv's
    ops too (the mode would otherwise see each as one op, not the tensors it allocates)."""

    def __init__(self):
        super().__init__()
        self.made = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "fastconv":
            from fastconv.ops.registry import IMPLEMENTATIONS
            with self:
                out = IMPLEMENTATIONS[func._schema.name](*args, **(kwargs or {}))
        else:
            out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(t, torch.Tensor):
                self.made.append((str(func), tuple(t.shape), weakref.ref(t)))
        return out


def test_no_tensor_of_a_step_outlives_it(split_everything):
    """Outputs, saved tensors, gradient buffers and split-K workspaces: all freed once the
    step's results are dropped (the kernels run, so the interpreter's copies count too)."""
    t = _leaves()
    made = TensorsMade()
    with aten_forbidden(), aten_forbidden(TV_OPS, "torchvision"), whole_model(block_scale=1):
        step(t)  # plans, compiled helpers and caches settle
        with made:
            step(t)
    gc.collect()
    # [split, groups, pixels, channels] of fprop and dgrad; [split, *weight_shape] of wgrad
    splits = {len(shape) for _, shape, _ in made.made if shape and shape[0] == 2}
    assert splits >= {4, 5}, "the split-K workspaces were not allocated"
    alive = [(op, shape) for op, shape, ref in made.made if ref() is not None]
    assert not alive, f"{len(alive)} tensors made by the step are still alive: {alive[:10]}"
