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


def _dtype(name: str):
    import torch
    dtypes = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
              "float64": torch.float64}
    if name not in dtypes:
        raise argparse.ArgumentTypeError(f"--dtype must be one of {', '.join(dtypes)}")
    return dtypes[name]


def cmd_verify(args) -> int:
    import torch
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from fastconv import verify as V
    from fastconv.models import list_models

    console = Console(width=None if sys.stdout.isatty() else 140)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if os.environ.get(_AUTO_FLAG):
        # a diagnostic: on stderr, so that --json output stays parseable
        Console(stderr=True).print(
            "[yellow]No CUDA device: running fastconv's kernels on the CPU through Triton's "
            "interpreter (TRITON_INTERPRET=1). This is slow; sizes are small.")
    known = list_models()
    models = args.models or known
    unknown = [m for m in models if m not in known]
    if unknown:
        console.print(f"[red]unknown model(s) {unknown}; known: {', '.join(known)}")
        return 2
    steps = len(models) * 2
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console, transient=True, disable=args.json) as bar:
        task = bar.add_task("verifying", total=steps)

        def step(what):
            bar.update(task, description=what)
            bar.advance(task)
        # float64 under the interpreter: an exact check of the kernels' logic (in float32 a
        # pre-activation within rounding of zero can take the other side of a ReLU in one
        # implementation and not the other, and move a small gradient by percents)
        dtype = args.dtype or (torch.float32 if device.type == "cuda" else torch.float64)
        batch = args.batch or (2 if device.type == "cuda" else 1)
        jobs = args.jobs or (1 if device.type == "cuda" else min(os.cpu_count() or 1, 8))
        results = V.verify(models, batch, args.size, dtype, device, step=step,
                           check_overflow=args.check_overflow, jobs=jobs)
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
    if failed:
        console.print(f"[red]mismatch: {', '.join(failed)}")
        return 1
    return 0


def _input_size(text: str):
    try:
        dims = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        dims = ()
    if not dims or any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(f"--input must look like 3x224x224, got {text!r}")
    return dims


def cmd_summary(args) -> int:
    import torch
    from rich.console import Console

    from fastconv import analysis, models

    console = Console(width=None if sys.stdout.isatty() else 140)
    if args.model not in models.list_models():
        console.print(f"[red]unknown model {args.model!r}; known: "
                      f"{', '.join(models.list_models())}")
        return 2
    size = args.input or models.default_input_size(args.model)
    with torch.device("meta"):  # shapes only: no weights to initialise
        model = models.get_model(args.model)
    summary = analysis.summarize(model, size, batch=args.batch, name=args.model,
                                 inputs=models.example_inputs(args.model, args.batch, size,
                                                              device="meta"))
    analysis.print_summary(summary, console)
    if args.plot:
        analysis.plot_summary(summary, args.plot)
        console.print(f"plot written to {args.plot}")
    return 0


def cmd_compile_report(args) -> int:
    argv = ["--arch", args.arch, "--jobs", str(args.jobs)]
    if args.csv:
        argv += ["--csv", args.csv]
    if not args.cases:
        if args.models or args.match or args.specialise:
            print("--models, --match and --specialise select benchmark cases: add --cases",
                  file=sys.stderr)
            return 2
        from fastconv.bench import compile_report
        return compile_report.main(argv)
    from fastconv.bench import case_report
    if args.models:
        argv += ["--models", *args.models]
    if args.match:
        argv += ["--match", args.match]
    argv += ["--specialise", args.specialise or "generic"]
    return case_report.main(argv)


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastconv", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("verify", help="compare fastconv with PyTorch on real models")
    p.add_argument("--models", nargs="+", help="models to verify (default: all)")
    p.add_argument("--batch", type=int, default=None,
                   help="batch size (default: 2 on a GPU, 1 on the CPU)")
    p.add_argument("--jobs", type=int, default=None,
                   help="on the CPU, models verified at a time in worker processes (default: "
                        "one per core, at most 8)")
    p.add_argument("--size", type=int, default=None,
                   help="input height and width (default: each model's usual size on a GPU, "
                        "its smallest on the CPU)")
    p.add_argument("--dtype", type=_dtype, default=None,
                   help="float32 | float16 | bfloat16 | float64 (default: float32 on a GPU, "
                        "float64 on the CPU)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--check-overflow", action="store_true",
                   help="under the interpreter, keep its integer-overflow checks on (about "
                        "twice as slow)")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("summary",
                       help="per-layer shapes, parameters, MACs and memory of a model")
    p.add_argument("model", help="a name from fastconv.models.list_models()")
    p.add_argument("--input", type=_input_size, default=None,
                   help="one input without the batch axis, e.g. 3x224x224 (default: the "
                        "model's usual size)")
    p.add_argument("--batch", type=int, default=1, help="batch size (default: 1)")
    p.add_argument("--plot", help="also draw bar charts per layer into this PNG file")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("bench",
                       help="time every benchmark case against PyTorch on a GPU (table, CSV, "
                            "plot); without a GPU, the static report of the cases")
    from fastconv.bench.run import add_arguments as add_bench_arguments
    add_bench_arguments(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("compile-report",
                       help="compile every kernel config for a GPU architecture (no GPU needed)")
    p.add_argument("--arch", default="sm_90", choices=["sm_90", "sm_80"])
    p.add_argument("--csv", help="also write the table to this CSV file")
    p.add_argument("--jobs", type=int, default=2, help="compiler processes (default: 2)")
    p.add_argument("--cases", action="store_true",
                   help="per benchmark case, dtype, layout and pass: the launch the dispatcher "
                        "picks, compiled, with programs, waves and the roofline floor "
                        "(python -m fastconv.bench.case_report has more filters)")
    p.add_argument("--models", nargs="+", help="with --cases: model groups to keep")
    p.add_argument("--match", help="with --cases: keep cases whose name contains this")
    p.add_argument("--specialise", choices=["generic", "launch"],
                   help="with --cases: compile each launch's generic variant (default) or the "
                        "launch as Triton specialises it (shows load widths; slower)")
    p.set_defaults(func=cmd_compile_report)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.func is cmd_verify:
        _ensure_backend()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
