"""Static GPU compile check: every kernel variant the dispatcher can launch, built for a real GPU.

The tests run the kernels through Triton's interpreter, which never generates GPU code, so a tile
config that spills registers, overflows shared memory or misses the tensor cores would only show
on a GPU. Triton ships ptxas and cuobjdump, so the real PTX and cubin can be built and inspected on
any machine: this module compiles every (kernel, dtype, tile config, flag) combination that
``fastconv.conv.plan.plan_conv2d`` may choose on a GPU (the split-K variants and their reduction
included) and reports registers, spills (stack bytes), shared memory, tensor-core instructions,
the width of the global loads and the theoretical occupancy.

These variants are generic: every integer argument is a plain i32/i64, as if no launch told
Triton more. A real launch specialises on its arguments (an integer equal to 1 becomes a
constant, one divisible by 16 is marked so, as are 16-byte-aligned pointers), and only then can
Triton prove the contiguity and alignment that vectorised loads need. The per-case report
(:mod:`fastconv.bench.case_report`) compiles each benchmark case's launch with that
specialisation (:func:`variant_of_launch`); the load widths here are the unspecialised floor.

    python -m fastconv.bench.compile_report --arch sm_90 --csv sm90.csv

exits non-zero when a variant fails to compile, spills, or needs more shared memory than a block
may have. It must run without TRITON_INTERPRET (the interpreter replaces ``@triton.jit`` before
anything can be compiled); ``main`` re-executes itself without it when needed.
"""
import argparse
import csv
import functools
import inspect
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import Iterable, Iterator, List, Optional

import torch
import triton

from fastconv import kernels
from fastconv.kernels.configs import TileConfig
from fastconv.conv import launch as conv2d_launch
from fastconv.ops._runtime import INTERPRETING
from fastconv.conv.plan import KERNELS, CONFIG_TABLES, Plan, dtype_class

# Every dtype the dispatcher accepts; the plan keys its config tables by dtype_class().
DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

# how the report's rows name the split-K reduction, which serves fprop and dgrad alike
SPLIT_REDUCE_DIRECTION = "split_reduce"
SPLIT_REDUCE_FAMILY = "split_k"

_TRITON_DTYPE = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32",
                 torch.float64: "fp64"}

# The launcher reports these in its meta dict, but they are launch options, not constexprs.
_LAUNCH_OPTIONS = ("num_warps", "num_stages", "maxnreg")

ROW_FIELDS = ("kernel", "direction", "family", "dtype", "block_m", "block_n", "block_k",
              "num_warps", "num_stages", "flags", "arch", "registers", "stack", "shared",
              "tensor_cores", "global_loads", "load_bytes", "occupancy_warps",
              "occupancy_limit", "compile_s", "error")


@dataclass(frozen=True)
class SmLimits:
    """Per-SM resources that bound occupancy (CUDA C Programming Guide, compute capabilities)."""
    registers: int = 65536
    max_warps: int = 64
    max_blocks: int = 32
    reg_granularity: int = 256      # registers are allocated per warp in units of 256
    smem_per_sm: int = 0
    smem_per_block: int = 0         # the most one block may use (static + dynamic)
    smem_reserved: int = 1024       # the driver keeps 1 KB per resident block (sm_80 and newer)
    smem_granularity: int = 128


SM_LIMITS = {
    80: SmLimits(smem_per_sm=164 * 1024, smem_per_block=163 * 1024),
    90: SmLimits(smem_per_sm=228 * 1024, smem_per_block=227 * 1024),
}


