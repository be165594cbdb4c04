"""Static per-case report: what each benchmark case would launch on a GPU, compiled for it.

For every benchmark case (:mod:`fastconv.bench.cases`) x dtype x layout x pass, this asks the
dispatcher itself which kernel, tile config and grid it would launch: the ops' launchers describe
their launch (``fastconv.conv.launch.*_launch``, ``fastconv.roi.launch.*_launch``)
from meta-device tensors of the case's shapes and strides, without running anything. A row per
launch gives the kernel, tile, registers, spills, shared memory, occupancy and tensor-core
instructions, the programs the grid starts and the waves they make on the GPU's SMs, and the
case's FLOPs, minimum bytes and roofline floor.

What is compiled (``--specialise``):

* ``generic`` (default): the launch's (kernel, dtype, tile config, flags) variant of the full
  compile report, unspecialised. The benchmark cases need about 80 of them per architecture,
  so this takes seconds with Triton's cache warm. A launch whose variant the full report does
  not build is an error: the plan chose a config nobody checked.
* ``launch``: each launch as Triton's JIT would compile it on a GPU, specialised on its
  arguments (:func:`fastconv.bench.compile_report.variant_of_launch`): unit strides become
  constants, sizes, strides and pointers divisible by 16 are marked so. Only this shows whether
  the loads are vectorised (the ``global_loads`` column; blank in generic mode, where nothing
  proves the alignment), but every shape's divisibility makes a variant of its own: about 1600
  per architecture, some ten minutes on two cores with a cold cache.

    python -m fastconv.bench.case_report --arch sm_90 --csv cases_sm90.csv
    python -m fastconv.bench.case_report --arch sm_90 --specialise launch --models resnet50

exits non-zero when a launch fails to compile, spills, or is a 16-bit GEMM without tensor-core
instructions. ``fastconv bench`` runs it when there is no GPU; ``fastconv compile-report
--cases`` is the same report.

What it shows is the plan's heuristic choice (what runs with FASTCONV_AUTOTUNE=0, and the first
config the autotuner tries); on a GPU the autotuner may pick another entry of the same table,
each of which the full compile report (:mod:`fastconv.bench.compile_report`) builds.
How the passes map onto kernels: a convolution's fprop / dgrad / wgrad are its forward, input
gradient and weight gradient; for conv_transpose2d those run the dgrad, fprop and wgrad kernels
(see ``fastconv.conv.transpose_op``); conv1d runs the conv2d kernels on a height-1 view of
its contiguous input, so its two layouts launch alike. RoI ops have a forward, the default
(atomic) backward and the deterministic one (``bwd_det``). The split-K and the waves assume the
GPU's SM count; without a device the plan sizes the split for 132 SMs (H100).

A split-K fprop or dgrad is two launches: its row describes the split GEMM (``programs`` counts
all of its splits, ``split`` says how many) and carries its reduction's programs, registers and
stack in the ``reduce_*`` columns; the reduction's variant is compiled too, and its errors and
spills fail the row.
"""
import argparse
import csv
import sys
import time
from dataclasses import dataclass
from typing import Iterable, Iterator, List, Optional

import torch

from fastconv.bench import cases as C
from fastconv.bench import compile_report as CR
from fastconv.bench.roofline import GPUS, GpuPeak, gpu_for
from fastconv.kernels.configs import SPLIT_REDUCE_CONFIG
from fastconv.ops._runtime import INTERPRETING

CONV_PASSES = ("fprop", "dgrad", "wgrad")
ROI_PASSES = ("fwd", "bwd", "bwd_det")
DTYPE_NAMES = {torch.float16: "float16", torch.bfloat16: "bfloat16", torch.float32: "float32"}

ROW_FIELDS = ("case", "model", "op", "pass", "dtype", "layout", "direction", "family", "kernel",
              "block_m", "block_n", "block_k", "num_warps", "num_stages", "split",
              "reduce_programs", "reduce_registers", "reduce_stack", "flags",
              "arch", "registers", "stack", "shared", "occupancy_warps", "blocks_per_sm",
              "tensor_cores", "global_loads", "load_bytes", "programs", "sms", "waves",
              "flops", "min_bytes", "floor_us", "bound", "gpu", "error")


