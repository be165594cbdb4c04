"""The Python steps of ``benchmarks/gpu_run.sh``, the one prepared script of a GPU run.

    python -m fastconv.bench.gpu_run env                  # versions, device, measured ceilings
    python -m fastconv.bench.gpu_run csv-name [--dry-run] # the CSV name fastconv bench chooses
    python -m fastconv.bench.gpu_run warm --models resnet50 --dtypes bfloat16 \\
        --layouts channels_last --batches 32 --directions forward backward [--shard 0/2]
    python -m fastconv.bench.gpu_run summary RUN.csv [--tma FILE] [--overhead FILE]

``warm`` runs fastconv's side of every selected case once, forward and backward, at the size
the timing pass will run it, so that Triton compiles each kernel into its on-disk cache and a
later ``fastconv bench`` process only loads them. The script starts several ``warm`` processes
at once (one per model group and dtype, or a shard of one); run them with the same
``FASTCONV_AUTOTUNE`` as the timing pass (the script uses 0 for both), or the timing pass meets
tile configs no warm-up compiled.

``summary`` reads the run's CSV (:data:`fastconv.bench.harness.COLUMNS`) and prints the short
table the script ends with: per model group, dtype and direction the geometric-mean speedup on
GPU time and on eager time, the worst layer, and for depthwise and RoI rows the GB/s of the GPU
time against the memory floor; then the TMA check's verdict and the host-overhead lines.
"""
import argparse
import csv
import math
import os
import statistics
import sys
import time
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List, Optional

MEMORY_GROUPS = ("depthwise", "roi")
_SHORT = {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32", "forward": "fwd",
          "backward": "bwd", "both": "both", "channels_last": "NHWC", "nchw": "NCHW"}


# ---------------------------------------------------------------------------- env
def env_report(measure: bool = True) -> List[str]:
    """Lines for env.txt: Python, torch, triton, torchvision, CUDA, cuDNN, the device, where
    fastconv was imported from, the FASTCONV_* settings, and on a GPU the two ceilings
    measured now (device copy GB/s counting read + write; bf16 8192^3 matmul TFLOP/s)."""
    import platform

    import torch
    import triton

    import fastconv

    lines = [f"python {platform.python_version()}", f"torch {torch.__version__}",
             f"triton {triton.__version__}"]
    try:
        import torchvision
        lines.append(f"torchvision {torchvision.__version__}")
    except ImportError:
        lines.append("torchvision: not installed")
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    lines += [f"cuda {torch.version.cuda}", f"cudnn {cudnn}",
              f"fastconv {getattr(fastconv, '__version__', '?')} from "
              f"{os.path.dirname(fastconv.__file__)}"]
    lines += [f"{k}={v}" for k, v in sorted(os.environ.items())
              if k.startswith(("FASTCONV_", "TRITON_"))]
    if not torch.cuda.is_available():
        lines.append("device: no CUDA device")
        return lines
    p = torch.cuda.get_device_properties(0)
    l2 = getattr(p, "L2_cache_size", 0) / 2**20
    lines.append(f"device {p.name}, sm_{p.major}{p.minor}, {p.multi_processor_count} SMs, "
                 f"{p.total_memory / 2**30:.0f} GiB, L2 {l2:.0f} MiB")
    if measure:
        lines += measured_ceilings()
    return lines