@dataclass
class KernelVariant:
    """One compilation: a kernel with its argument types, constexprs and launch options.

    Holds the kernel by name so that a variant pickles into a worker process.
    """
    kernel_name: str
    direction: str
    family: str
    dtype: torch.dtype
    config: TileConfig
    signature: dict = field(repr=False)   # {arg_name: "*fp16" | "i32" | "i64" | "constexpr"}
    constexprs: dict = field(repr=False)  # {constexpr_name: value}
    # arguments a launch marks divisible by 16 (tt.divisibility): see variant_of_launch
    divisible_16: tuple = field(default=(), repr=False)

    @property
    def kernel(self):
        return getattr(kernels, self.kernel_name)

    @property
    def num_warps(self) -> int:
        return self.config.num_warps

    @property
    def num_stages(self) -> int:
        return self.config.num_stages

    @property
    def flags(self) -> dict:
        """The boolean constexprs (everything but the tile sizes)."""
        return {k: v for k, v in self.constexprs.items() if isinstance(v, bool)}

    def key(self) -> tuple:
        """Everything that makes two variants compile to different code (hashable)."""
        return (self.kernel_name, str(self.dtype), self.config,
                tuple(self.signature.items()), tuple(self.constexprs.items()),
                tuple(sorted(self.divisible_16)))

    def describe(self) -> dict:
        """The columns of a report row that identify this variant."""
        cfg = self.config
        return {
            "kernel": self.kernel_name, "direction": self.direction, "family": self.family,
            "dtype": str(self.dtype).replace("torch.", ""),
            "block_m": cfg.block_m, "block_n": cfg.block_n, "block_k": cfg.block_k,
            "num_warps": cfg.num_warps, "num_stages": cfg.num_stages,
            "flags": " ".join(f"{k}={int(v)}" for k, v in self.flags.items()),
        }


# --------------------------------------------------------------------------------------------
# Enumerating what the dispatcher can launch
# --------------------------------------------------------------------------------------------

def _constexpr_names(kernel) -> list:
    """Names of the kernel's ``tl.constexpr`` parameters, in declaration order.

    Read from the annotations of the Python function, which both a JITFunction and the
    interpreter's InterpretedFunction wrap, so that the variants can also be listed from an
    interpreting process (the tests do).
    """
    params = inspect.signature(kernel.fn).parameters
    names = []
    for name in kernel.arg_names:
        ann = params[name].annotation
        if ann is triton.language.constexpr or (isinstance(ann, str) and "constexpr" in ann):
            names.append(name)
    return names


def _signature(kernel, dtype: torch.dtype, index_64: bool, part_is_output: bool = False) -> dict:
    """Triton argument types, as the launch in ``fastconv.conv.launch`` passes them.

    Tensors are of the problem's dtype, except the split-K workspace ``part_ptr``, which the
    launcher allocates in the accumulator dtype (an unsplit fprop or dgrad, ``part_is_output``,
    passes its output there instead, never touched). Integer arguments are all widened together
    with INDEX_64 (a real launch would only widen those >= 2**31; this is the worst case).
    """
    constexprs = set(_constexpr_names(kernel))
    acc = "*fp64" if dtype == torch.float64 else "*fp32"
    sig = {}
    for name in kernel.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name == "part_ptr" and not part_is_output:
            sig[name] = acc
        elif name.endswith("_ptr"):
            sig[name] = "*" + _TRITON_DTYPE[dtype]
        else:
            sig[name] = "i64" if index_64 else "i32"
    return sig


def _launcher_meta(direction: str, family: str, dtype: torch.dtype, config: TileConfig,
                   index_64: bool, allow_tf32: bool, split: int = 1) -> dict:
    """The meta dict the real launcher builds for this plan (constexprs and launch options).

    Asking ``conv2d_launch._meta`` keeps the TileConfig -> BLOCK_* mapping and the dtype flags
    (INDEX_64 and SPLIT_K from the plan included) in one place. It reads
    ``torch.backends.cudnn.allow_tf32`` the way a launch does, so both values are tried here.
    """
    plan = Plan(direction, family, KERNELS[(direction, family)], config, split,
                "compile report", index_64)
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = allow_tf32
    try:
        return conv2d_launch._meta(plan, dtype)
    finally:
        torch.backends.cudnn.allow_tf32 = saved