@dataclass
class CaseLaunch:
    """One pass of one case at one dtype and layout, and the launch the dispatcher picks."""
    case: object
    pass_: str
    dtype: torch.dtype
    layout: str
    variant: Optional[CR.KernelVariant] = None   # specialised on the launch's arguments
    generic: Optional[CR.KernelVariant] = None   # the full compile report's variant of it
    programs: int = 0
    split: int = 1
    # the split-K reduction that follows a split fprop / dgrad launch (None when unsplit)
    reduce_variant: Optional[CR.KernelVariant] = None
    reduce_generic: Optional[CR.KernelVariant] = None
    reduce_programs: int = 0
    error: str = ""


# --------------------------------------------------------------------------------------------
# Asking the dispatcher
# --------------------------------------------------------------------------------------------

def _empty(shape, dtype, layout: str) -> torch.Tensor:
    fmt = torch.channels_last if layout == "channels_last" and len(shape) == 4 \
        else torch.contiguous_format
    return torch.empty(shape, dtype=dtype, device="meta", memory_format=fmt)


def _conv_launch(case: C.ConvCase, pass_: str, dtype: torch.dtype, layout: str):
    """(plan, KernelLaunch) of one pass of a convolution case: what the seam
    (``fastconv.conv.launch.conv2d_fprop`` / ``_dgrad`` / ``_wgrad``) describes for these
    tensors, as the ops in ``fastconv.conv.op`` / ``transpose_op`` call it."""
    from fastconv.conv import launch as L
    from fastconv.conv.shapes import conv2d_output_shape, conv_memory_format, memory_format_of
    from fastconv.conv.transpose_op import conv_transpose2d_output_shape
    from fastconv.ops.launch_cache import KernelLaunch

    conv = (case.stride, case.padding, case.dilation)
    # conv1d runs on a height-1 view of its input made contiguous (fastconv.functional.conv1d),
    # whatever layout the caller's [N, C, L] had
    layout = "nchw" if case.op == "conv1d" else layout
    x = _empty((case.N, case.C, case.H, case.W), dtype, layout)
    # conv1d's [K, C/g, k] weight is viewed as [K, C/g, 1, k]
    w = _empty((case.K, case.C // case.groups, 1, case.S) if case.op == "conv1d"
               else case.weight_shape, dtype, layout)
    if case.op == "conv_transpose2d":
        # forward: the dgrad kernel with dy = input; input gradient: fprop of grad_output;
        # weight gradient: wgrad with x = grad_output, dy = input
        out = torch.empty(conv_transpose2d_output_shape(x.shape, w.shape, *conv[:2],
                                                        case.output_padding, case.groups,
                                                        conv[2]),
                          dtype=dtype, device="meta", memory_format=conv_memory_format(x, w))
        described = (
            L.conv2d_dgrad(x, w, out, *conv, case.groups) if pass_ == "fprop" else
            L.conv2d_fprop(out, w, None, torch.empty_like(x, memory_format=conv_memory_format(
                out, w)), *conv, case.groups) if pass_ == "dgrad" else
            L.conv2d_wgrad(out, x, w.shape, *conv, case.groups))
    else:
        y = torch.empty(conv2d_output_shape(x.shape, w.shape, *conv), dtype=dtype,
                        device="meta", memory_format=conv_memory_format(x, w))
        bias = torch.empty(case.K, dtype=dtype, device="meta") if case.bias else None
        # autograd's gradient keeps the output's layout
        described = (
            L.conv2d_fprop(x, w, bias, y, *conv, case.groups) if pass_ == "fprop" else
            L.conv2d_dgrad(y, w, torch.empty_like(x, memory_format=memory_format_of(y)), *conv,
                           case.groups) if pass_ == "dgrad" else
            L.conv2d_wgrad(x, y, w.shape, *conv, case.groups))
    plan, launches = described[:2]
    # the kernel launch (a TMA forward may repack its weight first; a split one carries its
    # reduction as ``then``)
    return plan, next(one for one in launches if isinstance(one, KernelLaunch))


def _roi_launch(case: C.RoICase, pass_: str, dtype: torch.dtype, layout: str):
    """(direction, family, config, KernelLaunch) of one pass of a RoI case, as
    ``fastconv.roi.align_op`` / ``roi_pool`` would launch it."""
    from fastconv.roi import launch as L

    x = _empty(case.input_shape, dtype, layout)
    rois = torch.empty((case.boxes, 5), dtype=dtype, device="meta")
    ph, pw = case.output_size
    y = torch.empty(case.output_shape, dtype=dtype, device="meta")
    family = case.op
    if pass_ == "fwd":
        if case.op == "roi_align":
            launch = L.roi_align_forward_launch(x, rois, case.spatial_scale, ph, pw,
                                                case.sampling_ratio, case.aligned, y)
        else:
            argmax = torch.empty(case.output_shape, dtype=torch.int32, device="meta")
            launch = L.roi_pool_forward_launch(x, rois, case.spatial_scale, y, argmax)
        return "forward", family, L.roi_tile(case.C, ph * pw, ordered=False), launch
    ordered = pass_ == "bwd_det"
    dx = L.gradient_buffer(case.input_shape, y, layout == "channels_last")
    if case.op == "roi_align":
        launch = L.roi_align_backward_launch(y, rois, case.spatial_scale, case.sampling_ratio,
                                             case.aligned, dx, ordered)
    else:
        argmax = torch.empty(case.output_shape, dtype=torch.int32, device="meta")
        launch = L.roi_pool_backward_launch(y, rois, argmax, dx, ordered)
    direction = "backward_ordered" if ordered else "backward"
    return direction, family, L.roi_tile(case.C, ph * pw, ordered=ordered), launch


def case_launches(case, dtype: torch.dtype, layout: str, arch=90,
                  passes: Optional[Iterable[str]] = None) -> Iterator[CaseLaunch]:
    """Every pass of ``case`` at ``dtype`` and ``layout``, with the variant its launch compiles
    for ``sm_<arch>``; a pass the dispatcher cannot describe carries the error instead."""
    is_roi = isinstance(case, C.RoICase)
    for pass_ in (ROI_PASSES if is_roi else CONV_PASSES):
        if passes and pass_ not in passes:
            continue
        out = CaseLaunch(case, pass_, dtype, layout)
        try:
            if is_roi:
                direction, family, config, launch = _roi_launch(case, pass_, dtype, layout)
            else:
                plan, launch = _conv_launch(case, pass_, dtype, layout)
                direction, family, config = plan.direction, plan.family, plan.config
            out.variant = CR.variant_of_launch(launch, direction, family, dtype, config, arch)
            out.programs = launch.programs
            # a GEMM's second grid axis is its split of the reduction (for wgrad what it really
            # got, after rounding the plan's split to whole reduction blocks)
            out.split = launch.grid[1] if len(launch.grid) > 1 else 1
            then = getattr(launch, "then", None)
            if then is not None:
                out.reduce_variant = CR.variant_of_launch(
                    then, CR.SPLIT_REDUCE_DIRECTION, CR.SPLIT_REDUCE_FAMILY, dtype,
                    SPLIT_REDUCE_CONFIG, arch)
                out.reduce_programs = then.programs
        except Exception as exc:  # noqa: BLE001 -- every failure belongs in the report
            out.error = CR.one_line(exc)
        yield out


# --------------------------------------------------------------------------------------------
# FLOPs, bytes, floor
# --------------------------------------------------------------------------------------------

def pass_work(case, pass_: str, dtype: torch.dtype) -> tuple:
    """(FLOPs, minimum bytes) of one pass. Each convolution pass is one GEMM of the forward's
    size that reads two of x, w, y and writes the third, so each has the forward's FLOPs and
    bytes (run as two kernels, a backward reads dy twice: more than ``min_bytes("backward")``).
    A RoI backward is the case's "backward"."""
    if isinstance(case, C.RoICase) and pass_ != "fwd":
        return case.flops("backward"), case.min_bytes("backward", dtype)
    return case.flops("forward"), case.min_bytes("forward", dtype)


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------

def _row(cl: CaseLaunch, compiled: Optional[dict], gpu: GpuPeak, arch: int,
         reduce_compiled: Optional[dict] = None) -> dict:
    case = cl.case
    row = dict.fromkeys(ROW_FIELDS, "")
    row.update(case=case.name, model=case.model, op=case.op, dtype=DTYPE_NAMES[cl.dtype],
               layout=cl.layout, arch=f"sm_{arch}", gpu=gpu.name, programs=cl.programs,
               split=cl.split, sms=gpu.sms, error=cl.error)
    if cl.reduce_variant is not None:
        row["reduce_programs"] = cl.reduce_programs
        if reduce_compiled is not None:
            row.update(reduce_registers=reduce_compiled["registers"],
                       reduce_stack=reduce_compiled["stack"])
            if reduce_compiled["error"] and not row["error"]:
                row["error"] = "split-K reduction: " + reduce_compiled["error"]
    row["pass"] = cl.pass_
    flops, nbytes = pass_work(case, cl.pass_, cl.dtype)
    tf32 = bool(cl.variant and cl.variant.constexprs.get("ALLOW_TF32"))
    row.update(flops=flops, min_bytes=nbytes,
               floor_us=round(gpu.floor_seconds(flops, nbytes, cl.dtype, tf32) * 1e6, 3),
               bound=gpu.bound(flops, nbytes, cl.dtype, tf32))
    if cl.variant is None:
        return row
    d = cl.variant.describe()
    row.update({k: d[k] for k in ("direction", "family", "kernel", "block_m", "block_n",
                                  "block_k", "num_warps", "num_stages", "flags")})
    if compiled is not None:
        for k in ("registers", "stack", "shared", "occupancy_warps", "tensor_cores",
                  "global_loads", "load_bytes"):
            row[k] = compiled[k]
        row["error"] = row["error"] or compiled["error"]
        if compiled["occupancy_warps"] not in ("", 0):
            blocks = compiled["occupancy_warps"] // cl.variant.num_warps
            row["blocks_per_sm"] = blocks
            row["waves"] = round(cl.programs / (gpu.sms * blocks), 3)
    return row


def generic_id(variant: CR.KernelVariant) -> tuple:
    """The unspecialised variant a launch is an instance of, as the full compile report's
    rows identify theirs (kernel, dtype, tile, warps, stages, flags)."""
    d = variant.describe()
    return tuple(str(d[k]) for k in ("kernel", "dtype", "block_m", "block_n", "block_k",
                                     "num_warps", "num_stages", "flags"))


def _attach_generic(launches: List[CaseLaunch]) -> None:
    """Find each launch's variant, and its split-K reduction's, among the full compile report's
    (an error if absent)."""
    index = {generic_id(v): v for v in CR.kernel_variants()}
    for cl in launches:
        if cl.variant is None:
            continue
        cl.generic = index.get(generic_id(cl.variant))
        missing = [] if cl.generic is not None else [cl.variant]
        if cl.reduce_variant is not None:
            cl.reduce_generic = index.get(generic_id(cl.reduce_variant))
            if cl.reduce_generic is None:
                missing.append(cl.reduce_variant)
        if missing:
            cl.error = (f"{' '.join(generic_id(missing[0]))}: not among the compile report's "
                        "variants (fastconv.bench.compile_report.kernel_variants)")


def case_report(case_list: list, arch, jobs: int = 2, dtypes=C.DTYPES, layouts=C.LAYOUTS,
                passes: Optional[Iterable[str]] = None, gpu: Optional[GpuPeak] = None,
                specialise: str = "generic", progress=None) -> tuple:
    """Rows for every (case, dtype, layout, pass), each distinct variant compiled once.

    Args:
        case_list: benchmark cases (``fastconv.bench.cases.all_cases()`` or a selection).
        arch: compute capability (``90``, ``80`` or ``"sm_90"``).
        jobs: compiler worker processes.
        gpu: whose SM count and peaks to use; the architecture's default GPU otherwise.
        specialise: "generic" or "launch" (see the module's docstring).
        progress: an optional callable given a line of text at each stage.

    Returns:
        (rows, number of distinct variants compiled, launches) with rows as ``ROW_FIELDS``
        dicts in case order and launches the ``CaseLaunch`` behind each row.
    """
    if INTERPRETING:
        raise RuntimeError("case_report needs a process without TRITON_INTERPRET; run "
                           "`python -m fastconv.bench.case_report`, which re-executes itself")
    arch = CR._arch_number(arch)
    gpu = gpu or gpu_for(arch=arch)
    if specialise not in ("generic", "launch"):
        raise ValueError(f"specialise must be 'generic' or 'launch', not {specialise!r}")
    launches = [cl for case in case_list for dtype in dtypes for layout in layouts
                for cl in case_launches(case, dtype, layout, arch, passes)]
    _attach_generic(launches)

    def compiled_variant(cl):
        return cl.variant if specialise == "launch" else cl.generic

    def compiled_reduce(cl):
        return cl.reduce_variant if specialise == "launch" else cl.reduce_generic

    unique = {}
    for cl in launches:
        if not cl.error:
            unique.setdefault(compiled_variant(cl).key(), compiled_variant(cl))
            if cl.reduce_variant is not None:
                unique.setdefault(compiled_reduce(cl).key(), compiled_reduce(cl))
    if progress:
        progress(f"{len(launches)} launches, {len(unique)} distinct {specialise} variants to "
                 f"compile for sm_{arch}")
    compiled = dict(zip(unique, CR.compile_report(arch, jobs=jobs, variants=unique.values())))
    rows = []
    for cl in launches:
        reduce_row = None if cl.error or cl.reduce_variant is None \
            else compiled[compiled_reduce(cl).key()]
        row = _row(cl, None if cl.error else compiled[compiled_variant(cl).key()], gpu, arch,
                   reduce_row)
        if specialise == "generic":  # no alignment proven: the widths say nothing (docstring)
            row["global_loads"] = row["load_bytes"] = ""
        rows.append(row)
    return rows, len(unique), launches


def spills(row: dict) -> bool:
    """Whether the launch, or its split-K reduction, spills registers."""
    return any(row[k] not in ("", None) and int(row[k]) > 0 for k in ("stack", "reduce_stack"))


def is_failure(row: dict) -> bool:
    """A launch that must not ship: no variant, a compile error or register spills (its split-K
    reduction's included)."""
    return bool(row["error"]) or spills(row)


def is_vectorised(row: dict) -> bool:
    """Whether some global load of the launch moves 16 bytes (ld.global.v4 / 16-byte cp.async
    / TMA): the width a channels_last tile of 8 halves or 4 floats along channels allows."""
    return row["load_bytes"] not in ("", None) and int(row["load_bytes"]) >= 16


def summary(rows: List[dict], distinct: int) -> dict:
    """Counts over the rows, for the closing line and for tests."""
    ok = [r for r in rows if not r["error"]]
    cl_gemm = [r for r in ok if r["layout"] == "channels_last" and r["op"] != "conv1d"
               and r["family"] in ("implicit_gemm", "gemm_1x1")]
    gemm16 = [r for r in ok if r["family"] in ("implicit_gemm", "gemm_1x1")
              and r["dtype"] in ("float16", "bfloat16")]
    return {
        "rows": len(rows),
        "cases": len({r["case"] for r in rows}),
        "distinct_variants": distinct,
        "errors": sum(bool(r["error"]) for r in rows),
        "spills": sum(spills(r) for r in rows),
        "fewer_programs_than_sms": sum(int(r["programs"]) < int(r["sms"]) for r in ok),
        "split_k": sum(r["direction"] in ("fprop", "dgrad") and int(r["split"]) > 1 for r in ok),
        "under_one_wave": sum(r["waves"] != "" and float(r["waves"]) < 1 for r in ok),
        "gemm16_without_tensor_cores": sum(not r["tensor_cores"] for r in gemm16),
        "channels_last_gemm_rows": len(cl_gemm),
        "channels_last_gemm_vectorised": sum(is_vectorised(r) for r in cl_gemm),
        "vectorised": sum(is_vectorised(r) for r in ok),
    }


def write_csv(rows: List[dict], path: str) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=ROW_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


_SHORT_FAMILY = {"implicit_gemm": "igemm", "gemm_1x1": "1x1", "direct": "direct",
                 "roi_align": "align", "roi_pool": "pool"}


def _cell(r: dict) -> str:
    """One pass in the per-case table: family, tile, warps, programs and waves."""
    if r["error"] and not r["kernel"]:
        return "[red]error"
    tile = f'{r["block_m"]}x{r["block_n"]}' + (f'x{r["block_k"]}' if r["block_k"] else "")
    split = f' s{r["split"]}' if r["split"] not in ("", 1, "1") else ""
    waves = f'{float(r["waves"]):.3g}w' if r["waves"] != "" else "?"
    text = f'{_SHORT_FAMILY.get(r["family"], r["family"])} {tile}/{r["num_warps"]}{split} ' \
           f'{r["programs"]}p {waves}'
    return f"[red]{text}" if is_failure(r) else (f"[yellow]{text}" if r["waves"] != ""
                                                 and float(r["waves"]) < 1 else text)


def print_table(rows: List[dict], dtype: str, layout: str, wide: bool = False) -> None:
    """One line per case at one dtype and layout: each pass's launch, and the case's floor;
    register counts, tensor cores and load widths only when ``wide`` (the CSV has them)."""
    from rich.console import Console
    from rich.table import Table

    view = [r for r in rows if r["dtype"] == dtype and r["layout"] == layout]
    if not view:
        return
    gpu, arch = view[0]["gpu"], view[0]["arch"]
    table = Table(title=f"benchmark cases, {dtype} {layout}, compiled for {arch} ({gpu})",
                  caption="each pass: family tile/warps, s<split> (split-K), programs (p, all "
                          "splits) and waves (w) on the SMs; yellow: under one wave, red: error "
                          "or spill")
    has_loads = any(r["global_loads"] for r in view)
    columns = [("case", "left"), ("GFLOP", "right"), ("floor µs", "right"), ("bound", "left"),
               ("pass 1", "left"), ("pass 2", "left"), ("pass 3", "left")]
    if wide:
        columns += [("regs", "right"), ("tensor cores", "left")] + \
            ([("loads (bytes)", "left")] if has_loads else [])
    for col, justify in columns:
        table.add_column(col, justify=justify, overflow="fold")
    by_case = {}
    for r in view:
        by_case.setdefault(r["case"], []).append(r)
    for name, rs in by_case.items():
        first = rs[0]
        regs = max((int(r["registers"]) for r in rs if r["registers"] != ""), default="")
        cores = sorted({r["tensor_cores"] for r in rs if r["tensor_cores"]})
        loads = sorted({r["global_loads"] for r in rs if r["global_loads"]})
        cells = [f'{r["pass"]}: {_cell(r)}' for r in rs] + [""] * (3 - len(rs))
        extra = [str(regs), " ".join(cores) or "-"] + ([" | ".join(loads)] if has_loads else [])
        table.add_row(name, f'{first["flops"] / 1e9:.2f}', f'{first["floor_us"]:.1f}',
                      first["bound"], *cells[:3], *(extra if wide else []))
    console = Console()
    if not console.is_terminal:
        console = Console(width=220 if wide else 120)
    console.print(table)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

def build_parser(prog: str = "python -m fastconv.bench.case_report") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Compile what the dispatcher launches for every benchmark case (dtype x "
                    "layout x pass) for a GPU architecture, and report registers, spills, "
                    "occupancy, tensor cores, load widths, programs and waves, and the case's "
                    "roofline floor. No GPU needed.")
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser, arch: bool = True) -> None:
    """The report's options (``fastconv compile-report --cases`` shares them)."""
    if arch:
        parser.add_argument("--arch", default="sm_90",
                            choices=[f"sm_{a}" for a in sorted(CR.SM_LIMITS)])
        parser.add_argument("--csv", help="also write the rows to this CSV file")
        parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--specialise", choices=["generic", "launch"], default="generic",
                        help="compile each launch's generic variant (default, fast) or the "
                             "launch itself as Triton's JIT specialises it (load widths; slow)")
    parser.add_argument("--no-tf32", action="store_true",
                        help="float32 without TF32 (torch.backends.cudnn.allow_tf32 = False), "
                             "as a benchmark that asks for exact float32 runs it")
    parser.add_argument("--gpu", choices=sorted(GPUS),
                        help="whose SM count and peaks to use (default: sm_90 -> h100-sxm, "
                             "sm_80 -> a100)")
    parser.add_argument("--models", nargs="+", help="model groups to keep (e.g. resnet50 "
                        "depthwise conv1d conv_transpose2d roi)")
    parser.add_argument("--ops", nargs="+", help="ops to keep (conv2d conv1d conv_transpose2d "
                        "roi_align roi_pool)")
    parser.add_argument("--batches", nargs="+", type=int, help="batch sizes to keep")
    parser.add_argument("--match", help="keep cases whose name contains this")
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPE_NAMES.values()),
                        help="dtypes (default: all three)")
    parser.add_argument("--layouts", nargs="+", choices=list(C.LAYOUTS),
                        help="layouts (default: both)")
    parser.add_argument("--passes", nargs="+", choices=CONV_PASSES + ROI_PASSES,
                        help="passes (default: all)")
    parser.add_argument("--wide", action="store_true",
                        help="registers, tensor cores and load widths in the table too")
    parser.add_argument("--table", choices=["cases", "none"], default="cases",
                        help="print one line per case at --view-dtype/--view-layout (default), "
                             "or only the summary")
    parser.add_argument("--view-dtype", default="float16", choices=list(DTYPE_NAMES.values()))
    parser.add_argument("--view-layout", default="channels_last", choices=list(C.LAYOUTS))


