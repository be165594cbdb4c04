"""``fastconv bench``: time the benchmark cases on a GPU, print a table, write a CSV and a plot.

    fastconv bench                                   # every case, dtype, layout, direction
    fastconv bench --models resnet50 depthwise --dtypes float16 --directions forward
    fastconv bench --dry-run --match layer1.0        # no GPU needed: tiny shapes, interpreter

Without a CUDA GPU nothing can be timed; the command then shows the static compile report of the
benchmark cases (``fastconv compile-report --cases``) instead, unless ``--dry-run`` asks for the
timing path on tiny shapes under Triton's interpreter (how the harness is tested).

The CSV goes to ``benchmarks/results/<gpu>-<date>.csv`` (relative to the working directory)
unless ``--csv`` says where (a ``--dry-run``'s to a new temporary directory); the speedup plot
next to it with ``.png``, and on a GPU a roofline chart with ``-roofline.png``.
"""
import argparse
import csv
import itertools
import math
import re
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

from fastconv.bench.cases import BATCHES, CONV_MODELS, DIRECTIONS, LAYOUTS, all_cases, select

GROUPS = (*CONV_MODELS, "depthwise", "conv1d", "conv_transpose2d", "roi")
OPS = ("conv2d", "conv1d", "conv_transpose2d", "roi_align", "roi_pool")
DTYPE_NAMES = ("float16", "bfloat16", "float32")
RESULTS_DIR = Path("benchmarks") / "results"
NO_GPU_MESSAGE = ("No CUDA GPU: nothing can be timed; showing the static compile report for the "
                  "benchmark cases instead")
# dry mode's end-to-end batch: BatchNorm in training mode needs more than one value per
# channel, and the small input leaves a 1x1 map before the classifier
DRY_E2E_BATCH = 2


def positive_int(text: str) -> int:
    """An argparse type: a positive integer (``fastconv``'s --batch, --jobs, --size and
    --batches)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"takes a positive integer, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``fastconv bench`` (shared by ``python -m fastconv.bench.run``)."""
    f = parser.add_argument_group("which cases")
    f.add_argument("--models", nargs="+", choices=GROUPS, metavar="GROUP",
                   help=f"model groups to run (default: all): {', '.join(GROUPS)}")
    f.add_argument("--ops", nargs="+", choices=OPS, metavar="OP",
                   help=f"ops to run (default: all): {', '.join(OPS)}")
    f.add_argument("--dtypes", nargs="+", choices=DTYPE_NAMES, metavar="DTYPE",
                   help="float16 bfloat16 float32 (default: all three)")
    f.add_argument("--layouts", nargs="+", choices=LAYOUTS, metavar="LAYOUT",
                   help="nchw channels_last (default: both)")
    f.add_argument("--directions", nargs="+", choices=DIRECTIONS, metavar="DIRECTION",
                   help="forward backward both (default: all three)")
    f.add_argument("--batches", nargs="+", type=positive_int, metavar="N",
                   help=f"batch sizes (default: {' '.join(map(str, BATCHES))})")
    f.add_argument("--match", help="only cases whose name contains this text, e.g. layer3")
    f.add_argument("--e2e", action=argparse.BooleanOptionalAction, default=None,
                   help="also time whole models: inference (with forward) and a training step "
                        "(with backward or both). Default: on for a full GPU run, off when "
                        "--models, --ops or --match narrow it, and off with --dry-run")
    f.add_argument("--e2e-models", nargs="+", metavar="MODEL", default=None,
                   help="the models --e2e times (default: resnet50 mobilenet_v2)")
    o = parser.add_argument_group("output")
    o.add_argument("--csv", help="results CSV (default: benchmarks/results/<gpu>-<date>.csv)")
    o.add_argument("--plot", help="speedup plot PNG (default: the CSV's path with .png)")
    o.add_argument("--no-plot", action="store_true", help="draw no plot")
    o.add_argument("--wide", action="store_true",
                   help="print every column (baseline, GB/s, bound, rel err too); the default "
                        "table fits 120 columns")
    m = parser.add_argument_group("mode")
    m.add_argument("--dry-run", action="store_true",
                   help="run the timing path on tiny shapes, one repetition (without a GPU: "
                        "under Triton's interpreter); checks the harness, measures nothing")
    m.add_argument("--overhead", action="store_true",
                   help="host time per eager call (conv2d, conv_transpose2d, roi_align) "
                        "against torch's own op, on tiny shapes; without a GPU, with Triton's "
                        "launch a no-op and plans made for sm_90")
    m.add_argument("--arch", default="sm_90", choices=["sm_90", "sm_80"],
                   help="without a GPU: the architecture of the static report (default sm_90)")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def default_csv_path(device: str, date: str, dry: bool, directory=None) -> Path:
    """``benchmarks/results/<device slug>-<date>.csv`` (or in ``directory``), with ``-2``,
    ``-3``... appended when a run of the same day is there already (a filtered run must not
    overwrite a full one)."""
    directory = Path(directory) if directory is not None else RESULTS_DIR
    stem = f"{'dry-' if dry else ''}{_slug(device)}-{date}"
    path = directory / f"{stem}.csv"
    n = 2
    while path.exists():
        path = directory / f"{stem}-{n}.csv"
        n += 1
    return path