def variants_for(direction: str, family: str, dtype: torch.dtype, config: TileConfig,
                 index_64_values=(False, True)) -> Iterator[KernelVariant]:
    """Every flag combination a GPU launch of one (direction, family, dtype, config) can use.

    Also usable with a TileConfig that is not (yet) in ``fastconv.kernels.configs``, to try an
    alternative before proposing it.

    Args:
        index_64_values: the INDEX_64 values (64-bit offsets) to build.
    """
    kernel = KERNELS[(direction, family)]
    name = kernel.fn.__name__
    expected = set(_constexpr_names(kernel))
    # fprop and dgrad GEMMs may split their reduction (any config: the plan splits after
    # choosing the tile); a split launch leaves the bias to the reduction, so HAS_BIAS is False
    splits = (1, 2) if "SPLIT_K" in expected else (1,)
    seen = []
    for split in splits:
        biases = ((False, True) if split == 1 else (False,)) if "HAS_BIAS" in expected \
            else (None,)
        for index_64 in index_64_values:
            for allow_tf32 in (False, True):
                base = _launcher_meta(direction, family, dtype, config, index_64, allow_tf32,
                                      split)
                # DOT_IN_FP32 works around an interpreter bug; the launcher sets it only when
                # this process interprets, which says nothing about a GPU launch.
                if "DOT_IN_FP32" in base:
                    base["DOT_IN_FP32"] = False
                # conv2d_fprop adds HAS_BIAS after _meta; mirror it for the kernels that take it
                for has_bias in biases:
                    meta = dict(base)
                    if has_bias is not None:
                        meta["HAS_BIAS"] = has_bias
                    constexprs = {k: v for k, v in meta.items() if k not in _LAUNCH_OPTIONS}
                    if set(constexprs) != expected:
                        raise ValueError(
                            f"{name}: the launcher passes constexprs {sorted(constexprs)} but "
                            f"the kernel declares {sorted(expected)}; a launch would fail")
                    # kernel declaration order, so rows and flag strings read like the signature
                    constexprs = {k: constexprs[k] for k in _constexpr_names(kernel)}
                    if constexprs in seen:  # ALLOW_TF32 only matters for float32 GEMMs
                        continue
                    seen.append(constexprs)
                    yield KernelVariant(name, direction, family, dtype, config,
                                        _signature(kernel, dtype, index_64,
                                                   part_is_output="SPLIT_K" in expected
                                                   and split == 1),
                                        constexprs)


def conv_variants() -> Iterator[KernelVariant]:
    """Every convolution variant ``plan_conv2d`` can choose on a GPU: all configs, dtypes and
    flag values.

    The plan takes the first config of its list that the problem fills and the last one
    otherwise, so every entry of the tables in ``plan.CONFIG_TABLES`` is reachable; those
    tables are the ones the plan reads, so the report cannot miss one.
    """
    for (direction, family) in KERNELS:
        for dtype in DTYPES:
            for table, index_64_values in CONFIG_TABLES[family]:
                for config in table[direction][dtype_class(dtype)]:
                    yield from variants_for(direction, family, dtype, config, index_64_values)


def split_reduce_variants() -> Iterator[KernelVariant]:
    """Every variant of the split-K reduction a GPU launch can use: its one config, every
    dtype, 32- and 64-bit offsets, with and without a bias (the other epilogue switches are
    runtime values)."""
    from fastconv.kernels.configs import SPLIT_REDUCE_CONFIG

    kernel = kernels.conv2d_split_reduce_kernel
    name = kernel.fn.__name__
    declared = _constexpr_names(kernel)
    for dtype in DTYPES:
        for index_64 in (False, True):
            for has_bias in (False, True):
                meta = conv2d_launch._reduce_meta(SPLIT_REDUCE_CONFIG, has_bias, index_64)
                constexprs = {k: v for k, v in meta.items() if k not in _LAUNCH_OPTIONS}
                if set(constexprs) != set(declared):
                    raise ValueError(
                        f"{name}: the launcher passes constexprs {sorted(constexprs)} but the "
                        f"kernel declares {sorted(declared)}; a launch would fail")
                yield KernelVariant(name, SPLIT_REDUCE_DIRECTION, SPLIT_REDUCE_FAMILY, dtype,
                                    SPLIT_REDUCE_CONFIG, _signature(kernel, dtype, index_64),
                                    {k: constexprs[k] for k in declared})


