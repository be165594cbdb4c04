"""Static GPU compile report: fastconv's launches built for sm_90 / sm_80, without a GPU.

The tests run the kernels in Triton's interpreter, which generates no GPU code, so a config that
fails to compile, spills registers or misses the tensor cores would only show on a GPU. Triton
ships ptxas and cuobjdump, so the real PTX and cubin can be built on any machine. This module
compiles launches and reports, per launch: compile errors, registers and spill stack, shared
memory, tensor-core instructions (wgmma / mma) and the width of the global loads.

Every variant is made from a launch the seam describes (``fastconv.conv.launch``'s
``fprop_launch`` / ``dgrad_launch`` / ``wgrad_launch`` for a plan, ``conv2d_fprop`` / ``_dgrad`` /
``_wgrad`` for a benchmark case, ``fastconv.roi.launch``'s ``roi_*_launch``) on meta tensors,
and compiled as Triton's JIT specialises that launch (:func:`variant_of_launch`).

* the default report: every config of ``plan.CONFIG_TABLES`` (each dtype, 32/64-bit offsets,
  split or not, with a bias) on a channels_last problem of its family, the split-K reduction
  that follows a split, and every RoI tile; it fails on a compile error or a spill;
* ``--cases``: the launches of the benchmark cases (:mod:`fastconv.bench.cases`), each pass at
  each dtype and layout, as the plan picks them for the architecture.

    python -m fastconv.bench.compile_report --arch sm_90 [--cases --models resnet50] [--csv F]

It must run without TRITON_INTERPRET (the interpreter replaces ``@triton.jit``); ``main``
re-executes itself without it when needed.
"""
import argparse
import csv
import inspect
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import Iterable, Iterator, List, Optional, Tuple, Union

import torch
import triton

from fastconv.bench import cases as C
from fastconv.ops._runtime import INTERPRETING

DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
ARCHS = ("sm_90", "sm_80")
# the most shared memory one block may use (static + dynamic): more cannot launch
SMEM_PER_BLOCK = {80: 163 * 1024, 90: 227 * 1024}
SPLIT_REDUCE = "split_reduce"   # how a row names the split-K reduction that follows a launch
LAUNCH_OPTIONS = ("num_warps", "num_stages", "maxnreg")

ROW_FIELDS = ("case", "pass", "candidate", "layout", "kernel", "direction", "family", "dtype",
              "tile", "num_warps", "num_stages", "flags", "arch", "registers", "stack", "shared",
              "tensor_cores", "wgmma_n", "tma_operands", "global_loads", "load_bytes",
              "compile_s", "error")

_POINTER = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32",
            torch.float64: "fp64", torch.int32: "i32", torch.int64: "i64", torch.int8: "i8",
            torch.uint8: "u8", torch.bool: "i1"}


@dataclass
class KernelVariant:
    """One compilation: a kernel by name (so that it pickles into a worker), its argument
    types, constexprs, the arguments marked divisible by 16, launch options, and a label."""
    kernel_name: str
    signature: dict = field(repr=False)     # {name: "*fp16" | "i32" | "i64" | "constexpr"}
    constexprs: dict = field(repr=False)
    divisible_16: tuple = field(repr=False)
    options: dict = field(repr=False)       # num_warps, num_stages, maxnreg
    label: dict = field(default_factory=dict)  # direction, family, dtype, case, pass, layout

    @property
    def kernel(self):
        from fastconv import kernels
        return getattr(kernels, self.kernel_name)

    def key(self) -> tuple:
        """Everything that makes two variants compile to different code (hashable)."""
        return (self.kernel_name, tuple(self.signature.items()),
                tuple(self.constexprs.items()), self.divisible_16,
                tuple(sorted(self.options.items())))

    def describe(self) -> dict:
        """The columns of a report row that say what was compiled."""
        blocks = [str(v) for k, v in self.constexprs.items() if k.startswith("BLOCK_")]
        flags = " ".join(f"{k}={int(v)}" for k, v in self.constexprs.items()
                         if isinstance(v, bool))
        return dict(self.label, kernel=self.kernel_name, tile="x".join(blocks),
                    num_warps=self.options["num_warps"], num_stages=self.options["num_stages"],
                    flags=flags)


