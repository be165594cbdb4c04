"""The pytest-benchmark suite: the cases of ``fastconv bench``, one test per case, dtype, layout,
direction and implementation (fastconv or the baseline), timed on a CUDA GPU.

    pytest benchmarks/ --benchmark-only -k "resnet50 and float16 and forward"

Each test builds its variant with :mod:`fastconv.bench.harness` (the same inputs, rotating
buffers and baselines as ``fastconv bench``), checks fastconv's result against the baseline,
and lets pytest-benchmark time the rounds (each one synchronised); ``extra_info`` holds
``do_bench``'s median and the derived TFLOP/s, GB/s and fraction of the roofline floor, which
``--benchmark-json`` keeps. Without a CUDA GPU every test is skipped: ``fastconv bench
--dry-run`` is the harness's CPU check, and ``tests/test_bench.py`` runs it.
"""
import os

import pytest
import torch

from fastconv.bench import harness
from fastconv.ops import INTERPRETING

IMPLS = ("fastconv", "baseline")
# pytest-benchmark's rounds per test, after its warm-up rounds
ROUNDS, WARMUP_ROUNDS = 20, 3


def _skip_reason():
    if INTERPRETING or os.environ.get("TRITON_INTERPRET"):
        return ("TRITON_INTERPRET is set: the kernels would run in Triton's interpreter, "
                "which times nothing; unset it")
    if not torch.cuda.is_available():
        return ("no CUDA GPU: the benchmark suite times GPU kernels (`fastconv bench "
                "--dry-run` checks the harness on the CPU)")
    return None


@pytest.fixture(scope="session", autouse=True)
def _gpu_only():
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture(params=IMPLS)
def impl(request):
    """Which side a test times: fastconv, or the faster baseline."""
    return request.param


@pytest.fixture(scope="session")
def bench_env(_gpu_only):
    return harness.environment(torch.device("cuda"), dry=False)


@pytest.fixture
def run_variant(benchmark, bench_env):
    """A function timing one variant with ``benchmark``: ``run_variant(case, dtype, layout,
    direction, impl)``; an :class:`~fastconv.bench.harness.E2ECase` takes "inference" or
    "train_step" as its direction."""
    device = torch.device("cuda")

    def run(case, dtype, layout, direction, impl):
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
        e2e = isinstance(case, harness.E2ECase)
        build = harness.e2e_contenders if e2e else harness.contenders
        fast, baselines = build(case, dtype, layout, direction, device)
        # agreement first, from the same weights (an E2E training step changes them), and
        # the first calls are the warm-up in which cudnn.benchmark and Triton autotune
        with fast.context():
            got = fast.first()
        tf32 = bench_env.tf32 and dtype == torch.float32
        for b in baselines:
            with b.context():
                err = harness.worst_rel_err(got, b.first())
            tol = harness.tolerance(dtype, tf32, e2e)
            assert err <= tol, f"fastconv disagrees with {b.name}: rel err {err:.2e} > {tol:.0e}"
        del got
        if impl == "fastconv":
            chosen = fast
        else:  # the faster baseline, as in fastconv bench
            times = []
            for b in baselines:
                with b.context():
                    times.append((harness.time_ms(b.fn, device), b.name, b))
            chosen = min(times, key=lambda t: t[0])[2]

        def step():
            chosen.fn()
            torch.cuda.synchronize()
        benchmark.group = f"{case.name} {direction} {harness.dtype_name(dtype)} {layout}"
        with chosen.context():
            benchmark.pedantic(step, rounds=ROUNDS, warmup_rounds=WARMUP_ROUNDS, iterations=1)
            ms = harness.time_ms(chosen.fn, device)
        info = dict(impl=chosen.name, do_bench_median_ms=ms)
        if e2e:
            info["tflops"] = harness.e2e_flops(case, direction) / (ms * 1e-3) / 1e12
        else:
            flops, nbytes = case.flops(direction), case.min_bytes(direction, dtype)
            floor = bench_env.peak.floor_seconds(flops, nbytes, dtype, tf32)
            info.update(tflops=flops / (ms * 1e-3) / 1e12, gbps=nbytes / (ms * 1e-3) / 1e9,
                        floor_fraction=floor / (ms * 1e-3),
                        bound=bench_env.peak.bound(flops, nbytes, dtype, tf32))
        benchmark.extra_info.update(info)

    return run