# (kernel, direction, ROI_CONFIGS entry): what ``fastconv.roi.launch`` launches
_ROI_KERNELS = (
    (kernels.roi_align_fwd_kernel, "forward", "tile"),
    (kernels.roi_align_bwd_kernel, "backward", "tile"),
    (kernels.roi_align_bwd_ordered_kernel, "backward_ordered", "ordered"),
    (kernels.roi_pool_fwd_kernel, "forward", "tile"),
    (kernels.roi_pool_bwd_kernel, "backward", "tile"),
    (kernels.roi_pool_bwd_ordered_kernel, "backward_ordered", "ordered"),
)


def _roi_signature(kernel, dtype: torch.dtype, index_64: bool) -> dict:
    """Argument types as ``roi_launch`` passes them: the gradient buffer ``dx_ptr`` and the
    spatial scale in the compute type (float32, float64 for float64), argmax as int32."""
    sig = _signature(kernel, dtype, index_64)
    compute = "*fp64" if dtype == torch.float64 else "*fp32"
    for name in sig:
        if name == "scale_ptr" or (name == "dx_ptr" and "_bwd" in kernel.fn.__name__):
            sig[name] = compute
        elif name == "argmax_ptr":
            sig[name] = "*i32"
    return sig


def roi_variants() -> Iterator[KernelVariant]:
    """Every RoIAlign / RoIPool variant a GPU launch can use: each kernel with each tile of
    ``ROI_CONFIGS`` it may get, every dtype, 32- and 64-bit offsets, aligned or not."""
    from fastconv.kernels.configs import ROI_CONFIGS
    from fastconv.roi import launch as roi_launch

    for kernel, direction, table in _ROI_KERNELS:
        name = kernel.fn.__name__
        family = name.split("_")[0] + "_" + name.split("_")[1]  # roi_align / roi_pool
        declared = _constexpr_names(kernel)
        for dtype in DTYPES:
            for config in ROI_CONFIGS[table]:
                for index_64 in (False, True):
                    meta = roi_launch._meta(config, dtype, index_64, ordered=table == "ordered",
                                            vec=1 if "VEC" in declared else None)
                    for aligned in ((False, True) if "ALIGNED" in declared else (None,)):
                        if aligned is not None:
                            meta["ALIGNED"] = aligned
                        constexprs = {k: meta[k] for k in declared}
                        if set(meta) - set(_LAUNCH_OPTIONS) != set(declared):
                            raise ValueError(
                                f"{name}: the launcher passes constexprs "
                                f"{sorted(set(meta) - set(_LAUNCH_OPTIONS))} but the kernel "
                                f"declares {sorted(declared)}; a launch would fail")
                        yield KernelVariant(name, direction, family, dtype, config,
                                            _roi_signature(kernel, dtype, index_64), constexprs)


def kernel_variants() -> Iterator[KernelVariant]:
    """Every kernel variant fastconv can launch on a GPU: convolutions, the split-K reduction,
    then RoI ops."""
    yield from conv_variants()
    yield from split_reduce_variants()
    yield from roi_variants()