def write_csv(rows, path) -> Path:
    """The rows (:class:`~fastconv.bench.harness.BenchRow`) under
    :data:`~fastconv.bench.harness.COLUMNS`."""
    from fastconv.bench.harness import COLUMNS

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow(row.as_dict())
    return path


# ---------------------------------------------------------------------------- the table
# the table abbreviates; the CSV spells out
_SHORT = {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32", "nchw": "NCHW",
          "channels_last": "NHWC"}
TABLE_COLUMNS = ("case", "dir", "dtype", "layout", "fastconv ms", "baseline", "baseline ms",
                 "speedup", "TFLOP/s", "GB/s", "of floor", "bound", "rel err", "result")
# the default table: what fits 120 columns (the rest is in the CSV, and in the table with --wide)
NARROW_COLUMNS = ("case", "dir", "type", "ms", "base ms", "speedup", "TFLOP/s", "of floor",
                  "result")
# the console width when stdout is not a terminal
NARROW_WIDTH, WIDE_WIDTH = 120, 200


def _num(value: float, fmt: str) -> str:
    """``value`` formatted, "-" for NaN; a trailing "%" in ``fmt`` is printed as is."""
    if value is None or value != value:
        return "-"
    suffix = "%" if fmt.endswith("%") else ""
    return format(value, fmt.rstrip("%")) + suffix


def geomean(values: List[float]) -> float:
    values = [v for v in values if v > 0 and math.isfinite(v)]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else math.nan


def results_table(rows, dry: bool = False, wide: bool = False):
    """A rich Table of result rows, one section per model group: the columns of
    :data:`NARROW_COLUMNS` (120 characters wide), or with ``wide`` all of
    :data:`TABLE_COLUMNS`."""
    from rich.markup import escape
    from rich.table import Table

    caption = "speedup: the faster baseline's ms / fastconv's ms; of floor: roofline floor / ms"
    if dry:
        caption = ("DRY RUN: tiny shapes, one host-timed call (without a GPU under Triton's "
                   "interpreter); the times measure nothing. " + caption)
    if not wide:
        caption = caption.replace("fastconv's ms", "ms") + \
            "; type: dtype and layout; --wide or the CSV: baseline, GB/s, bound, rel err"
    columns = TABLE_COLUMNS if wide else NARROW_COLUMNS
    table = Table(title="fastconv vs baseline", caption=caption)
    for col in columns:
        left = col in ("case", "dir", "dtype", "layout", "type", "baseline", "bound", "result")
        # the case name and an error are what a reader looks for: fold them rather than cut
        table.add_column(col, justify="left" if left else "right",
                         overflow="fold" if col in ("case", "result") else "ellipsis",
                         min_width=(24 if wide else 22) if col == "case" else None)
    for i, group_rows in enumerate(by_group(rows).values()):
        if i:
            table.add_section()
        for r in group_rows:
            speed = _num(r.speedup, ".2f")
            if r.speedup == r.speedup:
                speed = f"[green]{speed}" if r.speedup >= 1 else f"[red]{speed}"
            result = {"ok": "[green]ok", "MISMATCH": "[red]MISMATCH"}.get(
                r.result, f"[red]{r.result}: {escape(r.error)}")
            cells = {"case": r.name, "dir": r.direction,
                     "dtype": _SHORT.get(r.dtype, r.dtype),
                     "layout": _SHORT.get(r.layout, r.layout),
                     "fastconv ms": _num(r.fastconv_ms, ".4g"), "baseline": r.baseline or "-",
                     "baseline ms": _num(r.baseline_ms, ".4g"), "speedup": speed,
                     "TFLOP/s": _num(r.tflops, ".3g"), "GB/s": _num(r.gbps, ".3g"),
                     "of floor": _num(r.floor_fraction * 100, ".1f%"), "bound": r.bound or "-",
                     "rel err": _num(r.rel_err, ".1e"), "result": result,
                     "type": f"{_SHORT.get(r.dtype, r.dtype)} {_SHORT.get(r.layout, r.layout)}",
                     "ms": _num(r.fastconv_ms, ".4g"), "base ms": _num(r.baseline_ms, ".4g")}
            if not wide and r.tflops == r.tflops and r.tflops >= 100:
                cells["TFLOP/s"] = _num(r.tflops, ".0f")
            table.add_row(*(cells[col] for col in columns))
    return table


