"""The ``fastconv`` command: ``fastconv verify``, ``fastconv summary``, ``fastconv bench``,
``fastconv compile-report``."""
import argparse
import json
import os
import sys

_AUTO_FLAG = "FASTCONV_AUTO_INTERPRET"


def _ensure_backend() -> None:
    """Without a CUDA device, re-run this command under Triton's interpreter, and say so.

    @triton.jit picks interpreter or GPU code when fastconv is imported, which has already
    happened by the time this runs, so the switch needs a fresh process.
    """
    import torch
    from fastconv.ops import INTERPRETING
    if INTERPRETING or torch.cuda.is_available():
        return
    env = dict(os.environ, TRITON_INTERPRET="1", **{_AUTO_FLAG: "1"})
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, "-m", "fastconv", *sys.argv[1:]], env)


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors are one line (the option and what it accepts) and
    exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _usage_error(command: str, option: str, message: str) -> int:
    """A bad value found after parsing, reported as argparse reports one; returns 2."""
    sys.stdout.flush()
    print(f"fastconv {command}: error: argument {option}: {message} "
          f"(see fastconv {command} --help)", file=sys.stderr, flush=True)
    return 2


def _dtype(name: str):
    import torch
    dtypes = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
              "float64": torch.float64}
    if name not in dtypes:
        raise argparse.ArgumentTypeError(f"takes one of {', '.join(dtypes)}, got {name!r}")
    return dtypes[name]


def _shape_text(shape) -> str:
    return "x".join(map(str, shape))


def _input_problem(name: str, shape) -> "str | None":
    """Why ``name`` cannot take one input of ``shape`` (C, H, W), or None when it can: the model
    runs once on the meta device (shapes only, instants)."""
    import torch

    from fastconv import models
    channels = models.default_input_size(name)[0]
    smallest = models.small_input_size(name)
    try:
        with torch.device("meta"):
            model = models.get_model(name).eval()
        with torch.no_grad():
            model(*models.example_inputs(name, 1, shape, device="meta"))
    except Exception as e:  # any failure here is the input's: the model runs at its own sizes
        if shape[0] != channels:
            return (f"{name} takes {channels} input channel(s), e.g. "
                    f"{_shape_text((channels, *shape[1:]))}; got {_shape_text(shape)}")
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if len(reason) > 100:
            reason = reason[:99] + "…"
        return (f"{name} cannot take {_shape_text(shape)} (at least {_shape_text(smallest)} "
                f"works): {reason}")
    return None


def _estimate_left(done, left, elapsed: float, jobs: int) -> float:
    """Seconds left: the time so far, scaled by the share of the work still to do (each
    representative model's measured cost; the others count as the mean of those done). With
    ``jobs`` > 1 the models running beside the one that just finished (the longest of those
    left: the order they were started in) count as half done."""
    from fastconv.verify import REPRESENTATIVE
    done_cost = [REPRESENTATIVE.get(n) or 0 for n in done]
    mean = (sum(done_cost) / len(done_cost)) if any(done_cost) else 1.0
    weight = lambda n: REPRESENTATIVE.get(n) or mean  # noqa: E731
    running = sorted(left, key=lambda n: -REPRESENTATIVE.get(n, 0))[:max(jobs - 1, 0)]
    done_work = sum(weight(n) for n in done) + 0.5 * sum(weight(n) for n in running)
    left_work = sum(weight(n) for n in left) - 0.5 * sum(weight(n) for n in running)
    return elapsed * left_work / done_work if done_work else float("nan")