@functools.lru_cache(maxsize=None)
def _binder(kernel, arch: int) -> tuple:
    """(backend, argument binder) of a kernel for ``sm_<arch>``, as a launch builds them."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    backend = make_backend(GPUTarget("cuda", arch, 32))
    return backend, create_function_from_signature(kernel.signature, kernel.params, backend)


def variant_of_launch(launch, direction: str, family: str, dtype: torch.dtype,
                      config: TileConfig, arch=90) -> KernelVariant:
    """The variant a real launch compiles: specialised on its arguments as Triton's JIT does.

    ``launch`` is a ``fastconv.conv.launch.KernelLaunch`` (kernel, grid, arguments, meta)
    built from tensors on any device; the meta device will do, its data pointers are 0, as
    aligned as a fresh CUDA allocation. Triton's own argument binder for the target decides the
    specialisation (integers equal to 1 become constants, integers divisible by 16 and
    16-byte-aligned pointers get ``tt.divisibility``, values >= 2**31 widen to i64), so this
    cannot drift from what a launch compiles. Those are internals of ``triton.runtime.jit``
    (``create_function_from_signature``, ``JITFunction._pack_args``, triton 3.8).

    Args:
        launch: the launch to describe.
        direction, family, config: the plan behind it (for the report's columns).
        dtype: the problem's dtype.
        arch: compute capability of the target.
    """
    from triton.runtime.jit import JITFunction

    kernel = launch.kernel
    if not isinstance(kernel, JITFunction):
        raise RuntimeError("the kernels are interpreted in this process (TRITON_INTERPRET is "
                           "set): a launch cannot be specialised for a GPU")
    backend, binder = _binder(kernel, _arch_number(arch))
    bound, specialization, options = binder(*launch.args, **launch.meta)
    _, signature, constexprs, attrs = kernel._pack_args(backend, dict(launch.meta), bound,
                                                        specialization, options)
    names = kernel.arg_names
    constexprs = {names[path[0]]: value for path, value in constexprs.items()}
    divisible = tuple(names[path[0]] for path, values in attrs.items()
                      if ["tt.divisibility", 16] in values)
    return KernelVariant(kernel.fn.__name__, direction, family, dtype, config, signature,
                         constexprs, divisible)


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


def _global_loads(ptx: str) -> dict:
    """Global-memory load instructions in the PTX, by kind: {"tma" | "cp.async" | "ld": sorted
    widths in bytes, widest first}. ``ld.global.v4.b32`` is 16 bytes, ``ld.global.b16`` 2;
    cp.async carries its copy size (4, 8 or 16); a TMA copy (``cp.async.bulk.tensor``) moves a
    whole tile and is listed without a width."""
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


def _widest_load(loads: dict) -> int:
    """Bytes of the widest global load (a TMA tile counts as 16, the widest per-thread load)."""
    widths = [w for v in loads.values() for w in v] + ([16] if "tma" in loads else [])
    return max(widths, default=0)


def _tensor_core_ops(ptx: str) -> str:
    """Which tensor-core instructions the PTX uses: "wgmma", "mma", both, or "" for none."""
    found = []
    if "wgmma.mma_async" in ptx:
        found.append("wgmma")
    if re.search(r"^\s*(@%p\d+\s+)?mma\.sync", ptx, re.MULTILINE):
        found.append("mma")
    return "+".join(found)


def occupancy(arch: int, registers: int, shared: int, num_warps: int) -> tuple:
    """Theoretical resident warps per SM, and the resource that limits them.

    blocks = min(max_blocks,
                 registers_per_sm // (ceil(registers * 32 / 256) * 256 * num_warps),
                 smem_per_sm // ceil_128(shared + 1 KB reserved),
                 max_warps // num_warps)
    warps  = blocks * num_warps            (of 64 on sm_80 / sm_90)
    with 65536 registers, 64 warps and 32 blocks per SM on both, and 164 KB (sm_80) / 228 KB
    (sm_90) of shared memory per SM. A block needing more shared memory than the per-block limit
    (163 KB / 227 KB) cannot launch at all: 0 warps.
    """
    lim = SM_LIMITS[arch]
    if shared > lim.smem_per_block:
        return 0, "shared"
    regs_per_warp = math.ceil(max(registers, 1) * 32 / lim.reg_granularity) * lim.reg_granularity
    smem_per_block = math.ceil((shared + lim.smem_reserved) / lim.smem_granularity) \
        * lim.smem_granularity
    limits = {
        "blocks": lim.max_blocks,
        "registers": lim.registers // (regs_per_warp * num_warps),
        "shared": lim.smem_per_sm // smem_per_block,
        "warps": lim.max_warps // num_warps,
    }
    which = min(limits, key=lambda k: limits[k])
    return limits[which] * num_warps, which


def one_line(exc: BaseException, limit: int = 600) -> str:
    """An exception as one line of at most ``limit`` characters: a report row's error."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[:limit] + " ..."


def compile_variant(variant: KernelVariant, arch) -> dict:
    """Compile one variant for ``sm_<arch>`` and describe the result as a report row.

    A failure (compile error, ptxas error, missing tool) is recorded in the row's ``error``
    column instead of raised, so that one bad variant does not hide the others.

    Args:
        variant: what to compile (see :func:`kernel_variants`).
        arch: compute capability, e.g. ``90``, ``80`` or ``"sm_90"``.

    Returns:
        dict with the keys of ``ROW_FIELDS``; ``shared`` is static (cuobjdump) plus dynamic
        (Triton's allocation) bytes per block, ``stack`` the spill stack in bytes.
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
        compiled = triton.compile(
            ASTSource(kernel, variant.signature, variant.constexprs, attrs),
            target=GPUTarget("cuda", arch, 32),
            options={"num_warps": variant.num_warps, "num_stages": variant.num_stages,
                     **({"maxnreg": variant.config.max_registers}
                        if variant.config.max_registers else {})})
        usage = resource_usage(compiled.asm["cubin"])
        # Triton's shared memory is dynamic (absent from the cubin); cuobjdump shows the static
        # part only (e.g. 1 KB on sm_90). A launch needs both.
        shared = usage["SHARED"] + int(compiled.metadata.shared)
        warps, limit = occupancy(arch, usage["REG"], shared, variant.num_warps)
        loads = _global_loads(compiled.asm["ptx"])
        row.update(registers=usage["REG"], stack=usage["STACK"], shared=shared,
                   tensor_cores=_tensor_core_ops(compiled.asm["ptx"]),
                   global_loads=format_loads(loads), load_bytes=_widest_load(loads),
                   occupancy_warps=warps, occupancy_limit=limit)
        if warps == 0:
            raise RuntimeError(f"needs {shared} bytes of shared memory per block, more than the "
                               f"{SM_LIMITS[arch].smem_per_block} sm_{arch} allows: cannot launch")
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
    """Compile every variant for one architecture.

    Args:
        arch: compute capability (``90``, ``80`` or ``"sm_90"``).
        jobs: worker processes; 1 compiles in this process.
        variants: what to compile; all of :func:`kernel_variants` by default.

    Returns:
        one row (see :func:`compile_variant`) per variant, in the order of ``variants``.
    """
    if INTERPRETING:
        raise RuntimeError("compile_report needs a process without TRITON_INTERPRET; run "
                           "`python -m fastconv.bench.compile_report`, which re-executes itself")
    arch = _arch_number(arch)
    if arch not in SM_LIMITS:
        raise ValueError(f"sm_{arch}: occupancy limits known for {sorted(SM_LIMITS)} only")
    if variants is None:
        variants = kernel_variants()
    variants = list(variants)
    if jobs <= 1:
        return [compile_variant(v, arch) for v in variants]
    # spawn: a fresh interpreter per worker, not a fork of a process with torch's threads in it
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_compile_star, (v, arch)) for v in variants]
        rows = []
        for v, fut in zip(variants, futures):
            try:
                rows.append(fut.result())
            except Exception as exc:  # noqa: BLE001 -- e.g. a worker killed by the OOM killer
                row = dict.fromkeys(ROW_FIELDS, "")
                row.update(v.describe(), arch=f"sm_{arch}", error=one_line(exc))
                rows.append(row)
    return rows


def is_failure(row: dict) -> bool:
    """A row that must not ship: a compile error or register spills."""
    return bool(row["error"]) or (row["stack"] not in ("", None) and int(row["stack"]) > 0)


def write_csv(rows: List[dict], path: str) -> None:
    """Write the rows with a header of ``ROW_FIELDS``."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=ROW_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


# the default table's columns (120 terminal columns); --wide adds the rest, the CSV has all
_WIDE_ONLY = ("flags", "loads (bytes)", "occupancy")


def print_table(rows: List[dict], wide: bool = False) -> None:
    """Print the rows as a rich table, failures in red: within 120 columns unless ``wide``."""
    from rich.console import Console
    from rich.table import Table

    arch = rows[0]["arch"] if rows else ""
    table = Table(title=f"fastconv kernels compiled for {arch}", show_lines=False)
    columns = [("kernel", "left"), ("dtype", "left"), ("tile MxNxK", "right"),
               ("warps", "right"), ("stages", "right"), ("flags", "left"), ("regs", "right"),
               ("stack", "right"), ("smem KB", "right"), ("tensor cores", "left"),
               ("loads (bytes)", "left"), ("occupancy", "right"), ("error", "left")]
    keep = [wide or col not in _WIDE_ONLY for col, _ in columns]
    for (col, justify), shown in zip(columns, keep):
        if shown:
            table.add_column(col, justify=justify, overflow="fold")
    for r in rows:
        on = [f.split("=")[0] for f in r["flags"].split() if f.endswith("=1")]
        tile = f'{r["block_m"]}x{r["block_n"]}' + (f'x{r["block_k"]}' if r["block_k"] else "")
        occ = f'{r["occupancy_warps"]}/64 ({r["occupancy_limit"]})' \
            if r["occupancy_warps"] != "" else ""
        smem = f'{r["shared"] / 1024:.1f}' if r["shared"] != "" else ""
        cells = [r["kernel"].replace("_kernel", "").replace("conv2d_", ""), r["dtype"], tile,
                 str(r["num_warps"]), str(r["num_stages"]), " ".join(on) or "-",
                 str(r["registers"]), str(r["stack"]), smem, r["tensor_cores"] or "-",
                 r["global_loads"], occ, r["error"][:120 if wide else 30]]
        table.add_row(*[c for c, shown in zip(cells, keep) if shown],
                      style="red" if is_failure(r) else None)
    console = Console()
    if not console.is_terminal:  # piped or captured: the width the table was made for
        console = Console(width=200 if wide else 120)
    console.print(table)


def reexec_without_interpreter(module: str, argv: List[str]) -> int:
    """Run ``python -m module *argv`` in a child without TRITON_INTERPRET and return its exit
    status: where the interpreter has already replaced ``@triton.jit``, nothing compiles."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    cmd = [sys.executable, "-m", module, *argv]
    return subprocess.run(cmd, env=env).returncode


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m fastconv.bench.compile_report --arch sm_90 [--csv FILE] [--jobs N]``.

    Returns:
        0 when every variant compiled without spills, 1 otherwise.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m fastconv.bench.compile_report",
        description="Compile every fastconv kernel variant for a GPU architecture and report "
                    "registers, spills, shared memory, tensor-core use and occupancy.")
    parser.add_argument("--arch", default="sm_90", choices=[f"sm_{a}" for a in sorted(SM_LIMITS)])
    parser.add_argument("--csv", help="also write the rows to this CSV file")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--wide", action="store_true",
                        help="every column in the table (flags, load widths, occupancy)")
    args = parser.parse_args(argv)
    if INTERPRETING:
        # @triton.jit already returned interpreted functions in this process: start afresh
        return reexec_without_interpreter("fastconv.bench.compile_report", argv)

    start = time.perf_counter()
    rows = compile_report(args.arch, jobs=args.jobs)
    print_table(rows, wide=args.wide)
    if args.csv:
        write_csv(rows, args.csv)
    failures = [r for r in rows if is_failure(r)]
    print(f"{len(rows)} variants compiled for {args.arch} in {time.perf_counter() - start:.0f} s; "
          f"{sum(bool(r['error']) for r in rows)} errors, "
          f"{sum(r['stack'] != '' and int(r['stack']) > 0 for r in rows)} with spills")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