def measured_ceilings() -> List[str]:
    """The copy bandwidth and the bf16 matmul rate, measured on random data (METHOD.md)."""
    import torch
    import triton.testing

    out = []
    try:
        a = torch.randn(2**29 // 2, device="cuda", dtype=torch.bfloat16)  # 512 MiB
        b = torch.empty_like(a)
        ms = triton.testing.do_bench(lambda: b.copy_(a), warmup=25, rep=100,
                                     return_mode="median")
        out.append(f"measured device copy: {2 * a.numel() * 2 / ms / 1e6:.0f} GB/s "
                   f"(read + write, 512 MiB)")
        del a, b
        m = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
        n = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
        ms = triton.testing.do_bench(lambda: m @ n, warmup=25, rep=100, return_mode="median")
        out.append(f"measured bf16 matmul 8192^3: {2 * 8192**3 / ms / 1e9:.0f} TFLOP/s")
        del m, n
        torch.cuda.empty_cache()
    except Exception as exc:  # noqa: BLE001 - env.txt says so, the run goes on
        out.append(f"ceilings not measured: {type(exc).__name__}: {exc}")
    return out


def csv_name(dry: bool) -> str:
    """The file name ``fastconv bench`` gives its CSV on this machine: <gpu>-<date>.csv."""
    import torch

    from fastconv.bench import harness, run
    from fastconv.ops import INTERPRETING

    gpu = torch.cuda.is_available() and not INTERPRETING
    env = harness.environment(torch.device("cuda" if gpu else "cpu"), dry)
    stem = f"{'dry-' if dry else ''}{run._slug(env.device)}-{env.date}"
    return f"{stem}.csv"


# ---------------------------------------------------------------------------- warm
def _filters(parser: argparse.ArgumentParser) -> None:
    from fastconv.bench.cases import DIRECTIONS, LAYOUTS
    from fastconv.bench.run import DTYPE_NAMES, GROUPS, OPS

    parser.add_argument("--models", nargs="+", choices=GROUPS)
    parser.add_argument("--ops", nargs="+", choices=OPS)
    parser.add_argument("--dtypes", nargs="+", choices=DTYPE_NAMES)
    parser.add_argument("--layouts", nargs="+", choices=LAYOUTS)
    parser.add_argument("--directions", nargs="+", choices=DIRECTIONS)
    parser.add_argument("--batches", nargs="+", type=int)
    parser.add_argument("--match")
    parser.add_argument("--dry-run", action="store_true",
                        help="tiny shapes (under Triton's interpreter without a GPU)")
    parser.add_argument("--shard", default="0/1",
                        help="I/N: only every N-th case from the I-th (default 0/1: all)")


def warm(args) -> int:
    """Run fastconv's side of each selected case once (forward, and backward where the
    directions ask for one) so that every kernel the timing pass launches is compiled."""
    import torch

    from fastconv.bench import harness, run
    from fastconv.ops import INTERPRETING

    index, count = (int(v) for v in args.shard.split("/"))
    if not 0 <= index < count:
        raise SystemExit(f"--shard must be I/N with 0 <= I < N, got {args.shard!r}")
    gpu = torch.cuda.is_available() and not INTERPRETING
    if not gpu and not (args.dry_run and INTERPRETING):
        print("warm: no CUDA GPU (a --dry-run without one needs TRITON_INTERPRET=1)",
              file=sys.stderr)
        return 2
    device = torch.device("cuda" if gpu else "cpu")
    # "both" runs the forward (inputs requiring grad) and both gradients; a plain forward as
    # well where one is timed, in case its launch differs
    directions = args.directions or ["forward", "backward", "both"]
    passes = (["forward"] if "forward" in directions else []) + \
        (["both"] if set(directions) - {"forward"} else [])
    seen, todo = set(), []
    for case, _, dtype, layout in run._variants(args, args.dry_run):
        if (case, dtype, layout) not in seen:
            seen.add((case, dtype, layout))
            todo.append((case, dtype, layout))
    todo = todo[index::count]
    start, failed = time.perf_counter(), 0
    for case, dtype, layout in todo:
        t = time.perf_counter()
        try:
            for direction in passes:
                fast, _ = harness.contenders(case, dtype, layout, direction, device, sets=1,
                                             dry=args.dry_run)
                with fast.context():
                    fast.first()
                del fast
            if gpu:
                torch.cuda.synchronize()
            status = "ok"
        except Exception as exc:  # noqa: BLE001 - the timing pass will report it too
            failed += 1
            status = f"error: {type(exc).__name__}: {exc}"[:200]
        print(f"warm {case.name} {harness.dtype_name(dtype)} {layout} {'+'.join(passes)}: "
              f"{time.perf_counter() - t:.1f}s {status}", flush=True)
        if gpu:
            torch.cuda.empty_cache()
    print(f"warm shard {args.shard}: {len(todo)} case(s) in {time.perf_counter() - start:.0f}s,"
          f" {failed} failed", flush=True)
    return 0


# ---------------------------------------------------------------------------- summary
def _float(text) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def _geomean(values) -> float:
    values = [v for v in values if v > 0 and math.isfinite(v)]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else math.nan


def _fmt(value: float, fmt: str = ".2f", suffix: str = "") -> str:
    return "-" if not math.isfinite(value) else format(value, fmt) + suffix


def read_rows(paths) -> List[Dict[str, str]]:
    rows = []
    for path in paths:
        with open(path, newline="") as f:
            rows += list(csv.DictReader(f))
    return rows


def summary_lines(rows: List[Dict[str, str]]) -> List[str]:
    """The per-group summary of a run's CSV rows (see the module docstring)."""
    if not rows:
        return ["no result rows"]
    groups: "OrderedDict[tuple, list]" = OrderedDict()
    for r in rows:
        groups.setdefault((r["group"], r["dtype"], r["direction"]), []).append(r)
    head = (f"{'group':<20} {'type':<4} {'dir':<4} {'n':>3}  {'GPU x':>6} {'eager x':>7}  "
            f"{'worst layer (GPU x, else eager x)':<40} {'GB/s fc/base':>13} {'of BW':>6}")
    lines = [head, "-" * len(head)]
    for (group, dtype, direction), rs in groups.items():
        ok = [r for r in rs if r.get("result") == "ok"]
        gpu = [_float(r.get("gpu_speedup")) for r in ok]
        eager = [_float(r.get("speedup")) for r in ok]

        def key(r):
            g = _float(r.get("gpu_speedup"))
            return g if math.isfinite(g) else _float(r.get("speedup"))
        ranked = [r for r in ok if math.isfinite(key(r))]
        worst = "-"
        if ranked:
            w = min(ranked, key=key)
            worst = f"{w.get('layer') or w['name']} {key(w):.2f}"
        bw = frac = ""
        if group in MEMORY_GROUPS:
            fc = [_float(r.get("gpu_gbps")) for r in ok]
            base = [_float(r.get("min_bytes")) / _float(r.get("baseline_gpu_ms")) / 1e6
                    for r in ok]
            of = [_float(r.get("gpu_mem_floor_fraction")) for r in ok]
            fc, base, of = ([v for v in vals if math.isfinite(v)] for vals in (fc, base, of))
            bw = (f"{_fmt(statistics.median(fc) if fc else math.nan, '.0f')}/"
                  f"{_fmt(statistics.median(base) if base else math.nan, '.0f')}")
            frac = _fmt(statistics.median(of) * 100 if of else math.nan, ".0f", "%")
        bad = len(rs) - len(ok)
        n = f"{len(ok)}" + (f"!{bad}" if bad else "")
        lines.append(f"{group:<20} {_SHORT.get(dtype, dtype):<4} "
                     f"{_SHORT.get(direction, direction):<4} {n:>3}  "
                     f"{_fmt(_geomean(gpu)):>6} {_fmt(_geomean(eager)):>7}  {worst[:40]:<40} "
                     f"{bw:>13} {frac:>6}")
    failed = [r for r in rows if r.get("result") != "ok"]
    noted = [r for r in rows if r.get("gpu_note")]
    lines.append("x: geometric-mean speedup (baseline ms / fastconv ms) over the rows that "
                 "agreed; n!k: k rows failed or disagreed; GB/s: median over the rows, of the "
                 "GPU time, fastconv/baseline; of BW: memory floor / GPU time")
    if failed:
        lines.append(f"{len(failed)} row(s) failed or disagreed, e.g. " + "; ".join(
            f"{r['name']} {r['direction']} {r['dtype']}: {r.get('result')} "
            f"{(r.get('error') or '')[:80]}" for r in failed[:3]))
    if noted:
        lines.append(f"{len(noted)} row(s) without a GPU time, e.g. "
                     f"{noted[0]['name']} {noted[0]['direction']}: {noted[0]['gpu_note'][:120]}")
    first = rows[0]
    lines.append(f"device {first.get('device')}; torch {first.get('torch')}, triton "
                 f"{first.get('triton')}, cudnn {first.get('cudnn')}; mode {first.get('mode')}")
    return lines


def tma_lines(path: Optional[str]) -> List[str]:
    """The TMA check's verdict from its output file (gpu_run.sh writes the exit status last)."""
    if not path or not os.path.exists(path):
        return ["TMA check: no output"]
    text = Path(path).read_text(errors="replace").splitlines()
    skipped = [line for line in text if line.startswith("SKIPPED")]
    if skipped:
        return [f"TMA check: {skipped[0]}"]
    halo = next((line for line in text if line.startswith("halo zero fill")), None)
    statuses = [line for line in text if line.startswith("exit status")]
    status = statuses[-1].split(":", 1)[1].strip() if statuses else "?"
    verdict = {"0": "PASS", "124": "TIMED OUT", "137": "KILLED"}.get(status, "FAIL")
    lines = [f"TMA check: {verdict} (exit status {status}); "
             f"{halo or 'no halo line: the check did not get that far'}"]
    # the timed rows, if any: geometric-mean speedup over cuDNN per pass and tile
    header = next((i for i, line in enumerate(text) if line.startswith("layer,")), None)
    if header is not None:
        body = [line for i, line in enumerate(text[header:]) if line and "," in line
                and not line.startswith(("exit status", "halo"))
                and (i == 0 or not line.startswith("layer,"))]  # one header
        tiles: Dict[str, list] = {}
        errs = []
        for r in csv.DictReader(body):
            what = " ".join(filter(None, (r.get("pass"), r.get("tile") or "?")))
            tiles.setdefault(what, []).append(_float(r.get("speedup")))
            errs.append(_float(r.get("rel_err")))
        timed = {t: _geomean(v) for t, v in tiles.items() if any(math.isfinite(x) for x in v)}
        worst = max((e for e in errs if math.isfinite(e)), default=math.nan)
        lines.append(f"TMA check: {len(errs)} row(s), worst rel_err {_fmt(worst, '.1e')}" +
                     ("; GPU-time speedup over cuDNN " + ", ".join(
                         f"{t} {_fmt(g)}" for t, g in timed.items()) if timed else ""))
    return lines


def overhead_lines(path: Optional[str]) -> List[str]:
    """The host-overhead table's rows (op, fastconv us, torch us, ratio)."""
    if not path or not os.path.exists(path):
        return ["host overhead: no output"]
    rows = [line.strip() for line in Path(path).read_text(errors="replace").splitlines()
            if ("forward" in line or "exit status" in line or "SKIPPED" in line)]
    return ["host overhead (us per eager call: op | fastconv | torch | ratio):"] + \
        [f"  {line}" for line in rows[:8]]


def env_lines(path: Optional[str]) -> List[str]:
    """The device and measured-ceiling lines of env.txt (the roofline columns use the
    datasheet's peaks; these say how far the card itself gets)."""
    if not path or not os.path.exists(path):
        return []
    return [line.strip() for line in Path(path).read_text(errors="replace").splitlines()
            if line.startswith(("device ", "measured ", "ceilings not measured"))]


def summary(args) -> int:
    paths = [p for p in args.csv if os.path.exists(p)]
    lines = ["=" * 30 + " fastconv GPU run: summary " + "=" * 30]
    if not paths:
        lines.append(f"no results CSV ({', '.join(args.csv)})")
    else:
        lines += summary_lines(read_rows(paths))
    lines += env_lines(args.env)
    lines += tma_lines(args.tma)
    if args.overhead:
        lines += overhead_lines(args.overhead)
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


# ---------------------------------------------------------------------------- command line
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastconv.bench.gpu_run",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("env", help="versions, device and measured ceilings")
    p.add_argument("--no-measure", action="store_true", help="skip the two ceilings")
    p = sub.add_parser("csv-name", help="the CSV file name fastconv bench would choose")
    p.add_argument("--dry-run", action="store_true")
    p = sub.add_parser("warm", help="compile every kernel the selected cases launch")
    _filters(p)
    p = sub.add_parser("summary", help="the short table of a run's CSV")
    p.add_argument("csv", nargs="+")
    p.add_argument("--tma", help="the TMA check's output file")
    p.add_argument("--env", help="env.txt: its device and measured-ceiling lines")
    p.add_argument("--overhead", help="fastconv bench --overhead's output file")
    p.add_argument("--out", help="also write the summary to this file")
    args = parser.parse_args(argv)
    if args.command == "env":
        print("\n".join(env_report(measure=not args.no_measure)))
        return 0
    if args.command == "csv-name":
        print(csv_name(args.dry_run))
        return 0
    if args.command == "warm":
        return warm(args)
    return summary(args)


if __name__ == "__main__":
    sys.exit(main())
