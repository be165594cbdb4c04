"""Host cost of the eager call path: microseconds of Python per call, against torch's own op.

Most people run PyTorch eagerly, and there a call's host time is a floor under its GPU time:
a layer whose kernel takes 20 us is not faster than its launch path. This measures, per op, on
tiny shapes (so that nothing but the call path counts):

* ``conv2d`` forward; ``conv2d`` forward + backward (autograd engine included, input and
  weight gradients); ``conv_transpose2d`` forward; ``roi_align`` forward;

for fastconv (through :mod:`fastconv.functional`, as a user calls it) and for torch's op
(``torch.nn.functional``, ``torchvision.ops``) on the same tensors.

On a GPU the launches are real and the GPU is idle enough (tiny shapes) that the wall time of a
long run of calls is their host time. Without one, fastconv's kernels cannot run, so the
launch itself is replaced by a no-op at the innermost point - Triton's interpreter's grid call -
and every plan is made for an H100/H200 (:func:`fastconv.ops.target.planning_for`), so that the
Python path measured is the one a GPU call takes; torch's op then computes on the CPU, its
arithmetic included (a tiny shape costs it little). The time is then this thread's CPU time,
which a development machine's other processes disturb less than the wall clock.

    fastconv bench --overhead
    python -m fastconv.bench.overhead --calls 2000
"""
import argparse
import contextlib
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F

# the tiny layer of the first GPU measurements: 1x16x8x8, 3x3, 16 output channels
SHAPE = (1, 16, 8, 8)
OPS = ("conv2d forward", "conv2d forward+backward", "conv_transpose2d forward",
       "roi_align forward")


@dataclass(frozen=True)
class OverheadRow:
    op: str
    fastconv_us: float
    torch_us: float

    @property
    def ratio(self) -> float:
        return self.fastconv_us / self.torch_us


class _NoLaunch:
    """What a call keeps of a compiled kernel (``launch_cache``), with a launcher that does
    nothing: the innermost point of a GPU launch, Triton's C launcher, as a no-op."""
    function = packed_metadata = None

    @staticmethod
    def run(*args):
        return None


@contextlib.contextmanager
def launches_as_no_ops():
    """Every launch under Triton's interpreter does nothing, and hands back a compiled-kernel
    stand-in, so that the calls recorded while the block runs replay the way they do on a
    GPU (through the compiled kernel's launcher) and only the launcher call itself is
    missing."""
    from triton.runtime import interpreter
    saved = interpreter.InterpretedFunction.run
    interpreter.InterpretedFunction.run = lambda self, *args, **kwargs: _NoLaunch
    try:
        yield
    finally:
        interpreter.InterpretedFunction.run = saved


def _per_call_us(fn: Callable[[], object], calls: int, repeats: int, sync, clock) -> float:
    """The fastest of ``repeats`` runs of ``calls`` calls, in microseconds per call (the
    fastest run is the one the machine's other work disturbed least)."""
    for _ in range(max(10, calls // 20)):
        fn()
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = clock()
        for _ in range(calls):
            fn()
        sync()
        best = min(best, (clock() - start) / calls)
    return best * 1e6


def cases(device: torch.device, dtype: torch.dtype) -> Dict[str, tuple]:
    """op name -> (fastconv call, torch call), each a closure over its own tensors."""
    import torchvision

    import fastconv.functional as FC
    x = torch.randn(SHAPE, device=device, dtype=dtype)
    w = torch.randn(16, 16, 3, 3, device=device, dtype=dtype)
    xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
    g = torch.randn(SHAPE, device=device, dtype=dtype)
    rois = torch.tensor([[0, 0.5, 1.0, 6.0, 7.0]], device=device, dtype=dtype)

    def fwd_bwd(conv):
        def step():
            conv(xg, wg, padding=1).backward(g)
        return step
    return dict(zip(OPS, [
        (lambda: FC.conv2d(x, w, padding=1), lambda: F.conv2d(x, w, padding=1)),
        (fwd_bwd(FC.conv2d), fwd_bwd(F.conv2d)),
        (lambda: FC.conv_transpose2d(x, w, padding=1),
         lambda: F.conv_transpose2d(x, w, padding=1)),
        (lambda: FC.roi_align(x, rois, 2, sampling_ratio=2),
         lambda: torchvision.ops.roi_align(x, rois, 2, sampling_ratio=2)),
    ]))


def measure(calls: int = 1000, repeats: int = 5, device: Optional[str] = None,
            dtype: torch.dtype = torch.float32) -> List[OverheadRow]:
    """Host microseconds per call of each op, fastconv and torch (see the module docstring
    for what runs where)."""
    from fastconv.ops import INTERPRETING
    from fastconv.ops.target import planning_for
    if device is None:
        device = "cuda" if torch.cuda.is_available() and not INTERPRETING else "cpu"
    device = torch.device(device)
    # on a GPU, wall time (the launches are real and the host waits for nothing else); on the
    # CPU, this thread's CPU time, which does not count the time it waits for a core that other
    # processes hold (the garbage collector's time, which a user pays too, still counts)
    if device.type == "cuda":
        stack, sync, clock = contextlib.nullcontext(), torch.cuda.synchronize, time.perf_counter
    elif INTERPRETING:
        stack, sync, clock = contextlib.ExitStack(), lambda: None, time.thread_time
        stack.enter_context(launches_as_no_ops())
        stack.enter_context(planning_for("sm_90"))
    else:
        raise RuntimeError("fastconv bench --overhead: no CUDA device, and Triton's "
                           "interpreter is off (set TRITON_INTERPRET=1 to measure the call "
                           "path on the CPU)")
    rows = []
    with stack:
        for op, (ours, theirs) in cases(device, dtype).items():
            rows.append(OverheadRow(op, _per_call_us(ours, calls, repeats, sync, clock),
                                    _per_call_us(theirs, calls, repeats, sync, clock)))
    return rows


def table(rows: List[OverheadRow], where: str):
    from rich.table import Table
    t = Table(title=f"host time per eager call ({where})")
    for name in ("op", "fastconv us", "torch us", "ratio"):
        t.add_column(name, justify="left" if name == "op" else "right")
    for r in rows:
        t.add_row(r.op, f"{r.fastconv_us:.1f}", f"{r.torch_us:.1f}", f"{r.ratio:.2f}x")
    return t


def run(calls: int = 1000, repeats: int = 5) -> int:
    from rich.console import Console

    from fastconv.ops import INTERPRETING
    rows = measure(calls, repeats)
    where = ("CPU time; Triton's launch a no-op, plans for sm_90; torch computes on the CPU"
             if INTERPRETING else torch.cuda.get_device_name())
    Console().print(table(rows, where))
    return 0


def main(argv=None) -> int:
    import os
    if not (torch.cuda.is_available()):
        os.environ.setdefault("TRITON_INTERPRET", "1")
    parser = argparse.ArgumentParser(prog="python -m fastconv.bench.overhead",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    return run(args.calls, args.repeats)


if __name__ == "__main__":
    raise SystemExit(main())
