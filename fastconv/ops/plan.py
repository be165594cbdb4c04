"""The dispatch plan: which kernel family and which tile config run a convolution.

All rules live here, in one place, so that they can be read, tested and explained
(``fastconv.explain``).

| direction | family          | when                                                                |
|-----------|-----------------|---------------------------------------------------------------------|
| any       | direct          | the channels the GEMM would reduce over (or, for wgrad, both channel |
|           |                 | counts) are fewer than 16 per group: tl.dot needs a reduction >= 16; |
|           |                 | depthwise convolutions land here                                    |
| any       | gemm_1x1        | otherwise, for a 1x1 kernel with stride 1 and padding 0 whose        |
|           |                 | tensors' spatial axes flatten (NCHW or channels_last): a plain GEMM  |
|           |                 | over pixels, no per-tap index arithmetic                            |
| any       | implicit_gemm   | otherwise (strided 1x1 included); wgrad splits N*P*Q into partial   |
|           |                 | sums added in a fixed order                                         |

On a GPU the config is one of ``fastconv.kernels.configs`` (every entry compiled and spill-checked
by the tests, through CONFIG_TABLES below): the largest tile whose grid still gives every SM a
program, else the one with the most programs. Under the interpreter blocks are sized to the
problem, because every program step costs milliseconds there.
"""
import contextlib
from dataclasses import dataclass, field
from typing import Tuple

import torch
import triton

from fastconv import kernels
from fastconv.kernels.configs import (DIRECT_CONFIGS, GEMM_1X1_CONFIGS, GEMM_1X1_CONFIGS_INT64,
                                      GEMM_CONFIGS, GEMM_CONFIGS_INT64, TileConfig)
from fastconv.ops._runtime import INTERPRETING

THIN = 16  # smallest reduction tl.dot accepts
_SM_COUNT_DEFAULT = 132  # an H100 SXM; used when no device can be asked

FAMILIES = ("implicit_gemm", "gemm_1x1", "direct")

# family -> [(config table, the INDEX_64 values its configs are launched with)]. The plan reads
# its configs from here and the compile check compiles exactly these, so they cannot drift.
CONFIG_TABLES = {
    "implicit_gemm": [(GEMM_CONFIGS, (False,)), (GEMM_CONFIGS_INT64, (True,))],
    "gemm_1x1": [(GEMM_1X1_CONFIGS, (False,)), (GEMM_1X1_CONFIGS_INT64, (True,))],
    "direct": [(DIRECT_CONFIGS, (False, True))],
}


@dataclass(frozen=True)
class ConvProblem:
    """A conv2d described by shapes and arguments only (what the plan may depend on)."""
    N: int
    C: int
    H: int
    W: int
    K: int
    P: int
    Q: int
    R: int
    S: int
    groups: int
    dtype: torch.dtype
    stride: Tuple[int, int] = (1, 1)
    padding: Tuple[int, int] = (0, 0)
    dilation: Tuple[int, int] = (1, 1)

    @property
    def CG(self) -> int:
        return self.C // self.groups

    @property
    def KG(self) -> int:
        return self.K // self.groups

    @property
    def pointwise(self) -> bool:
        """A 1x1 kernel with no stride or padding over equal pixel grids: output pixel m reads
        input pixel m. (The grids can differ: a transposed 1x1 with output_padding is larger.)"""
        return (self.R, self.S) == (1, 1) and tuple(self.stride) == (1, 1) \
            and tuple(self.padding) == (0, 0) and (self.P, self.Q) == (self.H, self.W)


@dataclass(frozen=True)
class Plan:
    direction: str       # "fprop" | "dgrad" | "wgrad"
    family: str          # one of FAMILIES
    kernel: object = field(repr=False)
    config: TileConfig
    split: int           # wgrad: number of partial sums over N*P*Q (1 otherwise)
    reason: str
    index_64: bool = False  # 64-bit element offsets (some tensor has >= 2**31 elements)

    @property
    def kernel_name(self) -> str:
        return self.kernel.fn.__name__ if hasattr(self.kernel, "fn") else self.kernel.__name__


_KERNELS = {
    ("fprop", "implicit_gemm"): kernels.conv2d_fprop_igemm_kernel,
    ("dgrad", "implicit_gemm"): kernels.conv2d_dgrad_igemm_kernel,
    ("wgrad", "implicit_gemm"): kernels.conv2d_wgrad_igemm_kernel,
    ("fprop", "gemm_1x1"): kernels.conv2d_1x1_gemm_kernel,
    ("dgrad", "gemm_1x1"): kernels.conv2d_1x1_gemm_kernel,
    ("wgrad", "gemm_1x1"): kernels.conv2d_1x1_wgrad_kernel,
    ("fprop", "direct"): kernels.conv2d_fprop_direct_kernel,
    ("dgrad", "direct"): kernels.conv2d_dgrad_direct_kernel,
    ("wgrad", "direct"): kernels.conv2d_wgrad_direct_kernel,
}


