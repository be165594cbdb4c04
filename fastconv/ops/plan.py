"""The dispatch plan: which kernel family and which tile config run a convolution.

All rules live here, in one place, so that they can be read, tested and explained.

| direction | family          | when                                                              |
|-----------|-----------------|-------------------------------------------------------------------|
| fprop     | direct          | input channels per group < 16 (tl.dot needs a reduction >= 16)     |
| fprop     | implicit_gemm   | otherwise                                                         |
| dgrad     | direct          | output channels per group < 16 (the reduction of dgrad)           |
| dgrad     | implicit_gemm   | otherwise                                                         |
| wgrad     | direct          | both channel counts per group < 16 (the GEMM tile would be empty) |
| wgrad     | implicit_gemm   | otherwise; split-K over N*P*Q, partials summed in a fixed order   |

On a GPU the config is one of ``fastconv.kernels.configs`` (all compiled and spill-checked by the
tests); under the interpreter blocks are sized to the problem, because every program step costs
milliseconds there.
"""
from dataclasses import dataclass, field

import torch
import triton

from fastconv import kernels
from fastconv.kernels.configs import DIRECT_CONFIGS, GEMM_CONFIGS, GEMM_CONFIGS_INT64, TileConfig
from fastconv.ops._runtime import INTERPRETING

THIN = 16  # smallest reduction tl.dot accepts
_SM_COUNT_DEFAULT = 132  # an H100 SXM; used when no device can be asked


@dataclass(frozen=True)
class ConvProblem:
    """A conv2d described by shapes only (what the plan may depend on)."""
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

    @property
    def CG(self) -> int:
        return self.C // self.groups

    @property
    def KG(self) -> int:
        return self.K // self.groups


@dataclass(frozen=True)
class Plan:
    direction: str       # "fprop" | "dgrad" | "wgrad"
    family: str          # "implicit_gemm" | "direct"
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
    ("fprop", "direct"): kernels.conv2d_fprop_direct_kernel,
    ("dgrad", "direct"): kernels.conv2d_dgrad_direct_kernel,
    ("wgrad", "direct"): kernels.conv2d_wgrad_direct_kernel,
}


def dtype_class(dtype: torch.dtype) -> str:
    return {torch.float16: "16", torch.bfloat16: "16", torch.float32: "32",
            torch.float64: "64"}[dtype]


def _pow2_clamp(x: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, triton.next_power_of_2(max(int(x), 1))))


def _family(direction: str, pb: ConvProblem) -> tuple:
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
        return "direct", f"{why} < {THIN}: tl.dot needs a reduction of at least {THIN}"
    return "implicit_gemm", f"{why}: enough for a tensor-core GEMM tile"


def _gemm_dims(direction: str, pb: ConvProblem) -> tuple:
    """(rows, cols, reduction) of the GEMM a family computes per group."""
    if direction == "fprop":
        return pb.N * pb.P * pb.Q, pb.KG, pb.CG
    if direction == "dgrad":
        return pb.N * pb.H * pb.W, pb.CG, pb.KG
    return pb.KG, pb.R * pb.S * pb.CG, pb.N * pb.P * pb.Q


def _gpu_config(configs: list, rows: int, cols: int) -> TileConfig:
    for cfg in configs:
        if cfg.block_m <= triton.next_power_of_2(rows) and cfg.block_n <= triton.next_power_of_2(cols):
            return cfg
    return configs[-1]


def _interpreter_config(direction: str, family: str, pb: ConvProblem) -> TileConfig:
    rows, cols, red = _gemm_dims(direction, pb)
    if family == "direct":
        if direction == "wgrad":
            return TileConfig(_pow2_clamp(red, 16, 512), _pow2_clamp(pb.K, 16, 128), 0, 4, 1)
        chans = pb.K if direction == "fprop" else pb.C
        return TileConfig(_pow2_clamp(rows, 16, 256), _pow2_clamp(chans, 16, 128), 0, 4, 1)
    if direction == "wgrad":
        return TileConfig(_pow2_clamp(rows, 16, 128), _pow2_clamp(cols, 16, 128),
                          _pow2_clamp(red, 16, 256), 4, 1)
    return TileConfig(_pow2_clamp(rows, 16, 128), _pow2_clamp(cols, 16, 128),
                      _pow2_clamp(red, 16, 128), 4, 1)


def _sm_count(device: torch.device) -> int:
    if device is not None and device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return _SM_COUNT_DEFAULT


def _wgrad_split(family: str, pb: ConvProblem, cfg: TileConfig, device) -> int:
    """Enough partial sums that the grid covers the GPU twice over, each at least 4 steps long."""
    if INTERPRETING:
        return 1
    red = pb.N * pb.P * pb.Q
    step = cfg.block_m if family == "direct" else cfg.block_k
    if family == "direct":
        tiles = triton.cdiv(pb.K, cfg.block_n) * pb.CG * pb.R * pb.S
    else:
        tiles = (triton.cdiv(pb.KG, cfg.block_m) * triton.cdiv(pb.R * pb.S * pb.CG, cfg.block_n)
                 * pb.groups)
    want = triton.cdiv(2 * _sm_count(device), max(tiles, 1))
    # the workspace [split, K, CG, R, S] stays under 2**31 elements, so it never forces int64
    fits_int32 = (2**31 - 1) // max(pb.K * pb.CG * pb.R * pb.S, 1)
    return max(1, min(want, triton.cdiv(red, 4 * step), 1024, fits_int32))


def plan_conv2d(direction: str, pb: ConvProblem, device=None, index_64: bool = False) -> Plan:
    """Choose the kernel family and config for one direction of a conv2d problem.

    ``index_64`` says that some tensor needs 64-bit offsets; 64-bit index arithmetic holds more
    registers, so those launches take smaller tiles (still spill-free).
    """
    family, reason = _family(direction, pb)
    if INTERPRETING:
        cfg = _interpreter_config(direction, family, pb)
    else:
        table = DIRECT_CONFIGS if family == "direct" else (
            GEMM_CONFIGS_INT64 if index_64 else GEMM_CONFIGS)
        rows, cols, _ = _gemm_dims(direction, pb)
        if family == "direct":
            cols = pb.K if direction != "dgrad" else pb.C
        cfg = _gpu_config(table[direction][dtype_class(pb.dtype)], rows, cols)
    split = _wgrad_split(family, pb, cfg, device) if direction == "wgrad" else 1
    return Plan(direction, family, _KERNELS[(direction, family)], cfg, split, reason, index_64)