def by_group(rows) -> Dict[str, list]:
    """Result rows per model group, in first-seen order."""
    groups: Dict[str, list] = {}
    for r in rows:
        groups.setdefault(r.group, []).append(r)
    return groups


# ---------------------------------------------------------------------------- the command
def _static_report(args) -> int:
    print(NO_GPU_MESSAGE, flush=True)
    from fastconv.bench import compile_report
    return compile_report.main(static_report_argv(args))


def static_report_argv(args) -> List[str]:
    """The static report's arguments: the architecture and the case filters that it shares
    with ``fastconv bench`` (directions have no counterpart: it reports every pass)."""
    argv = ["--arch", args.arch, "--cases"]
    for name in ("models", "ops", "batches", "dtypes", "layouts"):
        values = getattr(args, name)
        if values:
            argv += [f"--{name}", *map(str, values)]
    if args.match:
        argv += ["--match", args.match]
    return argv


def _variants(args, dry: bool):
    """The (case, direction, dtype, layout) list the filters select; dry mode shrinks the
    cases first and drops duplicates (batch 1 and 32 shrink to the same case)."""
    import torch

    from fastconv.bench import harness

    cases = select(all_cases(batches=tuple(args.batches or BATCHES)), models=args.models,
                   ops=args.ops, match=args.match)
    if dry:
        cases = list(dict.fromkeys(harness.shrink(c) for c in cases))
    dtypes = [getattr(torch, d) for d in (args.dtypes or DTYPE_NAMES)]
    return list(itertools.product(cases, args.directions or DIRECTIONS, dtypes,
                                  args.layouts or LAYOUTS))


def _e2e_variants(args, dry: bool):
    import torch

    from fastconv import models
    from fastconv.bench import harness

    narrowed = bool(args.models or args.ops or args.match)
    if not (args.e2e if args.e2e is not None else not (dry or narrowed)):
        return []
    names = args.e2e_models or list(harness.E2E_MODELS)
    unknown = [n for n in names if n not in models.list_models()]
    if unknown:
        raise ValueError(f"--e2e-models: unknown model(s) {unknown}; fastconv.models."
                         f"list_models() gives the known names")
    directions = args.directions or DIRECTIONS
    modes = [m for m, wanted in (("inference", "forward" in directions),
                                 ("train_step", {"backward", "both"} & set(directions)))
             if wanted]
    batches = [DRY_E2E_BATCH] if dry else list(args.batches or BATCHES)
    dtypes = [getattr(torch, d) for d in (args.dtypes or DTYPE_NAMES)]
    cases = [harness.E2ECase(n, b, models.small_input_size(n) if dry else
                             models.default_input_size(n)) for n in names for b in batches]
    return list(itertools.product(cases, modes, dtypes, args.layouts or LAYOUTS))


