"""GPU time: a contender's calls captured in a CUDA graph and replayed, so that no host overhead
is in the number (DESIGN.md, "Performance method").

The eager time of :mod:`fastconv.bench.harness` (``triton.testing.do_bench`` over rotating
inputs) includes the host's cost of every call: for a small layer fastconv's eager time is its
launch path, not its kernels. The GPU time captures ``calls`` consecutive calls of the same
rotating call (so they cycle through the same input sets) in one ``torch.cuda.CUDAGraph``,
replays the graph ``replays`` times between CUDA events, and reports the median replay over
``calls``: milliseconds of GPU work per call. The L2 is not flushed between the calls of a graph;
both sides are measured the same way.

:func:`graph_time_ms` is the measurement with the capture and the timer passed in, so that a
test can run it with fakes; :func:`cuda_graph_capture` and :func:`event_timer_ms` are the real
ones. :func:`gpu_time_table` is the table ``fastconv bench`` prints beside its eager one.
"""
import math
import statistics
from typing import Any, Callable, List, Optional, Tuple

# calls per graph and timed replays (the first GPU measurements used 12 and 7), and the budgets
# that shrink them for slow calls: a graph of about GRAPH_TARGET_MS, replays of about
# REPLAY_BUDGET_MS together
GRAPH_CALLS, MIN_GRAPH_CALLS = 12, 2
GRAPH_REPLAYS, MIN_GRAPH_REPLAYS = 7, 3
GRAPH_TARGET_MS = 25.0
REPLAY_BUDGET_MS = 200.0
# un-timed calls on the capture stream before the capture (cuDNN, cuBLAS and the autograd
# engine set themselves up for a new stream)
WARMUP_CALLS = 1

# the side stream graphs are captured on, one per device, reused (a failed capture drops it)
_STREAMS = {}

Capture = Callable[[Callable[[], Callable[[], Any]], int], Callable[[], None]]
Timer = Callable[[Callable[[], None]], float]


