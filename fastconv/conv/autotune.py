"""Autotuning on a GPU: the fastest spill-free config of a family, measured once per shape bucket.

The key is bucketed (powers of two of the GEMM's rows, columns and reduction), so a new batch
size inside a bucket reuses the measurement instead of re-tuning, and the tuned configs are the
ones the compile check has proven spill-free (the plan's table for the family and dtype). Under
the interpreter, while a CUDA graph is being captured, or with FASTCONV_AUTOTUNE=0, the plan's
heuristic choice runs untimed.

Tuning runs on the first call of a bucket only: every later call of the same signature replays
its recorded launches (:mod:`fastconv.ops.launch_cache`), and a CUDA graph capture never tunes.
``FASTCONV_TUNE_CACHE=path.json`` keeps the winners in a file: read before the first
measurement, written after each, so that a second process (a training job's next run, a
benchmark after a warm-up run) tunes nothing it has seen. Entries are per GPU name.
"""
import dataclasses
import json
import os
import tempfile
from typing import Callable, Dict, Optional

import torch
import triton

from fastconv.kernels.configs import TileConfig
from fastconv.ops._runtime import INTERPRETING
from fastconv.ops.launch_cache import not_recorded
from fastconv.conv.plan import (ConvProblem, kernel_of, Plan, config_table, dtype_class, gemm_dims,
                               split_for)

ENABLED = os.environ.get("FASTCONV_AUTOTUNE", "1") != "0"
_BEST: Dict[tuple, Plan] = {}
_FILE_READ = set()  # tune-cache files already merged into _BEST


def bucket(n: int) -> int:
    return triton.next_power_of_2(max(int(n), 1))


def tuning_key(plan: Plan, pb: ConvProblem) -> tuple:
    rows, cols, red = gemm_dims(plan.direction, pb)
    return (plan.direction, plan.family, dtype_class(pb.dtype), pb.dtype, plan.index_64,
            bucket(rows), bucket(cols), bucket(red), pb.groups > 1)


def candidates(plan: Plan, pb: ConvProblem, device) -> list:
    """The plan, then its config's neighbours in the family's table (the next larger and the
    next smaller tile), each with the split-K it would run with (timed with its reduction).

    Not the whole table: the first call of a shape bucket compiles every candidate before it
    times it (a cold compile is 0.3-3 s each on a CPU), and the plan already took the largest
    tile whose grid fills the SMs, so the tiles far from it either leave SMs idle or cut the
    work finer than the one next to it does. Three at most, and the persistent variant of the
    plan's tile where the family has one (the TMA forward). The TMA tables hold both
    orientations (``TileConfig.channels_as_n``); neighbours are the plan's orientation's."""
    table = config_table(plan.family, plan.index_64)[plan.direction][dtype_class(pb.dtype)]
    # neighbours in the plan's orientation only: a narrow-group tile (channels_as_n) beside
    # narrow ones, a wide tile beside wide ones
    plain = [cfg for cfg in table if not cfg.persistent
             and cfg.channels_as_n == plan.config.channels_as_n]
    at = plain.index(plan.config) if plan.config in plain else 0
    configs = [plain[at], *plain[max(at - 1, 0):at], *plain[at + 1:at + 2]]
    configs += [cfg for cfg in table if cfg.persistent and
                dataclasses.replace(cfg, persistent=False) == plain[at]]
    out = []
    for cfg in configs:
        split = split_for(plan.direction, plan.family, pb, cfg, device)
        out.append(dataclasses.replace(plan, config=cfg, split=split))
    return out


def _device_name(device) -> str:
    if device is not None and torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(device)
    return "cpu"


def _entry(key: tuple, device_name: str, plan: Plan) -> dict:
    cfg = plan.config
    return {"device": device_name, "key": [str(k) if isinstance(k, torch.dtype) else k
                                           for k in key],
            "config": dataclasses.asdict(cfg)}


def save(path: str, device=None) -> None:
    """Write the tuned winners of ``device`` (the current GPU) to ``path``, merged with what
    the file already holds (atomically: a reader never sees half a file)."""
    name = _device_name(device)
    entries = {json.dumps([e["device"], e["key"]]): e for e in _read(path)}
    for key, plan in _BEST.items():
        e = _entry(key, name, plan)
        entries[json.dumps([e["device"], e["key"]])] = e
    folder = os.path.dirname(os.path.abspath(path))
    with tempfile.NamedTemporaryFile("w", dir=folder, delete=False, suffix=".tmp") as f:
        json.dump({"fastconv_tune_cache": 1, "entries": list(entries.values())}, f, indent=1)
    os.replace(f.name, path)


def _read(path: str) -> list:
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as e:
        raise RuntimeError(f"FASTCONV_TUNE_CACHE={path!r} is not a fastconv tune cache "
                           f"({e}); delete it or point the variable elsewhere") from e
    if not isinstance(data, dict) or data.get("fastconv_tune_cache") != 1:
        raise RuntimeError(f"FASTCONV_TUNE_CACHE={path!r} is not a fastconv tune cache")
    return data["entries"]


def load(path: str, device=None) -> int:
    """Merge the winners ``path`` holds for ``device``'s GPU into this process's; returns how
    many. A key is kept only if its family's table still has the config."""
    name, count = _device_name(device), 0
    dtypes = {str(d): d for d in (torch.float16, torch.bfloat16, torch.float32, torch.float64)}
    for e in _read(path):
        if e["device"] != name:
            continue
        key = tuple(dtypes.get(k, k) if isinstance(k, str) else k for k in e["key"])
        direction, family, dclass, _, index_64 = key[:5]
        table = config_table(family, index_64)[direction][dclass]
        # fields the entry lacks (written before they existed) take their defaults
        try:
            saved = dataclasses.asdict(TileConfig(**e["config"]))
        except TypeError:  # a field this version no longer has
            continue
        cfg = next((c for c in table if dataclasses.asdict(c) == saved), None)
        if cfg is None:
            continue
        _BEST[key] = Plan(direction, family, kernel_of(direction, family), cfg, 1,
                          "autotuned (tune cache)", index_64)
        count += 1
    return count


def _tune_cache_path() -> Optional[str]:
    return os.environ.get("FASTCONV_TUNE_CACHE") or None


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
    path = _tune_cache_path()
    if path and (path, _device_name(device)) not in _FILE_READ:
        _FILE_READ.add((path, _device_name(device)))
        load(path, device)
    if key not in _BEST:
        options = candidates(plan, pb, device)
        if len(options) == 1:
            _BEST[key] = options[0]
        else:
            timer = timer or (lambda fn: triton.testing.do_bench(fn, return_mode="median"))
            with not_recorded():  # trial launches: their workspaces are not the call's
                times = [timer(lambda p=p: launch(p)) for p in options]
            _BEST[key] = options[times.index(min(times))]
        if path:
            save(path, device)
    best = _BEST[key]
    # the split depends on this problem's size, not the bucket's (a smaller batch in the same
    # bucket may have fewer tiles, and so need a split the measured one did not)
    return dataclasses.replace(best, split=split_for(best.direction, best.family, pb,
                                                     best.config, device))