def _arg_type(value) -> Tuple[str, bool]:
    """(Triton type, divisible by 16) of a runtime argument, as Triton's JIT specialises it:
    a tensor is a pointer to its dtype (aligned when its address is a multiple of 16, as a
    meta tensor's 0 is), an integer i32 or, from 2**31, i64 (divisible when a multiple of 16),
    a bool u1, a float fp32, a TMA descriptor ``tensordesc<dtype[block]>``."""
    if isinstance(value, torch.Tensor):
        return "*" + _POINTER[value.dtype], value.data_ptr() % 16 == 0
    if isinstance(value, bool):
        return "u1", False
    if isinstance(value, int):
        return ("i32" if -2**31 <= value < 2**31 else "i64"), value % 16 == 0
    if isinstance(value, float):
        return "fp32", False
    if hasattr(value, "base") and hasattr(value, "block_shape"):  # a host TensorDescriptor
        return f"tensordesc<{_POINTER[value.base.dtype]}{list(value.block_shape)}>", False
    raise TypeError(f"no Triton type for a launch argument of type {type(value).__name__}")


def variant_of_launch(launch, **label) -> KernelVariant:
    """The variant a launch compiles, read from its arguments by name: tensors are pointers
    of their dtype, integers i32/i64 by value; an integer equal to 1 becomes a constant and
    integers and pointers divisible by 16 are marked so (Triton's specialisation, which is what
    lets it prove contiguous, aligned loads); the constexprs and launch options are the launch's
    meta. ``launch`` is a ``fastconv.ops.launch_cache.KernelLaunch`` (meta tensors will do);
    ``label`` names it in the report (direction, family, dtype, ...)."""
    signature, constexprs, divisible = {}, {}, []
    runtime = dict(zip(_runtime_names(launch), launch.args))
    arguments = launch.arguments
    kernel = launch.kernel
    for name in inspect.signature(kernel.fn).parameters:  # declaration order
        value = arguments[name]
        if name not in runtime or value is None:
            signature[name], constexprs[name] = "constexpr", value
        elif isinstance(value, int) and not isinstance(value, bool) and value == 1:
            signature[name], constexprs[name] = "constexpr", 1
        else:
            signature[name], aligned = _arg_type(value)
            if aligned:
                divisible.append(name)
    options = {k: launch.meta[k] for k in LAUNCH_OPTIONS if k in launch.meta}
    options.setdefault("num_warps", 4)
    options.setdefault("num_stages", 3)
    label = {k: str(v).replace("torch.", "") for k, v in label.items()}
    return KernelVariant(kernel.fn.__name__, signature, constexprs, tuple(divisible), options, label)


def _runtime_names(launch) -> list:
    """The names of ``launch.args`` (the kernel's non-constexpr parameters), in order."""
    return [name for name in launch.arguments if name not in launch.meta][:len(launch.args)]


# --------------------------------------------------------------------------------------------
# What to compile: every config the plan may pick, or the launches of the benchmark cases
# --------------------------------------------------------------------------------------------

def _meta(shape, dtype, channels_last=True) -> torch.Tensor:
    fmt = torch.channels_last if channels_last and len(shape) == 4 else torch.contiguous_format
    return torch.empty(shape, dtype=dtype, device="meta", memory_format=fmt)


# a channels_last problem of each family: (N, C, H, W, K, R, S, padding, groups)
_FAMILY_PROBLEM = {"implicit_gemm": (2, 64, 12, 12, 64, 3, 3, 1, 1),
                   "gemm_1x1": (2, 64, 12, 12, 64, 1, 1, 0, 1),
                   "direct": (2, 64, 12, 12, 64, 3, 3, 1, 64),
                   "stem": (2, 3, 12, 12, 64, 7, 7, 3, 1)}