def _duration(seconds: float) -> str:
    if seconds != seconds:
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def cmd_verify(args) -> int:
    import time

    import torch
    from rich.console import Console
    from rich.table import Table

    from fastconv import verify as V
    from fastconv.models import list_models, small_input_size, default_input_size

    console = Console(width=None if sys.stdout.isatty() else 140)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if os.environ.get(_AUTO_FLAG):
        # a diagnostic: on stderr, so that --json output stays parseable
        Console(stderr=True).print(
            "[yellow]No CUDA device: running fastconv's kernels on the CPU through Triton's "
            "interpreter (TRITON_INTERPRET=1). This is slow; sizes are small.")
    known = list_models()
    if args.models and args.all:
        return _usage_error("verify", "--all", "not allowed with --models")
    models = args.models or (known if args.all else V.default_models(device))
    unknown = [m for m in models if m not in known]
    if unknown:
        console.print(f"[red]unknown model(s) {unknown}; known: {', '.join(known)}")
        return 2
    if args.size is not None:
        for name in models:
            usual = default_input_size(name) if device.type == "cuda" else small_input_size(name)
            problem = _input_problem(name, (usual[0], args.size, args.size))
            if problem:
                return _usage_error("verify", "--size", problem)
    # float64 under the interpreter: an exact check of the kernels' logic (in float32 a
    # pre-activation within rounding of zero can take the other side of a ReLU in one
    # implementation and not the other, and move a small gradient by percents)
    dtype = args.dtype or (torch.float32 if device.type == "cuda" else torch.float64)
    batch = args.batch or (2 if device.type == "cuda" else 1)
    jobs = args.jobs or (1 if device.type == "cuda" else min(os.cpu_count() or 1, 8))
    jobs = 1 if device.type == "cuda" else min(jobs, len(models))

    # one line per model as it finishes, flushed, also into a pipe or a CI log; on stderr with
    # --json so that stdout stays parseable
    out = sys.stderr if args.json else sys.stdout
    which = ("the models asked for" if args.models else "the whole zoo" if
             (args.all or device.type == "cuda") else
             f"a representative set; --all for the whole zoo of {len(known)}")
    print(f"verifying {len(models)} model{'s' * (len(models) != 1)} ({which}), {jobs} at a time on "
          f"{V.backend_name(device)}: {' '.join(models)}", file=out, flush=True)
    start = time.perf_counter()
    finished = []

    def report(r):
        finished.append(r.model)
        elapsed = time.perf_counter() - start
        left = [m for m in models if m not in finished]
        eta = (f", about {_duration(_estimate_left(finished, left, elapsed, jobs))} left"
               if left else "")
        print(f"[{len(finished):>{len(str(len(models)))}}/{len(models)}] {r.model:<22} "
              f"{'ok' if r.passed else 'MISMATCH':<8} output {r.output_err:.1e}  "
              f"d input {r.input_grad_err:.1e}  d params {r.param_grad_err:.1e}  "
              f"{r.seconds:4.0f}s  (elapsed {_duration(elapsed)}{eta})", file=out, flush=True)

    results = V.verify(models, batch, args.size, dtype, device,
                       jobs=jobs, on_result=report)
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
    else:
        table = Table(title="fastconv vs PyTorch on identical weights (relative errors)",
                      caption="d params: the worst parameter gradient of the model")
        for col in ("model", "params", "input", "dtype", "output", "d input", "d params",
                    "tolerance", "backend", "time", "result"):
            table.add_column(col, justify="right" if col in ("params", "time") else "left")
        for r in results:
            table.add_row(r.model, f"{r.params / 1e6:.2f}M", r.input, r.dtype,
                          f"{r.output_err:.1e}", f"{r.input_grad_err:.1e}",
                          f"{r.param_grad_err:.1e}", f"{r.tolerance:.0e}", r.backend,
                          f"{r.seconds:.0f}s", "[green]ok" if r.passed else "[red]MISMATCH")
        console.print(table)
    failed = [r.model for r in results if not r.passed]
    print(f"{len(results) - len(failed)} of {len(results)} models agree with PyTorch "
          f"({_duration(time.perf_counter() - start)})", file=out, flush=True)
    if failed:
        console.print(f"[red]mismatch: {', '.join(failed)}")
        return 1
    return 0


def _input_size(text: str):
    try:
        dims = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        dims = ()
    if len(dims) != 3 or any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(
            f"takes one input without the batch axis as CxHxW, three positive integers such "
            f"as 3x224x224; got {text!r}")
    return dims


def _plot_problem(path: str) -> "str | None":
    """Why a PNG cannot be written to ``path``, or None: checked before anything is printed."""
    from pathlib import Path
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return "needs matplotlib (pip install 'fastconv[plot]')"
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    if target.suffix.lower() != ".png":
        return f"takes a file name ending in .png, got {path!r}"
    if not parent.is_dir():
        return f"takes a PNG file in an existing directory; {str(parent)!r} does not exist"
    if not os.access(parent, os.W_OK) or target.is_dir():
        return f"cannot write {path!r}"
    return None


def cmd_summary(args) -> int:
    import torch
    from rich.console import Console

    from fastconv import models
    from fastconv import summary as layer_summary

    console = Console(width=None if sys.stdout.isatty() else 140)
    if args.model not in models.list_models():
        console.print(f"[red]unknown model {args.model!r}; known: "
                      f"{', '.join(models.list_models())}")
        return 2
    size = args.input or models.default_input_size(args.model)
    if args.input:
        problem = _input_problem(args.model, size)
        if problem:
            return _usage_error("summary", "--input", problem)
    if args.plot:
        problem = _plot_problem(args.plot)
        if problem:
            return _usage_error("summary", "--plot", problem)
    with torch.device("meta"):  # shapes only: no weights to initialise
        model = models.get_model(args.model)
    summary = layer_summary.summarize(model, size, batch=args.batch, name=args.model,
                                      inputs=models.example_inputs(args.model, args.batch,
                                                                   size, device="meta"))
    layer_summary.print_summary(summary, console)
    if args.plot:
        layer_summary.plot_summary(summary, args.plot)
        console.print(f"plot written to {args.plot}")
    return 0