def dtype_class(dtype: torch.dtype) -> str:
    return {torch.float16: "16", torch.bfloat16: "16", torch.float32: "32",
            torch.float64: "64"}[dtype]


def config_table(family: str, index_64: bool) -> dict:
    """The config table a GPU launch of ``family`` reads (see CONFIG_TABLES)."""
    return next(table for table, values in CONFIG_TABLES[family] if index_64 in values)


def spatially_flat(t: torch.Tensor) -> bool:
    """Whether the H and W axes of a 4-D tensor flatten into one (stride_h == W * stride_w)."""
    return t.shape[2] == 1 or t.shape[3] == 1 or t.stride(2) == t.shape[3] * t.stride(3)


def _pow2_clamp(x: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, triton.next_power_of_2(max(int(x), 1))))


def _family(direction: str, pb: ConvProblem, flat: bool) -> tuple:
    if direction == "fprop":
        thin = pb.CG < THIN
        why = f"{pb.CG} input channels per group"
    elif direction == "dgrad":
        thin = pb.KG < THIN
        why = f"{pb.KG} output channels per group"
    else:
        thin = pb.CG < THIN and pb.KG < THIN
        why = f"{pb.CG} input and {pb.KG} output channels per group"
    if thin:
        depthwise = " (depthwise)" if pb.CG == 1 and pb.groups == pb.C else ""
        return "direct", (f"{why} < {THIN}{depthwise}: tl.dot needs a reduction of at least "
                          f"{THIN}, so a sliding window over channels-vectorised tiles")
    if pb.pointwise and flat:
        return "gemm_1x1", (f"{why}; 1x1 kernel, stride 1, padding 0 and flattenable pixels: "
                            "a plain GEMM over N*H*W pixels")
    if pb.pointwise:
        why += "; 1x1 but the tensors' H and W axes do not flatten"
    return "implicit_gemm", f"{why}: a tensor-core GEMM with the taps gathered on the fly"


def gemm_dims(direction: str, pb: ConvProblem) -> tuple:
    """(rows, cols, reduction) of the GEMM a family computes per group."""
    if direction == "fprop":
        return pb.N * pb.P * pb.Q, pb.KG, pb.CG * pb.R * pb.S
    if direction == "dgrad":
        return pb.N * pb.H * pb.W, pb.CG, pb.KG * pb.R * pb.S
    return pb.KG, pb.R * pb.S * pb.CG, pb.N * pb.P * pb.Q


def _gpu_config(configs: list, rows: int, cols: int, programs, sms: int) -> TileConfig:
    """The first config (largest tile first) that the problem fills and whose grid gives every
    SM a program; if none of those does, the one of them with the most programs.

    A big tile reuses more of each load, but a grid with fewer programs than SMs leaves SMs
    idle, which no reuse makes up for (batch-1 layers, late 7x7 stages). A problem smaller than
    every tile gets the smallest.

    Args:
        programs: ``config -> programs`` of the launch with that config.
    """
    fitting = [cfg for cfg in configs if cfg.block_m <= triton.next_power_of_2(rows)
               and cfg.block_n <= triton.next_power_of_2(cols)]
    if not fitting:
        return configs[-1]
    for cfg in fitting:
        if programs(cfg) >= sms:
            return cfg
    return max(fitting, key=programs)  # the first (largest tile) of equals


# Under the interpreter a program step costs milliseconds whatever its size, so blocks are
# sized to the problem, up to this scale: 1 gives tiles of at most 128 (256 for the direct
# family's pixels), which keeps the kernel tests' shapes spread over several tiles; whole-model
# runs raise it (see interpreter_block_scale) for up to 16x fewer steps on wide layers.
_INTERPRETER_BLOCK_SCALE = 1


@contextlib.contextmanager
def interpreter_block_scale(scale: int):
    """Let the interpreter's blocks grow ``scale`` times larger while the block runs (a power of
    two; no effect on a GPU, whose configs come from the tables)."""
    global _INTERPRETER_BLOCK_SCALE
    if scale < 1 or scale & (scale - 1):
        raise ValueError(f"interpreter_block_scale: scale must be a power of two >= 1, got {scale}")
    saved, _INTERPRETER_BLOCK_SCALE = _INTERPRETER_BLOCK_SCALE, scale
    try:
        yield
    finally:
        _INTERPRETER_BLOCK_SCALE = saved


