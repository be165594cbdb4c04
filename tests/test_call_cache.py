"""The eager call path: a call whose signature was seen before replays its recorded launches.

- A replayed call launches the same kernels, grids and arguments as a fresh one, for every
  family and op, and gives the same values (the tensors of the call go where the fresh call
  put them).
- A replayed call does no argument normalisation, no planning and no autotuning.
- Everything a signature depends on is in its key: another alignment, layout, TF32 or
  determinism switch builds anew.
- The caches are bounded: memory stays flat over 10,000 calls of ever new shapes.
- The host cost per call, with Triton's launch a no-op and plans made for sm_90, stays within a
  generous margin of the targets (the benchmark, ``fastconv bench --overhead``, reports it
  exactly).
- The autotuner's winners survive in a tune-cache file.
"""
import contextlib
import gc
import importlib
import tracemalloc

import pytest
import torch
from triton.runtime import interpreter

import fastconv.functional as FC
import fastconv.conv.plan as plan
from fastconv.bench.overhead import _NoLaunch, launches_as_no_ops
from fastconv.conv import autotune
from fastconv.conv import launch as conv2d_launch
from fastconv.ops import launch_cache
from fastconv.conv.launch import conv_problem
from fastconv.conv.plan import plan_conv2d
from fastconv.ops.target import planning_for
from helpers import aten_forbidden, interpreter_split_k, rel_err

TV_OPS = ("roi_align", "_roi_align_backward", "roi_pool", "_roi_pool_backward")


@contextlib.contextmanager
def spied_launches():
    """Every launch as (kernel name, grid, arguments with tensors as (shape, strides, dtype)),
    whether it goes through the JIT path or a compiled kernel's launcher."""
    seen = []
    real_run = interpreter.InterpretedFunction.run

    def describe(args):
        return tuple((tuple(a.shape), a.stride(), a.dtype) if isinstance(a, torch.Tensor)
                     else a for a in args)

    def run(self, *args, grid, warmup, **kwargs):
        seen.append((self.fn.__name__, tuple(grid), describe(args),
                     tuple(sorted(kwargs.items()))))
        return real_run(self, *args, grid=grid, warmup=warmup, **kwargs)
    interpreter.InterpretedFunction.run = run
    try:
        yield seen
    finally:
        interpreter.InterpretedFunction.run = real_run


def _conv_calls():
    def conv(x_shape, w_shape, channels_last=False, **kw):
        def call():
            x = torch.randn(x_shape).requires_grad_()
            if channels_last:
                x = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
            w = torch.randn(w_shape).requires_grad_()
            out = FC.conv2d(x, w, **kw)
            out.backward(torch.randn_like(out))
            def ref():
                return torch.nn.functional.conv2d(x.detach().double(), w.detach().double(),
                                                  **kw)
            return [out, x.grad, w.grad], ref
        return call
    return {
        "implicit_gemm": conv((2, 16, 7, 6), (16, 16, 3, 3), padding=1, stride=(2, 1)),
        "gemm_1x1": conv((2, 16, 5, 5), (24, 16, 1, 1), channels_last=True),
        "direct_depthwise": conv((1, 8, 6, 5), (8, 1, 3, 3), groups=8, padding=1),
        "grouped": conv((1, 32, 4, 4), (32, 16, 3, 3), groups=2, dilation=2, padding=2),
    }