def cmd_compile_report(args) -> int:
    argv = ["--arch", args.arch, "--jobs", str(args.jobs)] + (["--wide"] if args.wide else [])
    if args.csv:
        argv += ["--csv", args.csv]
    if not args.cases and (args.models or args.match):
        print("--models and --match select benchmark cases: add --cases", file=sys.stderr)
        return 2
    if args.cases:
        argv += ["--cases"] + (["--models", *args.models] if args.models else []) + \
            (["--match", args.match] if args.match else [])
    from fastconv.bench import compile_report
    return compile_report.main(argv)


def cmd_bench(args) -> int:
    from fastconv.bench import run
    if args.overhead:
        # host time per call; without a GPU the call path runs under the interpreter with
        # Triton's launch a no-op (fastconv.bench.overhead)
        _ensure_backend()
        from fastconv.bench import overhead
        return overhead.run()
    if args.dry_run:
        # the timing path on tiny shapes: without a GPU the kernels run in the interpreter,
        # which needs a fresh process. Without --dry-run and a GPU there is nothing to time
        # and run() shows the static report instead, so no switch then.
        _ensure_backend()
        if os.environ.get(_AUTO_FLAG):
            from rich.console import Console
            Console(stderr=True).print(
                "[yellow]No CUDA device: --dry-run runs fastconv's kernels on the CPU through "
                "Triton's interpreter (TRITON_INTERPRET=1), on tiny shapes; the times measure "
                "nothing.")
    return run.run(args)


class _Version(argparse.Action):
    """``fastconv --version``: fastconv's version and those of what it runs on (imported only
    when asked)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS,
                 help="print fastconv's version and those of torch, torchvision and triton"):
        super().__init__(option_strings, dest, nargs=0, default=default, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from importlib import metadata

        def version(name):
            try:
                return metadata.version(name)
            except metadata.PackageNotFoundError:
                return "not installed"
        from fastconv import __version__
        print(f"fastconv {__version__} (torch {version('torch')}, torchvision "
              f"{version('torchvision')}, triton {version('triton')})")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    from fastconv.bench.run import positive_int
    parser = _Parser(prog="fastconv", description=__doc__)
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("verify", help="compare fastconv with PyTorch on real models")
    p.add_argument("--models", nargs="+",
                   help="models to verify (default: the whole zoo on a GPU; under the "
                        "interpreter a representative set of small models, one per family)")
    p.add_argument("--all", action="store_true",
                   help="verify every model of the zoo (under the interpreter, about 18 "
                        "minutes on two cores)")
    p.add_argument("--batch", type=positive_int, default=None,
                   help="batch size (default: 2 on a GPU, 1 on the CPU)")
    p.add_argument("--jobs", type=positive_int, default=None,
                   help="on the CPU, models verified at a time in worker processes (default: "
                        "one per core, at most 8)")
    p.add_argument("--size", type=positive_int, default=None,
                   help="input height and width (default: each model's usual size on a GPU, "
                        "its smallest on the CPU)")
    p.add_argument("--dtype", type=_dtype, default=None,
                   help="float32 | float16 | bfloat16 | float64 (default: float32 on a GPU, "
                        "float64 on the CPU)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("summary",
                       help="per-layer shapes, parameters, MACs and memory of a model")
    p.add_argument("model", help="a name from fastconv.models.list_models()")
    p.add_argument("--input", type=_input_size, default=None,
                   help="one input without the batch axis, e.g. 3x224x224 (default: the "
                        "model's usual size)")
    p.add_argument("--batch", type=positive_int, default=1, help="batch size (default: 1)")
    p.add_argument("--plot", help="also draw bar charts per layer into this PNG file")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("bench",
                       help="time every benchmark case against PyTorch on a GPU (table, CSV, "
                            "plot); without a GPU, the static report of the cases")
    from fastconv.bench.run import add_arguments as add_bench_arguments
    add_bench_arguments(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("compile-report",
                       help="compile every kernel config for a GPU architecture and report "
                            "errors, spills, tensor cores and load widths (no GPU needed)")
    p.add_argument("--arch", default="sm_90", choices=["sm_90", "sm_80"])
    p.add_argument("--csv", help="also write the table to this CSV file")
    p.add_argument("--jobs", type=int, default=2, help="compiler processes (default: 2)")
    p.add_argument("--wide", action="store_true",
                   help="flags and load widths in the table (the default fits 120 columns)")
    p.add_argument("--cases", action="store_true",
                   help="per benchmark case, dtype, layout and pass: the launches the plan "
                        "picks, compiled (python -m fastconv.bench.compile_report has more "
                        "filters)")
    p.add_argument("--models", nargs="+", help="with --cases: model groups to keep")
    p.add_argument("--match", help="with --cases: keep cases whose name contains this")
    p.set_defaults(func=cmd_compile_report)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.func is cmd_verify:
        _ensure_backend()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
