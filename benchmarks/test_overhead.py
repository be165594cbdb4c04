"""Host time per eager call on tiny shapes (``fastconv.bench.overhead``): conv2d forward and
forward+backward, conv_transpose2d, roi_align; fastconv against torch's own op, real launches
on the GPU. ``fastconv bench --overhead`` prints the same as a table (and measures the call
path on the CPU, launches as no-ops, where there is no GPU)."""
import pytest
import torch

from fastconv.bench import overhead


@pytest.mark.parametrize("op", overhead.OPS)
def test_overhead(benchmark, _gpu_only, op, impl):
    ours, theirs = overhead.cases(torch.device("cuda"), torch.float32)[op]
    fn = ours if impl == "fastconv" else theirs
    for _ in range(20):  # first calls record, tune and compile
        fn()
    torch.cuda.synchronize()
    benchmark.pedantic(fn, rounds=200, iterations=10, warmup_rounds=2)