def run(args) -> int:
    """Run ``fastconv bench`` with parsed arguments (see :func:`add_arguments`); the exit
    code: 0 when every variant ran and agreed with its baseline, 1 otherwise, 2 when nothing
    could run."""
    import torch
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from fastconv.bench import harness
    from fastconv.ops import INTERPRETING

    # piped into a file: 120 columns (what the default table fits), wider for --wide
    wide = getattr(args, "wide", False)
    console = Console(width=None if sys.stdout.isatty() else
                      (WIDE_WIDTH if wide else NARROW_WIDTH))
    gpu = torch.cuda.is_available() and not INTERPRETING
    if not args.dry_run:
        if not torch.cuda.is_available():
            return _static_report(args)
        if INTERPRETING:
            console.print("[red]TRITON_INTERPRET=1 is set, so fastconv's kernels would run in "
                          "Triton's interpreter: unset it to time on the GPU, or pass --dry-run.")
            return 2
    elif not gpu and not INTERPRETING:
        console.print("[red]--dry-run without a GPU runs the kernels under Triton's "
                      "interpreter: set TRITON_INTERPRET=1 (`fastconv bench` does it itself).")
        return 2
    dry = args.dry_run
    device = torch.device("cuda" if gpu else "cpu")
    try:
        variants = _variants(args, dry) + _e2e_variants(args, dry)
    except ValueError as exc:
        console.print(f"[red]{exc}")
        return 2
    if not variants:
        console.print("[red]no benchmark case matches the filters")
        return 2
    env = harness.environment(device, dry)

    rows = []
    with Progress(TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("benchmarking", total=len(variants))
        for case, direction, dtype, layout in variants:
            bar.update(task, description=f"{case.name} {direction} "
                                         f"{harness.dtype_name(dtype)} {layout}")
            rows.append(harness.measure(case, dtype, layout, direction, device, env, dry=dry))
            bar.advance(task)
            if device.type == "cuda":
                # each variant allocates its own rotating buffers; give them back before the
                # next one, so that the largest layers find room
                torch.cuda.empty_cache()

    console.print(results_table(rows, dry, wide=wide))
    for group, group_rows in by_group(rows).items():
        speedups = [r.speedup for r in group_rows if r.result == "ok"]
        console.print(f"{group}: geometric-mean speedup {_num(geomean(speedups), '.2f')} "
                      f"over {len(speedups)} variant(s)", highlight=False)
    # GPU time (CUDA graph replay) beside the eager time (fastconv.bench.gpu_time)
    from fastconv.bench.gpu_time import print_gpu_times
    print_gpu_times(console, rows, dry)
    console.print(f"device: {env.device}; torch {env.torch}, triton {env.triton}, "
                  f"CUDA {env.cuda or '-'}; roofline peaks of {env.peak.name}", highlight=False)

    if args.csv:
        csv_path = Path(args.csv)
    else:
        # a dry run measures nothing: its files go to a temporary directory, not into the
        # results of the directory it was started from
        directory = tempfile.mkdtemp(prefix="fastconv-bench-dry-") if dry else None
        csv_path = default_csv_path(env.device, env.date, dry, directory)
    csv_path = write_csv(rows, csv_path)
    console.print(f"results written to {csv_path}", highlight=False)
    if not args.no_plot:
        try:
            from fastconv.bench.plot import plot_speedups
            png = plot_speedups(csv_path, args.plot)
            console.print(f"plot written to {png}", highlight=False)
        except ImportError:
            console.print("[yellow]matplotlib is not installed (pip install 'fastconv[plot]'): "
                          "no plot drawn")
        except ValueError as exc:  # nothing to plot, e.g. every variant failed
            console.print(f"[yellow]no plot drawn: {exc}")
        if gpu:
            try:
                from fastconv.bench.plot import plot_roofline
                png = plot_roofline(rows, env.peak, csv_path.with_name(
                    csv_path.stem + "-roofline.png"))
                console.print(f"roofline chart written to {png}", highlight=False)
            except ImportError:
                pass  # said above
            except ValueError as exc:
                console.print(f"[yellow]no roofline chart drawn: {exc}")
    failed = [r for r in rows if r.result != "ok"]
    if failed:
        console.print(f"[red]{len(failed)} variant(s) failed or disagreed with the baseline")
        return 1
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m fastconv.bench.run``: as ``fastconv bench``, except that --dry-run without
    a GPU needs TRITON_INTERPRET=1 set by the caller."""
    parser = argparse.ArgumentParser(prog="python -m fastconv.bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
