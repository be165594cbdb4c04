"""Autotuning on a GPU: the fastest spill-free config of a family, measured once per shape bucket.

The key is bucketed (powers of two of the GEMM's rows, columns and reduction), so a new batch
size inside a bucket reuses the measurement instead of re-tuning, and the tuned configs are the
ones the compile check has proven spill-free (the plan's table for the family and dtype). Under
the interpreter, while a CUDA graph is being captured, or with FASTCONV_AUTOTUNE=0, the plan's
heuristic choice runs untimed.
"""
import dataclasses
import os
from typing import Callable, Dict, Optional

import torch
import triton

from fastconv.ops._runtime import INTERPRETING
from fastconv.ops.plan import ConvProblem, Plan, config_table, dtype_class, gemm_dims, split_for

ENABLED = os.environ.get("FASTCONV_AUTOTUNE", "1") != "0"
_BEST: Dict[tuple, Plan] = {}


def bucket(n: int) -> int:
    return triton.next_power_of_2(max(int(n), 1))


def tuning_key(plan: Plan, pb: ConvProblem) -> tuple:
    rows, cols, red = gemm_dims(plan.direction, pb)
    return (plan.direction, plan.family, dtype_class(pb.dtype), pb.dtype, plan.index_64,
            bucket(rows), bucket(cols), bucket(red), pb.groups > 1)


def candidates(plan: Plan, pb: ConvProblem, device) -> list:
    """The plan with each config of its family's table (split-K recomputed per config: each is
    timed with the split it would run with, its reduction included)."""
    configs = config_table(plan.family, plan.index_64)[plan.direction][dtype_class(pb.dtype)]
    out = []
    for cfg in configs:
        split = split_for(plan.direction, plan.family, pb, cfg, device)
        out.append(dataclasses.replace(plan, config=cfg, split=split))
    return out


def _should_tune(device) -> bool:
    if not ENABLED or INTERPRETING or device is None or torch.device(device).type != "cuda":
        return False
    return not torch.cuda.is_current_stream_capturing()


def tuned(plan: Plan, pb: ConvProblem, device, launch: Callable[[Plan], None],
          timer: Optional[Callable[[Callable[[], None]], float]] = None) -> Plan:
    """The plan to launch: the cached winner of this bucket, measured now if it is new.

    ``launch(plan)`` must run the kernel once with ``plan`` (it may overwrite outputs: the real
    launch follows). ``timer`` times a callable (default: ``triton.testing.do_bench``, median).
    """
    if timer is None and not _should_tune(device):
        return plan
    key = tuning_key(plan, pb)
    if key not in _BEST:
        options = candidates(plan, pb, device)
        if len(options) == 1:
            _BEST[key] = options[0]
        else:
            timer = timer or (lambda fn: triton.testing.do_bench(fn, return_mode="median"))
            times = [timer(lambda p=p: launch(p)) for p in options]
            _BEST[key] = options[times.index(min(times))]
    best = _BEST[key]
    # the split depends on this problem's size, not the bucket's (a smaller batch in the same
    # bucket may have fewer tiles, and so need a split the measured one did not)
    return dataclasses.replace(best, split=split_for(best.direction, best.family, pb,
                                                     best.config, device))