def _other_calls():
    def transpose():
        x = torch.randn(1, 16, 3, 4).requires_grad_()
        w = torch.randn(16, 8, 3, 3).requires_grad_()
        b = torch.randn(8).requires_grad_()
        out = FC.conv_transpose2d(x, w, b, stride=2, output_padding=1)
        out.backward(torch.randn_like(out))
        return [out, x.grad, w.grad, b.grad], None

    def fused():
        x = torch.randn(1, 16, 5, 5).requires_grad_()
        w = torch.randn(16, 16, 3, 3).requires_grad_()
        r = torch.randn(1, 16, 5, 5).requires_grad_()
        out = FC.conv2d(x, w, padding=1, activation="silu", residual=r)
        out.backward(torch.randn_like(out))
        return [out, x.grad, w.grad, r.grad], None

    def roi(op, **kw):
        def call():
            x = torch.randn(1, 4, 6, 7).requires_grad_()
            rois = torch.tensor([[0, 0.5, 1.0, 4.0, 5.0], [0, 1.5, 0.0, 6.0, 3.5]])
            with aten_forbidden(TV_OPS, "torchvision"):
                out = op(x, rois, 2, **kw)
                out.backward(torch.ones_like(out))
            return [out, x.grad], None
        return call
    return {"conv_transpose2d": transpose, "activation_residual": fused,
            "roi_align": roi(FC.roi_align, sampling_ratio=2), "roi_pool": roi(FC.roi_pool)}


CALLS = {**_conv_calls(), **_other_calls()}


@pytest.mark.parametrize("name", list(CALLS))
@pytest.mark.parametrize("mode", ["plain", "split_k", "deterministic"])
def test_a_replayed_call_launches_what_a_fresh_one_does(name, mode):
    """The same kernels, grids and arguments (tensors by shape, strides and dtype), and the
    same values, from a call built anew and from its replay."""
    context = {"plain": contextlib.nullcontext, "split_k": lambda: interpreter_split_k(2),
               "deterministic": lambda: _deterministic()}[mode]
    call = CALLS[name]
    with context(), aten_forbidden():
        torch.manual_seed(1)
        with spied_launches() as fresh:
            fresh_values, ref = call()
        builds = _misses()
        torch.manual_seed(1)
        with spied_launches() as replayed:
            replay_values, _ = call()
        assert _misses() == builds, "the second call was built again instead of replayed"
    assert fresh and replayed == fresh
    for a, b in zip(fresh_values, replay_values):
        assert torch.equal(a, b)
    if ref is not None:
        assert rel_err(replay_values[0], ref()) < 1e-5


@contextlib.contextmanager
def _deterministic():
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(False)


def _misses() -> int:
    return sum(c.misses for c in launch_cache.CACHES)


def test_a_replayed_call_checks_plans_and_tunes_nothing(monkeypatch):
    x, w = torch.randn(2, 16, 6, 6), torch.randn(16, 16, 3, 3)
    with aten_forbidden():
        first = FC.conv2d(x, w, padding=1)

        def refused(*args, **kwargs):
            pytest.fail("a replayed call normalised, planned or tuned")
        functional_conv2d = importlib.import_module("fastconv.functional.conv2d")
        monkeypatch.setattr(functional_conv2d, "normalize_conv2d", refused)
        monkeypatch.setattr(conv2d_launch, "conv2d_fprop", refused)
        monkeypatch.setattr(conv2d_launch, "plan_fprop", refused)
        monkeypatch.setattr(autotune, "tuned", refused)
        x2 = torch.randn(2, 16, 6, 6)
        second = FC.conv2d(x2, w, padding=1)
    assert not torch.equal(first, second)
    assert rel_err(second, torch.nn.functional.conv2d(x2.double(), w.double(), padding=1)) < 1e-5


def test_what_the_plan_reads_is_in_the_key(monkeypatch):
    """Alignment, layout, dtype, TF32, determinism and the plan's own settings each make a new
    signature; the same signature with other values does not."""
    def key(x, w):
        return launch_cache.signature("conv2d", (x, w, None), ((1, 1), (1, 1), (1, 1), 1),
                                      plan.settings())
    x, w = torch.randn(1, 16, 5, 5), torch.randn(16, 16, 3, 3)
    base = key(x, w)
    assert key(torch.randn(1, 16, 5, 5), torch.randn(16, 16, 3, 3)) == base
    buf = torch.randn(1 * 16 * 5 * 5 + 1)
    assert key(buf[1:].view(1, 16, 5, 5), w) != base  # 4 bytes off 16-byte alignment
    assert key(x.contiguous(memory_format=torch.channels_last), w) != base
    assert key(x.half(), w.half()) != base
    with planning_for("sm_90"):
        assert key(x, w) != base
    with interpreter_split_k(2):
        assert key(x, w) != base
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", not torch.backends.cudnn.allow_tf32)
    assert key(x, w) != base
    monkeypatch.undo()
    with _deterministic():
        assert key(x, w) != base
    assert key(x, w) == base