def run(args) -> int:
    """Run the report for parsed arguments (see :func:`add_arguments`); 1 on any failure."""
    start = time.perf_counter()
    if args.no_tf32:
        torch.backends.cudnn.allow_tf32 = False  # what the launcher reads (conv2d_launch._meta)
    by_name = {v: k for k, v in DTYPE_NAMES.items()}
    dtypes = tuple(by_name[d] for d in args.dtypes) if args.dtypes else C.DTYPES
    layouts = tuple(args.layouts) if args.layouts else C.LAYOUTS
    selected = C.select(C.all_cases(), models=args.models, ops=args.ops, batches=args.batches,
                        match=args.match)
    if not selected:
        print("no benchmark case matches the filters", file=sys.stderr)
        return 2
    gpu = GPUS[args.gpu] if args.gpu else None
    rows, distinct, _ = case_report(selected, args.arch, jobs=args.jobs, dtypes=dtypes,
                                    layouts=layouts, passes=args.passes, gpu=gpu,
                                    specialise=args.specialise,
                                    progress=lambda line: print(line, flush=True))
    if args.table == "cases":
        print_table(rows, args.view_dtype, args.view_layout, wide=args.wide)
    if args.csv:
        write_csv(rows, args.csv)
    s = summary(rows, distinct)
    for r in rows:
        if is_failure(r):
            stack = ", ".join(f"{what}{r[k]} bytes of stack"
                              for what, k in (("", "stack"), ("reduction: ", "reduce_stack"))
                              if r[k] not in ("", None) and int(r[k]) > 0)
            print(f'FAILED {r["case"]} {r["pass"]} {r["dtype"]} {r["layout"]} {r["kernel"]}: '
                  f'{r["error"] or stack}', file=sys.stderr)
    sms = rows[0]["sms"] if rows else ""
    loads = (f'16-byte loads in {s["channels_last_gemm_vectorised"]} of '
             f'{s["channels_last_gemm_rows"]} channels_last GEMM launches'
             if args.specialise == "launch" else "load widths: --specialise launch")
    print(f'{s["cases"]} cases, {s["rows"]} launches ({s["distinct_variants"]} distinct '
          f'{args.specialise} variants) compiled for {args.arch} in '
          f'{time.perf_counter() - start:.0f} s; {s["errors"]} errors, {s["spills"]} with '
          f'spills; {s["gemm16_without_tensor_cores"]} 16-bit GEMM launches without tensor '
          f'cores; {s["fewer_programs_than_sms"]} launch fewer programs than {sms} SMs, '
          f'{s["under_one_wave"]} under one wave; {s["split_k"]} fprop/dgrad launches split '
          f'their reduction; {loads}')
    return 1 if s["errors"] or s["spills"] or s["gemm16_without_tensor_cores"] else 0


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m fastconv.bench.case_report --arch sm_90 [--csv FILE] [--jobs N] [filters]``.

    Returns:
        0 when every launch compiled without spills (and the 16-bit GEMMs use tensor cores),
        1 otherwise, 2 when no case matches the filters.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if INTERPRETING:
        # @triton.jit already returned interpreted functions in this process: start afresh
        return CR.reexec_without_interpreter("fastconv.bench.case_report", argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