def graph_shape(estimate_ms: float) -> Tuple[int, int]:
    """(calls per graph, timed replays) for a call estimated at ``estimate_ms`` (its eager
    time, which is never below its GPU time): 12 calls and 7 replays for fast calls, fewer for
    slow ones, never under 2 calls and 3 replays."""
    if not (estimate_ms > 0 and math.isfinite(estimate_ms)):
        return GRAPH_CALLS, GRAPH_REPLAYS
    calls = max(MIN_GRAPH_CALLS, min(GRAPH_CALLS, math.ceil(GRAPH_TARGET_MS / estimate_ms)))
    replays = max(MIN_GRAPH_REPLAYS,
                  min(GRAPH_REPLAYS, int(REPLAY_BUDGET_MS // (calls * estimate_ms))))
    return calls, replays


def graph_time_ms(make_call: Callable[[], Callable[[], Any]], calls: int = GRAPH_CALLS,
                  replays: int = GRAPH_REPLAYS, capture: Optional[Capture] = None,
                  timer: Optional[Timer] = None) -> float:
    """Milliseconds of GPU time per call: ``calls`` calls of ``make_call()`` captured in one
    graph, the graph replayed once untimed (its upload), then ``replays`` times under
    ``timer``; the median replay over ``calls``.

    Args:
        make_call: returns the call to capture. It is made on the capture stream: a backward
            call's autograd graphs must be built there for its backward kernels to run on the
            stream being captured.
        capture: ``capture(make_call, calls)`` returns a function that replays the graph
            (default :func:`cuda_graph_capture`).
        timer: ``timer(replay)`` returns the milliseconds of one replay (default
            :func:`event_timer_ms`).
    """
    if calls < 1 or replays < 1:
        raise ValueError(f"graph_time_ms: calls and replays must be >= 1, got {calls}, "
                         f"{replays}")
    capture = capture or cuda_graph_capture
    timer = timer or event_timer_ms
    replay = capture(make_call, calls)
    replay()
    return statistics.median(timer(replay) for _ in range(replays)) / calls


def cuda_graph_capture(make_call: Callable[[], Callable[[], Any]], calls: int,
                       warmup: int = WARMUP_CALLS) -> Callable[[], None]:
    """Capture ``calls`` calls of ``make_call()`` in a ``torch.cuda.CUDAGraph`` on a side
    stream (after ``warmup`` calls there) and return its replay. The replay keeps the graph
    and the call (with whatever the call holds, e.g. retained autograd graphs) alive.

    ``capture_begin``/``capture_end`` rather than ``torch.cuda.graph``: that context also runs
    ``gc.collect()`` and ``empty_cache()`` each time, seconds over a few hundred variants."""
    import torch

    device = torch.cuda.current_device()
    stream = _STREAMS.get(device)
    if stream is None:
        stream = _STREAMS[device] = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        call = make_call()
        for _ in range(warmup):
            call()
    stream.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(stream):
        graph.capture_begin()
        try:
            for _ in range(calls):
                call()
        except BaseException:
            _STREAMS.pop(device, None)
            try:
                graph.capture_end()
            except Exception:  # noqa: BLE001 - the first error is the one to report
                pass
            raise
        try:
            graph.capture_end()
        except BaseException:
            _STREAMS.pop(device, None)
            raise
    torch.cuda.current_stream().wait_stream(stream)

    def replay(_graph=graph, _call=call):
        _graph.replay()
    return replay


def event_timer_ms(replay: Callable[[], None]) -> float:
    """Milliseconds of one ``replay()`` on the current stream, between two CUDA events."""
    import torch

    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record()
    replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def contender_gpu_ms(contender, estimate_ms: float, capture: Optional[Capture] = None,
                     timer: Optional[Timer] = None) -> float:
    """GPU time of a :class:`~fastconv.bench.harness.Contender`: its ``rotating`` call
    factory (or its ``fn``), with the graph sized by :func:`graph_shape` for the estimate."""
    make_call = getattr(contender, "rotating", None) or (lambda: contender.fn)
    calls, replays = graph_shape(estimate_ms)
    return graph_time_ms(make_call, calls, replays, capture=capture, timer=timer)


# ---------------------------------------------------------------------------- the table
_SHORT = {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32", "nchw": "NCHW",
          "channels_last": "NHWC", "forward": "fwd", "backward": "bwd"}
GPU_TABLE_COLUMNS = ("case", "dir", "type", "eager ms", "GPU ms", "base eager", "base GPU",
                     "eager x", "GPU x", "GB/s", "of BW")


def _num(value, fmt: str) -> str:
    if value is None or value != value:
        return "-"
    return format(value, fmt)


def _speed(value) -> str:
    text = _num(value, ".2f")
    if value == value and value is not None:
        return f"[green]{text}" if value >= 1 else f"[red]{text}"
    return text


def memory_bound_row(row) -> bool:
    """Rows whose GB/s matter: depthwise and RoI cases, and any case on the memory side of
    the ridge point."""
    return row.group in ("depthwise", "roi") or row.bound == "memory"


def has_gpu_times(rows) -> bool:
    return any(r.fastconv_gpu_ms == r.fastconv_gpu_ms for r in rows)


def gpu_time_table(rows):
    """A rich Table: each variant's eager and GPU times, fastconv's and the baseline's, both
    speedups, and for memory-bound rows the GB/s of the GPU time with its fraction of the
    bandwidth the roofline assumes (``of BW``: memory floor / GPU time)."""
    from rich import box
    from rich.table import Table

    # no vertical rules: eleven columns fit a 120-column console
    table = Table(title="GPU time (CUDA graph replay) next to eager time (do_bench)",
                  caption="x: baseline ms / fastconv ms; GB/s (of fastconv's GPU time) and of "
                          "BW (memory floor / GPU time) for depthwise, RoI and memory-bound rows",
                  box=box.SIMPLE_HEAD)
    for col in GPU_TABLE_COLUMNS:
        table.add_column(col, justify="left" if col in ("case", "dir", "type") else "right",
                         overflow="fold" if col == "case" else "ellipsis",
                         min_width=22 if col == "case" else None)
    group = None
    for r in rows:
        if group is not None and r.group != group:
            table.add_section()
        group = r.group
        memory = memory_bound_row(r)
        table.add_row(r.name, _SHORT.get(r.direction, r.direction),
                      f"{_SHORT.get(r.dtype, r.dtype)} {_SHORT.get(r.layout, r.layout)}",
                      _num(r.fastconv_ms, ".4g"), _num(r.fastconv_gpu_ms, ".4g"),
                      _num(r.baseline_ms, ".4g"), _num(r.baseline_gpu_ms, ".4g"),
                      _speed(r.speedup), _speed(r.gpu_speedup),
                      _num(r.gpu_gbps, ".0f") if memory else "",
                      _num(r.gpu_mem_floor_fraction * 100, ".0f") + "%"
                      if memory and r.gpu_mem_floor_fraction == r.gpu_mem_floor_fraction
                      else "")
    return table


def print_gpu_times(console, rows: List[Any], dry: bool = False) -> None:
    """What ``fastconv bench`` prints after its eager table: the GPU-time table and each
    group's geometric-mean GPU-time speedup, or one line saying why there are no GPU times."""
    from fastconv.bench.run import by_group, geomean

    if not has_gpu_times(rows):
        why = ("a dry run under Triton's interpreter captures no CUDA graph" if dry else
               "no variant could be captured in a CUDA graph (see the CSV's gpu_note)")
        console.print(f"GPU time: not measured: {why}", highlight=False)
        return
    console.print(gpu_time_table(rows))
    for group, group_rows in by_group(rows).items():
        ok = [r for r in group_rows if r.result == "ok"]
        gpu = [r.gpu_speedup for r in ok if r.gpu_speedup == r.gpu_speedup]
        console.print(f"{group}: geometric-mean speedup on GPU time "
                      f"{_num(geomean(gpu), '.2f')} over {len(gpu)} variant(s), on eager time "
                      f"{_num(geomean([r.speedup for r in ok]), '.2f')}", highlight=False)


__all__ = ["GRAPH_CALLS", "GRAPH_REPLAYS", "graph_shape", "graph_time_ms", "cuda_graph_capture",
           "event_timer_ms", "contender_gpu_ms", "gpu_time_table", "print_gpu_times",
           "memory_bound_row", "has_gpu_times"]