def test_caches_are_bounded_over_10000_calls_of_new_shapes():
    """10,000 calls over 1,500 shapes, more than the caches keep, so that they keep forgetting
    and recording (launches are no-ops: what is measured is what the call path keeps): every
    cache stays within its capacity, and the Python heap is as large after the last 4,000
    calls as after the 4,000 before (tracemalloc sees only what is allocated once it runs,
    so the first 2,000 fill the caches untraced)."""
    w = torch.randn(4, 4, 1, 1)
    shapes = [(1, 4, 1 + i % 50, 1 + i // 50) for i in range(1500)]

    def calls(n, start):
        for i in range(start, start + n):
            FC.conv2d(torch.empty(shapes[i % len(shapes)]), w)
    with launches_as_no_ops(), planning_for("sm_90"):
        calls(2000, 0)
        tracemalloc.start()
        try:
            calls(4000, 2000)
            gc.collect()
            middle = tracemalloc.get_traced_memory()[0]
            calls(4000, 6000)
            gc.collect()
            end = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
    assert all(len(c) <= c.capacity for c in launch_cache.CACHES)
    assert any(len(c) == c.capacity for c in launch_cache.CACHES)
    assert abs(end - middle) < 256 * 2**10, f"the heap grew {end - middle} bytes"


def _per_call_us(fn, calls=200, repeats=15):
    """CPU time of this thread per call, the fastest of ``repeats`` runs with the garbage
    collector off: unlike wall time, it does not count the time the thread waits for a core
    other tests hold."""
    import time
    for _ in range(50):
        fn()
    best = float("inf")
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeats):
            start = time.thread_time()
            for _ in range(calls):
                fn()
            best = min(best, (time.thread_time() - start) / calls)
    finally:
        gc.enable()
    return best * 1e6


def test_host_cost_per_call_within_a_generous_margin_of_the_targets():
    """Targets: 20 us per forward, 80 us per forward+backward (autograd engine included,
    launches excluded) on a development machine. Asserted at 4x, since this test shares two
    cores with the rest of the suite (CPU time still grows when another process shares the
    core's caches); ``fastconv bench --overhead`` reports the figures. The path before the
    call cache took about 80 us and 435 us."""
    x, w = torch.randn(1, 16, 8, 8), torch.randn(16, 16, 3, 3)
    xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
    g = torch.randn(1, 16, 8, 8)
    with launches_as_no_ops(), planning_for("sm_90"):
        forward = _per_call_us(lambda: FC.conv2d(x, w, padding=1))
        both = _per_call_us(lambda: FC.conv2d(xg, wg, padding=1).backward(g), calls=100)
        # the replay went through the compiled-kernel path (the launcher stand-in)
        steps = [s for c in launch_cache.CACHES if isinstance(c, launch_cache.CallCache)
                 for e in c.values() for s in e.steps]
    assert steps and all(s.compiled is not None and s.compiled[0] is _NoLaunch.run
                         for s in steps)
    assert forward < 4 * 20, f"{forward:.1f} us per forward"
    assert both < 4 * 80, f"{both:.1f} us per forward+backward"


def test_the_overhead_benchmark_measures_every_op(capsys, monkeypatch):
    """``fastconv bench --overhead`` on a machine without a GPU: every op, both sides, in
    microseconds, with fastconv's launches no-ops."""
    from fastconv import __main__ as cli
    from fastconv.bench import overhead
    rows = overhead.measure(calls=20, repeats=1)
    assert [r.op for r in rows] == list(overhead.OPS)
    assert all(r.fastconv_us > 0 and r.torch_us > 0 and r.ratio > 0 for r in rows)
    assert overhead.run(calls=5, repeats=1) == 0
    out = capsys.readouterr().out
    assert "launch a no-op" in out and all(op in out for op in overhead.OPS)
    ran = []
    monkeypatch.setattr(overhead, "run", lambda: ran.append(True) or 0)
    assert cli.main(["bench", "--overhead"]) == 0 and ran


# ---------------------------------------------------------------------------- tune cache
def _problem(n=8):
    return conv_problem((n, 64, 28, 28), (128, 64, 3, 3), (n, 128, 28, 28), 1, torch.float16,
                        (1, 1), (1, 1))


def test_tuned_winners_survive_in_the_tune_cache_file(monkeypatch, tmp_path):
    path = tmp_path / "tune.json"
    monkeypatch.setenv("FASTCONV_TUNE_CACHE", str(path))
    monkeypatch.setattr(autotune, "_BEST", {})
    monkeypatch.setattr(autotune, "_FILE_READ", set())
    pb = _problem()
    start = plan_conv2d("fprop", pb)
    options = autotune.candidates(start, pb, None)
    fastest = options[-1].config
    launched = []

    def timer(fn):
        fn()
        return 1.0 if launched[-1] == fastest else 2.0
    chosen = autotune.tuned(start, pb, None, lambda p: launched.append(p.config), timer=timer)
    assert chosen.config == fastest and path.exists()

    # a second process: nothing tuned yet, the file read before the first measurement
    monkeypatch.setattr(autotune, "_BEST", {})
    monkeypatch.setattr(autotune, "_FILE_READ", set())

    def no_timing(fn):
        pytest.fail("a bucket in the tune cache was timed again")
    again = autotune.tuned(start, _problem(9), None, lambda p: None, timer=no_timing)
    assert again.config == fastest


def test_a_corrupt_tune_cache_file_is_named(monkeypatch, tmp_path):
    path = tmp_path / "tune.json"
    path.write_text("not json")
    with pytest.raises(RuntimeError, match="FASTCONV_TUNE_CACHE"):
        autotune.load(str(path))


def test_a_launcher_that_refuses_its_arguments_falls_back_to_the_jit(monkeypatch):
    """Should an installed Triton's compiled-kernel launcher take its arguments otherwise, the
    launch goes through the JIT instead (once warned), and the result is the same."""
    from fastconv.bench.overhead import _NoLaunch

    def refuses(*args):
        raise TypeError("function takes exactly 14 arguments")
    monkeypatch.setattr(_NoLaunch, "run", staticmethod(refuses))
    x, w = torch.randn(1, 16, 5, 5), torch.randn(16, 16, 3, 3)
    with launches_as_no_ops():
        FC.conv2d(x, w, padding=1)  # recorded: the JIT path, which keeps the stand-in
        steps = [s for c in launch_cache.CACHES if isinstance(c, launch_cache.CallCache)
                 for e in c.values() for s in e.steps]
        assert steps and all(s.compiled is not None for s in steps)
        with pytest.warns(RuntimeWarning, match="compiled kernel failed"):
            FC.conv2d(x, w, padding=1)
        assert all(s.compiled is None for s in steps)


def test_a_tensor_passed_twice_is_its_own_signature():
    """residual=input records one slot for both; a later call with two tensors there must
    not replay it (it would add the input instead of the residual)."""
    w = torch.randn(8, 8, 1, 1)
    x = torch.randn(1, 8, 4, 4)
    with aten_forbidden():
        FC.conv2d(x, w, activation="relu", residual=x)
        x2, r2 = torch.randn(1, 8, 4, 4), torch.randn(1, 8, 4, 4)
        out = FC.conv2d(x2, w, activation="relu", residual=r2)
    ref = torch.relu(torch.nn.functional.conv2d(x2.double(), w.double()) + r2.double())
    assert rel_err(out, ref) < 1e-5