def _interpreter_config(direction: str, family: str, pb: ConvProblem) -> TileConfig:
    rows, cols, red = gemm_dims(direction, pb)
    x = _INTERPRETER_BLOCK_SCALE
    if family == "direct":
        if direction == "wgrad":
            return TileConfig(_pow2_clamp(red, 16, 512 * x), _pow2_clamp(pb.K, 16, 128 * x),
                              0, 4, 1)
        chans = pb.K if direction == "fprop" else pb.C
        return TileConfig(_pow2_clamp(rows, 16, 256 * x), _pow2_clamp(chans, 16, 128 * x),
                          0, 4, 1)
    if direction == "wgrad":
        return TileConfig(_pow2_clamp(rows, 16, 128 * x), _pow2_clamp(cols, 16, 128 * x),
                          _pow2_clamp(red, 16, 256 * x), 4, 1)
    # the reduction block covers one tap's channels (implicit GEMM) or all of them (1x1)
    chans = pb.CG if direction == "fprop" else pb.KG
    return TileConfig(_pow2_clamp(rows, 16, 128 * x), _pow2_clamp(cols, 16, 128 * x),
                      _pow2_clamp(chans, 16, 128 * x), 4, 1)


def _sm_count(device) -> int:
    if device is not None and torch.device(device).type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return _SM_COUNT_DEFAULT


def pixel_tiles(direction: str, family: str, pb: ConvProblem, cfg: TileConfig) -> int:
    """Programs of a fprop or dgrad launch (one grid axis): pixel tiles by channel tiles, per
    group; the direct kernels tile all channels at once."""
    rows, cols, _ = gemm_dims(direction, pb)
    if family == "direct":
        chans = pb.C if direction == "dgrad" else pb.K
        return triton.cdiv(rows, cfg.block_m) * triton.cdiv(chans, cfg.block_n)
    return triton.cdiv(rows, cfg.block_m) * triton.cdiv(cols, cfg.block_n) * pb.groups


def wgrad_tiles(family: str, pb: ConvProblem, cfg: TileConfig) -> int:
    """Programs of one split of a wgrad launch (grid axis 0)."""
    if family == "direct":
        return triton.cdiv(pb.K, cfg.block_n) * pb.CG * pb.R * pb.S
    cols = pb.CG if family == "gemm_1x1" else pb.R * pb.S * pb.CG
    return triton.cdiv(pb.KG, cfg.block_m) * triton.cdiv(cols, cfg.block_n) * pb.groups


def wgrad_split(family: str, pb: ConvProblem, cfg: TileConfig, device) -> int:
    """Enough partial sums that the grid covers the GPU twice over, each at least 4 steps long."""
    if INTERPRETING:
        return 1
    red = pb.N * pb.P * pb.Q
    step = cfg.block_m if family == "direct" else cfg.block_k
    want = triton.cdiv(2 * _sm_count(device), max(wgrad_tiles(family, pb, cfg), 1))
    # the workspace [split, K, CG, R, S] stays under 2**31 elements, so it never forces int64
    fits_int32 = (2**31 - 1) // max(pb.K * pb.CG * pb.R * pb.S, 1)
    return max(1, min(want, triton.cdiv(red, 4 * step), 1024, fits_int32))


def plan_conv2d(direction: str, pb: ConvProblem, device=None, index_64: bool = False,
                flat: bool = True) -> Plan:
    """Choose the kernel family and config for one direction of a conv2d problem.

    Args:
        direction: "fprop", "dgrad" or "wgrad".
        pb: the problem's shapes and arguments.
        device: where it runs (its SM count sizes the wgrad split).
        index_64: some tensor needs 64-bit offsets; those launches take smaller tiles, since
            64-bit index arithmetic holds more registers.
        flat: the tensors this direction reads and writes have flattenable H, W axes (see
            ``spatially_flat``), which the 1x1 GEMM needs.
    """
    family, reason = _family(direction, pb, flat)
    if INTERPRETING:
        cfg = _interpreter_config(direction, family, pb)
    else:
        rows, cols, _ = gemm_dims(direction, pb)
        if family == "direct":
            cols = pb.C if direction == "dgrad" else pb.K
        configs = config_table(family, index_64)[direction][dtype_class(pb.dtype)]

        def programs(cfg):
            if direction == "wgrad":
                return wgrad_tiles(family, pb, cfg) * wgrad_split(family, pb, cfg, device)
            return pixel_tiles(direction, family, pb, cfg)
        cfg = _gpu_config(configs, rows, cols, programs, _sm_count(device))
    split = wgrad_split(family, pb, cfg, device) if direction == "wgrad" else 1
    return Plan(direction, family, _KERNELS[(direction, family)], cfg, split, reason, index_64)