def _plan_launches(direction, family, dtype, config, index_64, split, has_bias) -> list:
    """The launches ``fastconv.conv.launch`` describes for a plan of this config on the
    family's problem (``_FAMILY_PROBLEM``), the split-K reduction included."""
    from fastconv.conv import launch as L
    from fastconv.conv.plan import KERNELS, Plan

    n, c, h, w, k, r, s, pad, groups = _FAMILY_PROBLEM[family]
    conv = ((1, 1), (pad, pad), (1, 1))
    x, wt = _meta((n, c, h, w), dtype), _meta((k, c // groups, r, s), dtype)
    y = _meta((n, k, h + 2 * pad - r + 1, w + 2 * pad - s + 1), dtype)
    plan = Plan(direction, family, KERNELS[(direction, family)], config, split,
                "compile report", index_64)
    if direction == "fprop":
        pb = L.conv_problem(x.shape, wt.shape, y.shape, groups, dtype, *conv)
        bias = torch.empty(k, dtype=dtype, device="meta") if has_bias else None
        return L.fprop_launch(plan, pb, x, wt, bias, y, *conv, groups).chain()
    pb = L.conv_problem(x.shape, wt.shape, y.shape, groups, dtype, *conv)
    if direction == "dgrad":
        return L.dgrad_launch(plan, pb, y, wt, x, *conv, groups).chain()
    return L.wgrad_launch(plan, pb, x, y, wt.shape, *conv, groups)[0].chain()


def conv_variants() -> Iterator[KernelVariant]:
    """Every config of ``plan.CONFIG_TABLES`` (the tables the plan picks from, so none can be
    missed) at every dtype and offset width it is launched with: unsplit with a bias, and split
    in two where the family splits (then followed by the split-K reduction)."""
    from fastconv.conv.plan import CONFIG_TABLES, KERNELS, dtype_class

    for (direction, family) in KERNELS:
        splits = (1, 2) if family == "direct" and direction == "wgrad" or \
            family != "direct" and direction != "wgrad" else (1,)
        for dtype in DTYPES:
            for table, index_64_values in CONFIG_TABLES[family]:
                for config in table[direction][dtype_class(dtype)]:
                    for index_64 in index_64_values:
                        for split in splits:
                            launches = _plan_launches(direction, family, dtype, config,
                                                      index_64, split, has_bias=split == 1)
                            for i, one in enumerate(launches):
                                yield variant_of_launch(
                                    one, direction=direction if i == 0 else SPLIT_REDUCE,
                                    family=family, dtype=dtype)


def roi_variants() -> Iterator[KernelVariant]:
    """Every RoI launch the RoI ops describe, over every tile of ``ROI_CONFIGS`` (7x7 bins
    take the big tile, 2x2 the small one), dtype, offset width (an input of 2**31 elements)
    and RoIAlign's ``aligned``; the adaptive forward's split-K reduction included."""
    from fastconv.roi import launch as L

    for dtype in DTYPES:
        for big in (False, True):
            x = _meta((1, 64, 8192, 4096) if big else (2, 64, 32, 32), dtype)
            rois = torch.empty((16, 5), dtype=dtype, device="meta")
            for bins in ((7, 7), (2, 2)):
                y = torch.empty((16, 64, *bins), dtype=dtype, device="meta")
                argmax = torch.empty(y.shape, dtype=torch.int32, device="meta")
                launches = [("forward", "roi_pool", L.roi_pool_forward_launch(
                    x, rois, 0.25, y, argmax))]
                for ordered in (False, True):
                    dx = L.gradient_buffer(x.shape, y, True)
                    direction = "backward_ordered" if ordered else "backward"
                    launches.append((direction, "roi_pool", L.roi_pool_backward_launch(
                        y, rois, argmax, dx, ordered)))
                    for aligned in (False, True):
                        launches.append((direction, "roi_align", L.roi_align_backward_launch(
                            y, rois, 0.25, 0, aligned, dx, ordered)))
                for aligned in (False, True):
                    launches.append(("forward", "roi_align", L.roi_align_forward_launch(
                        x, rois, 0.25, *bins, 0, aligned, y)))
                for direction, family, launch in launches:
                    for i, one in enumerate(launch.chain()):
                        yield variant_of_launch(
                            one, direction=direction if i == 0 else SPLIT_REDUCE,
                            family=family, dtype=dtype)


def config_variants(arch="sm_90") -> List[KernelVariant]:
    """The default report: convolution configs, then RoI tiles, each distinct variant once, as
    launches planned for ``arch`` describe them."""
    from fastconv.ops.target import planning_for

    unique = {}
    with planning_for(f"sm_{_arch_number(arch)}"):
        for v in (*conv_variants(), *roi_variants()):
            unique.setdefault(v.key(), v)
    return list(unique.values())


CONV_PASSES = ("fprop", "dgrad", "wgrad")
ROI_PASSES = ("fwd", "bwd", "bwd_det")


def _conv_case_launches(case: C.ConvCase, pass_: str, dtype, layout: str,
                        plan=None) -> tuple:
    """(plan, launches) of one pass of a convolution case: what the seam describes for these
    tensors, as the ops in ``fastconv.conv.op`` / ``transpose_op`` call it (``plan``: that
    plan's launches instead of the one the seam would choose)."""
    from fastconv.conv import launch as L
    from fastconv.conv.shapes import conv_memory_format, memory_format_of
    from fastconv.ops.launch_cache import KernelLaunch

    conv = (case.stride, case.pads, case.dilation)
    # conv1d runs on a height-1 view of its input made contiguous, whatever its layout
    cl = layout == "channels_last" and case.op != "conv1d"
    x = _meta((case.N, case.C, case.H, case.W), dtype, cl)
    w = _meta((case.K, case.C // case.groups, 1, case.S) if case.op == "conv1d"
              else case.weight_shape, dtype, cl)
    if case.op == "conv_transpose2d":
        # forward: the dgrad kernel with dy = input; input gradient: fprop of grad_output;
        # weight gradient: wgrad with x = grad_output, dy = input
        out = torch.empty((case.N, case.K, *case.output_hw), dtype=dtype, device="meta",
                          memory_format=conv_memory_format(x, w))
        dx = torch.empty_like(x, memory_format=conv_memory_format(out, w))
        described = (L.conv2d_dgrad(x, w, out, *conv, case.groups, plan=plan)
                     if pass_ == "fprop" else
                     L.conv2d_fprop(out, w, None, dx, *conv, case.groups, plan=plan)
                     if pass_ == "dgrad" else
                     L.conv2d_wgrad(out, x, w.shape, *conv, case.groups, plan=plan))
    else:
        y = torch.empty((case.N, case.K, *case.output_hw), dtype=dtype, device="meta",
                        memory_format=conv_memory_format(x, w))
        bias = torch.empty(case.K, dtype=dtype, device="meta") if case.bias else None
        dx = torch.empty_like(x, memory_format=memory_format_of(y))  # autograd keeps y's
        described = (L.conv2d_fprop(x, w, bias, y, *conv, case.groups, plan=plan)
                     if pass_ == "fprop" else
                     L.conv2d_dgrad(y, w, dx, *conv, case.groups, plan=plan)
                     if pass_ == "dgrad" else
                     L.conv2d_wgrad(x, y, w.shape, *conv, case.groups, plan=plan))
    plan, launches = described[:2]
    return plan, [one for one in launches if isinstance(one, KernelLaunch)]


def _roi_case_launch(case: C.RoICase, pass_: str, dtype, layout: str):
    """(direction, launch) of one pass of a RoI case, as ``fastconv.roi``'s ops launch it."""
    from fastconv.roi import launch as L

    x = _meta(case.input_shape, dtype, layout == "channels_last")
    rois = torch.empty((case.boxes, 5), dtype=dtype, device="meta")
    y = torch.empty(case.output_shape, dtype=dtype, device="meta")
    argmax = torch.empty(case.output_shape, dtype=torch.int32, device="meta")
    if pass_ == "fwd":
        if case.op == "roi_align":
            return "forward", L.roi_align_forward_launch(
                x, rois, case.spatial_scale, *case.output_size, case.sampling_ratio,
                case.aligned, y)
        return "forward", L.roi_pool_forward_launch(x, rois, case.spatial_scale, y, argmax)
    ordered = pass_ == "bwd_det"
    dx = L.gradient_buffer(case.input_shape, y, layout == "channels_last")
    direction = "backward_ordered" if ordered else "backward"
    if case.op == "roi_align":
        return direction, L.roi_align_backward_launch(y, rois, case.spatial_scale,
                                                      case.sampling_ratio, case.aligned, dx,
                                                      ordered)
    return direction, L.roi_pool_backward_launch(y, rois, argmax, dx, ordered)


def case_launches(case, pass_: str, dtype: torch.dtype, layout: str) -> list:
    """[(label, KernelLaunch)] of one pass of a benchmark case, in launch order (a split
    launch is followed by its reduction, labelled ``direction="split_reduce"``), as the plan
    picks them for the current target (``fastconv.ops.target.planning_for``)."""
    if isinstance(case, C.RoICase):
        direction, launch = _roi_case_launch(case, pass_, dtype, layout)
        family, chain = case.op, launch.chain()
    else:
        plan, chain = _conv_case_launches(case, pass_, dtype, layout)
        direction, family = plan.direction, plan.family  # (the seam lists every launch)
    label = dict(case=case.name, layout=layout, dtype=dtype, family=family)
    label["pass"] = pass_
    return [(dict(label, direction=direction if i == 0 else SPLIT_REDUCE), one)
            for i, one in enumerate(chain)]


def case_variants(case_list, dtypes=C.DTYPES, layouts=C.LAYOUTS,
                  passes: Optional[Iterable[str]] = None) -> List[KernelVariant]:
    """Every launch of every (case, dtype, layout, pass), as a variant labelled with them."""
    out = []
    for case in case_list:
        for pass_ in ROI_PASSES if isinstance(case, C.RoICase) else CONV_PASSES:
            if passes and pass_ not in passes:
                continue
            for dtype in dtypes:
                for layout in layouts:
                    out += [variant_of_launch(one, **label)
                            for label, one in case_launches(case, pass_, dtype, layout)]
    return out


def first_call_variants(case_list, dtypes=C.DTYPES, layouts=C.LAYOUTS,
                        tuned: bool = True) -> List[KernelVariant]:
    """What the first call of each convolution case compiles, pass by pass: the launches of
    its plan and, when ``tuned`` (autotuning on a GPU, the default there), those of every
    candidate the autotuner times (``autotune.candidates``), labelled ``candidate`` (0: the
    plan's own config). Triton compiles a variant once per process and cache directory, so
    the distinct variants are what a cold cache compiles."""
    from fastconv.conv import autotune

    out = []
    for case in case_list:
        if getattr(case, "op", None) != "conv2d":  # the models' layers
            continue
        for pass_ in CONV_PASSES:
            for dtype in dtypes:
                for layout in layouts:
                    label = dict(case=case.name, layout=layout, dtype=dtype)
                    label["pass"] = pass_
                    plan, chain = _conv_case_launches(case, pass_, dtype, layout)
                    options = [plan]
                    if tuned:
                        options += [p for p in autotune.candidates(plan, case.problem(dtype),
                                                                   None)
                                    if p.config != plan.config]
                    for i, option in enumerate(options):
                        if i:
                            chain = _conv_case_launches(case, pass_, dtype, layout, option)[1]
                        out += [variant_of_launch(one, **label, family=option.family,
                                                  direction=option.direction if j == 0
                                                  else SPLIT_REDUCE, candidate=i)
                                for j, one in enumerate(chain)]
    return out


# --------------------------------------------------------------------------------------------
# Compiling one variant
# --------------------------------------------------------------------------------------------

def _arch_number(arch) -> int:
    """90 from 90, "90", "sm_90" or "sm90"."""
    return int(str(arch).lower().replace("sm_", "").replace("sm", ""))


def _tool(name: str) -> str:
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)


def resource_usage(cubin: bytes) -> dict:
    """REG, STACK and SHARED of the (single) function in a cubin, from ``cuobjdump -res-usage``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.cubin")
        with open(path, "wb") as f:
            f.write(cubin)
        out = subprocess.run([_tool("cuobjdump"), "-res-usage", path], capture_output=True,
                             text=True, check=True).stdout
    usage = {}
    for key in ("REG", "STACK", "SHARED"):
        m = re.search(rf"\b{key}:(\d+)", out)
        if m is None:
            raise RuntimeError(f"cuobjdump -res-usage printed no {key}: {out!r}")
        usage[key] = int(m.group(1))
    return usage


_LD_GLOBAL = re.compile(r"\bld\.global((?:\.[\w:]+)*)\s")
# cp.async.{ca,cg}.shared.global [dst], [src], size(, src-size); -- the copy size in bytes
_CP_ASYNC = re.compile(r"\bcp\.async\.c[ag]\.shared\.global(?:\.[\w:]+)*\s[^;]*?,"
                       r"\s*(0x[0-9a-f]+|\d+)\s*[,;]", re.IGNORECASE)


def global_loads(ptx: str) -> dict:
    """Global loads in the PTX by kind: {"tma" | "cp.async" | "ld": widths in bytes, widest
    first}. ``ld.global.v4.b32`` is 16 bytes; cp.async carries its copy size; a TMA copy
    (``cp.async.bulk.tensor``) moves a whole tile and is listed without a width."""
    found = {}
    if "cp.async.bulk.tensor" in ptx:
        found["tma"] = []
    widths = sorted({int(m.group(1), 0) for m in _CP_ASYNC.finditer(ptx)}, reverse=True)
    if widths:
        found["cp.async"] = widths
    ld = set()
    for m in _LD_GLOBAL.finditer(ptx):
        parts = m.group(1).split(".")
        vec = next((int(p[1:]) for p in parts if re.fullmatch(r"v[248]", p)), 1)
        bits = next((int(p[1:]) for p in parts if re.fullmatch(r"[bufs](8|16|32|64)", p)), 0)
        ld.add(vec * bits // 8)
    if ld:
        found["ld"] = sorted(ld, reverse=True)
    return found


def format_loads(loads: dict) -> str:
    """``{"cp.async": [16, 8], "ld": [2]}`` -> ``"cp.async:16/8 ld:2"``."""
    return " ".join(k + (":" + "/".join(map(str, v)) if v else "") for k, v in loads.items())


def widest_load(loads: dict) -> int:
    """Bytes of the widest global load (a TMA tile counts as 16, the widest per-thread load)."""
    widths = [w for v in loads.values() for w in v] + ([16] if "tma" in loads else [])
    return max(widths, default=0)


def tensor_core_ops(ptx: str) -> str:
    """Which tensor-core instructions the PTX uses: "wgmma", "mma", both, or "" for none."""
    found = []
    if "wgmma.mma_async" in ptx:
        found.append("wgmma")
    if re.search(r"^\s*(@%p\d+\s+)?mma\.sync", ptx, re.MULTILINE):
        found.append("mma")
    return "+".join(found)


_WGMMA_SHAPE = re.compile(r"wgmma\.mma_async\.sync\.aligned\.m\d+n(\d+)k\d+")
# a TMA copy in Triton's GPU IR names the descriptor argument it reads: %x_desc00[...]
_TMA_COPY = re.compile(r"async_tma_copy_global_to_local\s+%([A-Za-z_]\w*?)(?:_\d+)?\[")


def wgmma_n(ptx: str) -> Union[int, str]:
    """The smallest N of the PTX's wgmma instructions (``m64n128k16``: 128), "" without any:
    the width of the accumulator tile each warpgroup's MMA produces at once."""
    shapes = [int(n) for n in _WGMMA_SHAPE.findall(ptx)]
    return min(shapes) if shapes else ""


def tma_operands(ttgir: str) -> List[str]:
    """The operands the kernel loads by TMA, by the name of the descriptor argument its
    copies read, stride-phase digits dropped (``x_desc00``, ``x_desc11`` -> ``x_desc``)."""
    names = {m.rstrip("0123456789") for m in _TMA_COPY.findall(ttgir)}
    return sorted(names)


def one_line(exc: BaseException, limit: int = 600) -> str:
    """An exception as one line of at most ``limit`` characters: a report row's error."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[:limit] + " ..."


def compile_variant(variant: KernelVariant, arch) -> dict:
    """Compile one variant for ``sm_<arch>`` and describe the result as a row (``ROW_FIELDS``).

    A failure (compile error, ptxas error, too much shared memory) goes to the row's ``error``
    instead of being raised, so one bad variant does not hide the others. ``shared`` is static
    (cuobjdump) plus dynamic (Triton's) bytes per block; ``stack`` the spill stack in bytes.
    """
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.jit import JITFunction

    arch = _arch_number(arch)
    row = dict.fromkeys(ROW_FIELDS, "")
    row.update(variant.describe(), arch=f"sm_{arch}")
    start = time.perf_counter()
    try:
        kernel = variant.kernel
        if not isinstance(kernel, JITFunction):
            raise RuntimeError("the kernels are interpreted in this process (TRITON_INTERPRET is "
                               "set): nothing can be compiled for a GPU")
        attrs = {(kernel.arg_names.index(name),): [["tt.divisibility", 16]]
                 for name in variant.divisible_16}
        compiled = triton.compile(ASTSource(kernel, variant.signature, variant.constexprs, attrs),
                                  target=GPUTarget("cuda", arch, 32), options=variant.options)
        usage = resource_usage(compiled.asm["cubin"])
        shared = usage["SHARED"] + int(compiled.metadata.shared)
        loads = global_loads(compiled.asm["ptx"])
        row.update(registers=usage["REG"], stack=usage["STACK"], shared=shared,
                   tensor_cores=tensor_core_ops(compiled.asm["ptx"]),
                   wgmma_n=wgmma_n(compiled.asm["ptx"]),
                   tma_operands=" ".join(tma_operands(compiled.asm["ttgir"])),
                   global_loads=format_loads(loads), load_bytes=widest_load(loads))
        if shared > SMEM_PER_BLOCK[arch]:
            raise RuntimeError(f"needs {shared} bytes of shared memory per block, more than the "
                               f"{SMEM_PER_BLOCK[arch]} sm_{arch} allows: cannot launch")
    except Exception as exc:  # noqa: BLE001 -- every failure belongs in the report
        row["error"] = one_line(exc)
    row["compile_s"] = round(time.perf_counter() - start, 2)
    return row


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------

def _compile_star(args) -> dict:
    return compile_variant(*args)


def compile_report(arch, jobs: int = 2,
                   variants: Optional[Iterable[KernelVariant]] = None) -> List[dict]:
    """One row per variant (default: :func:`config_variants`) compiled for ``arch``, each
    distinct compilation done once, with ``jobs`` worker processes (1: in this process)."""
    if INTERPRETING:
        raise RuntimeError("compile_report needs a process without TRITON_INTERPRET; run "
                           "`python -m fastconv.bench.compile_report`, which re-executes itself")
    arch = _arch_number(arch)
    variants = list(config_variants(arch) if variants is None else variants)
    unique = {}
    for v in variants:
        unique.setdefault(v.key(), v)
    if jobs <= 1:
        done = {k: compile_variant(v, arch) for k, v in unique.items()}
    else:
        # spawn: a fresh interpreter per worker, not a fork of a process with torch's threads
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            futures = {k: pool.submit(_compile_star, (v, arch)) for k, v in unique.items()}
            done = {}
            for k, fut in futures.items():
                try:
                    done[k] = fut.result()
                except Exception as exc:  # noqa: BLE001 -- e.g. a worker killed for memory
                    done[k] = dict(dict.fromkeys(ROW_FIELDS, ""), arch=f"sm_{arch}",
                                   error=one_line(exc))
    # the compiled columns of the variant's compilation, the labels of the variant itself
    return [dict(done[v.key()], **v.describe()) for v in variants]


def first_call_summary(rows: List[dict], variants: List[KernelVariant]) -> str:
    """How many variants the first call of a layer's pass compiles (its distinct launches,
    candidates included), and their cold compile time: the largest and the mean over passes,
    and the whole set's distinct variants (what one process compiles for all the layers)."""
    passes: dict = {}
    for row, v in zip(rows, variants):
        key = (row["case"], row["pass"], row["dtype"], row["layout"])
        passes.setdefault(key, {})[v.key()] = float(row["compile_s"] or 0)
    counts = [len(p) for p in passes.values()]
    seconds = [sum(p.values()) for p in passes.values()]
    unique = {v.key(): float(r["compile_s"] or 0) for r, v in zip(rows, variants)}
    return (f"first call of a pass: {max(counts)} variants at most, {sum(counts) / len(counts):.1f}"
            f" on average, {max(seconds):.1f} s at most and {sum(seconds) / len(seconds):.1f} s on "
            f"average of cold compiles ({len(passes)} passes); all of them: {len(unique)} "
            f"distinct variants, {sum(unique.values()):.0f} s of compiles")


def is_failure(row: dict) -> bool:
    """A row that must not ship: a compile error or register spills."""
    return bool(row["error"]) or (row["stack"] not in ("", None) and int(row["stack"]) > 0)


def write_csv(rows: List[dict], path: str) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=ROW_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def print_table(rows: List[dict], wide: bool = False) -> None:
    """The rows as a table, failures in red; within 120 columns unless ``wide`` (flags and
    load widths too)."""
    from rich.console import Console
    from rich.table import Table

    cases = any(r["case"] for r in rows)
    table = Table(title=f"fastconv launches compiled for {rows[0]['arch'] if rows else ''}")
    columns = (["case", "pass", "layout"] if cases else []) + \
        ["kernel", "dtype", "tile", "warps", "stages"] + (["flags"] if wide else []) + \
        ["regs", "stack", "smem KB", "tensor cores", "load B"] + \
        (["loads"] if wide else []) + ["error"]
    for col in columns:
        table.add_column(col, overflow="fold")
    for r in rows:
        on = " ".join(f.split("=")[0] for f in r["flags"].split() if f.endswith("=1"))
        smem = f'{r["shared"] / 1024:.1f}' if r["shared"] != "" else ""
        cells = dict(case=r["case"], layout=r["layout"],
                     kernel=r["kernel"].replace("_kernel", "").replace("conv2d_", ""),
                     dtype=r["dtype"], tile=r["tile"], warps=str(r["num_warps"]),
                     stages=str(r["num_stages"]), flags=on or "-", regs=str(r["registers"]),
                     stack=str(r["stack"]), tensor_cores=r["tensor_cores"] or "-",
                     loads=r["global_loads"], error=r["error"][:120 if wide else 30])
        cells.update({"pass": r["pass"], "smem KB": smem, "tensor cores": cells["tensor_cores"],
                      "load B": str(r["load_bytes"])})
        table.add_row(*(cells[c] for c in columns), style="red" if is_failure(r) else None)
    console = Console()
    if not console.is_terminal:  # piped or captured: the width the table was made for
        console = Console(width=200 if wide else 120)
    console.print(table)


def reexec_without_interpreter(module: str, argv: List[str]) -> int:
    """Run ``python -m module *argv`` without TRITON_INTERPRET; its exit status."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run([sys.executable, "-m", module, *argv], env=env).returncode


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", default="sm_90", choices=ARCHS)
    parser.add_argument("--csv", help="also write the rows to this CSV file")
    parser.add_argument("--jobs", type=int, default=2, help="compiler processes (default 2)")
    parser.add_argument("--wide", action="store_true", help="flags and load widths in the table")
    parser.add_argument("--table", choices=["rows", "none"], default="rows",
                        help="print every row (default) or only the summary")
    parser.add_argument("--no-tf32", action="store_true",
                        help="float32 as with torch.backends.cudnn.allow_tf32 = False")
    parser.add_argument("--cases", action="store_true",
                        help="the launches of the benchmark cases (each pass, dtype and "
                             "layout) instead of every config; the filters below select them")
    parser.add_argument("--models", nargs="+", help="model groups to keep (e.g. resnet50 "
                        "depthwise conv1d conv_transpose2d roi)")
    parser.add_argument("--ops", nargs="+", help="ops to keep (conv2d conv1d conv_transpose2d "
                        "roi_align roi_pool)")
    parser.add_argument("--batches", nargs="+", type=int, help="batch sizes to keep")
    parser.add_argument("--match", help="keep cases whose name contains this")
    parser.add_argument("--dtypes", nargs="+", choices=["float16", "bfloat16", "float32"])
    parser.add_argument("--layouts", nargs="+", choices=list(C.LAYOUTS))
    parser.add_argument("--passes", nargs="+", choices=CONV_PASSES + ROI_PASSES)
    parser.add_argument("--first-call", choices=["tuned", "untuned"],
                        help="with --cases: what the first call of each conv2d layer compiles "
                             "(its plan, and with 'tuned' every autotune candidate), into an "
                             "empty Triton cache, and how long that takes on this CPU")


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m fastconv.bench.compile_report`` (see :func:`add_arguments`): 0 when every
    launch compiled without spills, 1 otherwise, 2 when no case matches the filters."""
    from fastconv.ops.target import planning_for

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m fastconv.bench.compile_report",
        description="Compile fastconv's launches for a GPU architecture (no GPU needed) and "
                    "report compile errors, registers, spills, tensor cores and load widths.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    if INTERPRETING:
        # @triton.jit already returned interpreted functions in this process: start afresh
        return reexec_without_interpreter("fastconv.bench.compile_report", argv)
    start = time.perf_counter()
    if args.no_tf32:
        torch.backends.cudnn.allow_tf32 = False  # this process's switch, as a user sets it
    with planning_for(args.arch):
        if args.cases:
            selected = C.select(C.all_cases(), models=args.models, ops=args.ops,
                                batches=args.batches, match=args.match)
            if not selected:
                print("no benchmark case matches the filters", file=sys.stderr)
                return 2
            dtypes = tuple(getattr(torch, d) for d in args.dtypes) if args.dtypes \
                else C.DTYPES
            if args.first_call:
                variants = first_call_variants(selected, dtypes, tuple(args.layouts or
                                                                       C.LAYOUTS),
                                               tuned=args.first_call == "tuned")
                # an empty cache: each variant's compile_s is a cold compile
                os.environ["TRITON_CACHE_DIR"] = tempfile.mkdtemp(prefix="fastconv-first-")
            else:
                variants = case_variants(selected, dtypes, tuple(args.layouts or C.LAYOUTS),
                                         args.passes)
        else:
            variants = config_variants(args.arch)
    rows = compile_report(args.arch, jobs=args.jobs, variants=variants)
    if args.table == "rows":
        print_table(rows, wide=args.wide)
    if args.csv:
        write_csv(rows, args.csv)
    for r in rows:
        if is_failure(r):
            print(f'FAILED {r["case"]} {r["pass"]} {r["kernel"]} {r["dtype"]} {r["tile"]}: '
                  f'{r["error"] or str(r["stack"]) + " bytes of stack"}', file=sys.stderr)
    if args.first_call:
        print(first_call_summary(rows, variants))
    print(f"{len(rows)} launches ({len({v.key() for v in variants})} distinct) compiled for "
          f"{args.arch} in {time.perf_counter() - start:.0f} s; "
          f"{sum(bool(r['error']) for r in rows)} errors, "
          f"{sum(r['stack'] != '' and int(r['stack']) > 0 for r in rows)} with spills")
    return 1 if any(is_failure(r) for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
