"""The dispatch plan: which kernel family and which tile config run a convolution.

All rules live here, in one place, so that they can be read, tested and explained
(``fastconv.explain``).

| direction | family          | when                                                                |
|-----------|-----------------|---------------------------------------------------------------------|
| fprop     | stem            | fewer than 16 input channels, groups == 1 and R*S*C >= 16 (the 7x7  |
|           |                 | and 3x3 stems over 3-channel images): an implicit GEMM reducing     |
|           |                 | over the flat (r, s, c) index, so one tl.dot step spans several     |
|           |                 | taps (147 = 7*7*3 in 5 steps of 32) instead of 16 channels per tap  |
| any       | direct          | otherwise, the channels the GEMM would reduce over (or, for wgrad,  |
|           |                 | both channel counts) are fewer than 16 per group: tl.dot needs a    |
|           |                 | reduction >= 16; depthwise and thin-group convolutions land here,   |
|           |                 | and windows of fewer than 16 taps*channels (a 1x1 over 3 channels)  |
| any       | gemm_1x1        | otherwise, for a 1x1 kernel with stride 1 and padding 0 whose        |
|           |                 | tensors' spatial axes flatten (NCHW or channels_last): a plain GEMM  |
|           |                 | over pixels, no per-tap index arithmetic                            |
| any       | implicit_gemm   | otherwise (strided 1x1 included); wgrad splits N*P*Q into partial   |
|           |                 | sums added in a fixed order                                         |

| direction   | split-K (``Plan.split``; the direct fprop and dgrad never split)                |
|-------------|---------------------------------------------------------------------------------|
| wgrad       | the reduction over N*P*Q, until the grid covers the SMs twice (``wgrad_split``; |
|             | the direct kernel's in ranges of spatial tiles, its partial sums added by the   |
|             | split-K reduction kernel)                                                       |
| fprop/dgrad | the reduction over C*R*S (K*R*S) only when the output tiles are fewer than the  |
|             | SMs (batch 1, late 7x7 stages): the fewest splits that give every SM a program, |
|             | each at least MIN_SPLIT_STEPS reduction steps, at most MAX_SPLIT_K              |
|             | (``gemm_split``); a second kernel adds the partial sums in a fixed order and    |
|             | runs the epilogue                                                               |
| TMA         | the same rules over the TMA kernels' steps (``tma_steps``), for the TMA tile    |
|             | whose split gives every SM a program with the fewest ranges (``tma_plan``); a   |
|             | group of fewer than 64 channels on the accumulator's channel side takes the     |
|             | narrow orientation (``narrow_tma_config``)                                      |

Every split keeps its workspace under 2**31 elements, so it never forces 64-bit offsets, and
adds its partial sums in a fixed order: bitwise reproducible, no atomics.

On a GPU the config is one of ``fastconv.kernels.configs`` (every entry compiled and spill-checked
by the tests, through CONFIG_TABLES below): the largest tile whose grid still gives every SM a
program, else the one with the most programs, whose split then fills what it left idle; tiles
of fewer than SMALL_TILE outputs only where the split cannot (``_gpu_config``), and split into
ranges of LAST_RESORT_SPLIT_STEPS only where even they leave SMs idle (``split_for``).
Under the interpreter blocks are sized to the problem, because every program step costs
milliseconds there, and the split-K is the target's (``Target.split_k``: 1 unless a test plans
for an interpreter target that splits).
"""
from dataclasses import dataclass, field
from typing import Tuple

import torch
import triton

from fastconv import kernels
from fastconv.kernels.configs import (DIRECT_CONFIGS, GEMM_1X1_CONFIGS, GEMM_1X1_CONFIGS_INT64,
                                      GEMM_CONFIGS, GEMM_CONFIGS_INT64, SMALL_TILE,
                                      SPLIT_REDUCE_CONFIG, STEM_CONFIGS, STEM_CONFIGS_INT64,
                                      TMA_CONFIGS, TMA_DGRAD_CONFIGS, TMA_NARROW_CONFIGS,
                                      TMA_PERSISTENT_CONFIGS, TMA_WGRAD_CONFIGS, TileConfig)
from fastconv.ops.target import named_target, sm_count, target_of, target_settings

THIN = 16  # smallest reduction tl.dot accepts
# fprop/dgrad split-K: a split shorter than this many reduction steps spends more on its
# partial sum's round trip through memory than it gains; and each split adds an output-sized
# fp32 tile of the workspace that the reduction pass reads back, hence a cap
MIN_SPLIT_STEPS = 4
MAX_SPLIT_K = 16
# ... except for a small tile that still leaves SMs idle, the plan's last resort (split_for)
LAST_RESORT_SPLIT_STEPS = 2
# A reduction of fewer steps than this is never split, whatever SMs it leaves idle: its loop
# takes about as long as the second launch (the partial sums' reduction) takes to start, so a
# split only adds a launch, a workspace and, on the eager path, a few us of host time. (Tiny
# layers: 3x3 over 16 channels is 9 steps; a batch-1 3x3 layer over 64 channels, 18.)
MIN_STEPS_TO_SPLIT = 16

FAMILIES = ("implicit_gemm", "gemm_1x1", "stem", "direct")
# Every direction on Hopper's tensor memory accelerator: both operands by TMA, 128x128 and
# 128x256 tiles, narrow ones for narrow groups (kernels/conv2d_{fprop,dgrad,wgrad}_tma.py).
# Chosen by ``tma_plan`` where a call can take it; not in CONFIG_TABLES, whose entries the
# compile report builds for sm_90 and sm_80 alike.
TMA_FAMILY = "implicit_gemm_tma"

# family -> [(config table, the INDEX_64 values its configs are launched with)]. The plan reads
# its configs from here and the compile check compiles exactly these, so they cannot drift.
CONFIG_TABLES = {
    "implicit_gemm": [(GEMM_CONFIGS, (False,)), (GEMM_CONFIGS_INT64, (True,))],
    "gemm_1x1": [(GEMM_1X1_CONFIGS, (False,)), (GEMM_1X1_CONFIGS_INT64, (True,))],
    "stem": [(STEM_CONFIGS, (False,)), (STEM_CONFIGS_INT64, (True,))],
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
    split: int           # split-K: partial sums over the reduction (1: not split)
    reason: str
    index_64: bool = False  # 64-bit element offsets (some tensor has >= 2**31 elements)

    @property
    def kernel_name(self) -> str:
        return self.kernel.fn.__name__ if hasattr(self.kernel, "fn") else self.kernel.__name__


# (direction, family) -> the kernel a plan launches; the compile report builds each of them
KERNELS = {
    ("fprop", "implicit_gemm"): kernels.conv2d_fprop_igemm_kernel,
    ("dgrad", "implicit_gemm"): kernels.conv2d_dgrad_igemm_kernel,
    ("wgrad", "implicit_gemm"): kernels.conv2d_wgrad_igemm_kernel,
    ("fprop", "gemm_1x1"): kernels.conv2d_1x1_gemm_kernel,
    ("dgrad", "gemm_1x1"): kernels.conv2d_1x1_gemm_kernel,
    ("wgrad", "gemm_1x1"): kernels.conv2d_1x1_wgrad_kernel,
    ("fprop", "stem"): kernels.conv2d_fprop_stem_kernel,
    ("fprop", "direct"): kernels.conv2d_fprop_direct_kernel,
    ("dgrad", "direct"): kernels.conv2d_dgrad_direct_kernel,
    ("wgrad", "direct"): kernels.conv2d_wgrad_direct_kernel,
}


# direction -> the TMA kernel of the family TMA_FAMILY
TMA_KERNELS = {"fprop": kernels.conv2d_fprop_tma_kernel, "dgrad": kernels.conv2d_dgrad_tma_kernel,
               "wgrad": kernels.conv2d_wgrad_tma_kernel}


def dtype_class(dtype: torch.dtype) -> str:
    return {torch.float16: "16", torch.bfloat16: "16", torch.float32: "32",
            torch.float64: "64"}[dtype]


def config_table(family: str, index_64: bool) -> dict:
    """The config table a GPU launch of ``family`` reads (see CONFIG_TABLES)."""
    if family == TMA_FAMILY:
        # the forward's tiles, the narrow-group tiles, then the persistent variants of both
        # (the autotuner's candidates); the input gradient's tiles and the narrow ones
        fprop = {cls: TMA_CONFIGS[cls] + TMA_NARROW_CONFIGS[cls] + TMA_PERSISTENT_CONFIGS[cls]
                 for cls in TMA_CONFIGS}
        dgrad = {cls: TMA_DGRAD_CONFIGS[cls] + TMA_NARROW_CONFIGS[cls]
                 for cls in TMA_DGRAD_CONFIGS}
        return {"fprop": fprop, "dgrad": dgrad, "wgrad": TMA_WGRAD_CONFIGS}
    return next(table for table, values in CONFIG_TABLES[family] if index_64 in values)


def kernel_of(direction: str, family: str):
    """The kernel a plan of ``family`` launches in ``direction``."""
    if family == TMA_FAMILY:
        return TMA_KERNELS[direction]
    return KERNELS[(direction, family)]


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
    if thin and direction == "fprop" and pb.groups == 1 and pb.R * pb.S * pb.CG >= THIN:
        return "stem", (f"{why} < {THIN}, but {pb.R}x{pb.S} taps x {pb.CG} = "
                        f"{pb.R * pb.S * pb.CG} >= {THIN}: a tensor-core GEMM reducing over "
                        "the flat (r, s, c) index, taps and channels packed along K")
    if thin:
        depthwise = " (depthwise)" if pb.CG == 1 and pb.groups == pb.C else ""
        if direction == "fprop" and pb.groups == 1:  # the stem's rule, above, left it here
            why += f" and {pb.R}x{pb.S} taps x {pb.CG} = {pb.R * pb.S * pb.CG}"
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


def _gpu_config(configs: list, rows: int, cols: int, programs, sms: int,
                split=None, last_resort=None) -> TileConfig:
    """The tile of a GPU launch, from ``configs`` (largest first):

    1. the first tile of at least SMALL_TILE outputs that the problem fills and whose grid gives
       every SM a program;
    2. else, of those tiles, the one with the most programs, if its grid does so once the plan
       splits its reduction;
    3. else the first small tile whose grid, split, does so; else the first whose grid does
       with the last resort's shorter split (``last_resort``); else the most programs, split
       included (the tile of step 2 on a tie).

    A big tile reuses more of each load, but a grid with fewer programs than SMs leaves SMs
    idle, which no reuse makes up for (batch-1 layers, late 7x7 stages). Split-K keeps a 32x32
    tile's reuse; the small tiles are for what it cannot fill: short reductions, and the
    direct and weight-gradient launches whose split is already counted in ``programs``. A
    problem narrower than every tile chooses between the smallest large tile and the small
    ones by the same rule.

    Args:
        programs: ``config -> programs`` of the launch with that config, unsplit.
        split: ``config -> split-K`` the plan would give that config (None: ``programs`` is all).
        last_resort: ``config -> programs`` of a small tile's launch, all splits, with the
            split ``split_for`` gives a small tile that leaves SMs idle (None: no such split).
    """
    def fits(cfg):
        return cfg.block_m <= triton.next_power_of_2(rows) and \
            cfg.block_n <= triton.next_power_of_2(cols)

    def total(cfg):
        return programs(cfg) * (split(cfg) if split is not None else 1)
    large = [cfg for cfg in configs if cfg.block_m * cfg.block_n >= SMALL_TILE]
    small = [cfg for cfg in configs if cfg.block_m * cfg.block_n < SMALL_TILE]
    if not any(fits(cfg) for cfg in configs):
        large = large[-1:]  # the smallest large tile (or a small one if it leaves SMs idle)
    else:
        large, small = [c for c in large if fits(c)], [c for c in small if fits(c)]
    for cfg in large:
        if programs(cfg) >= sms:
            return cfg
    best = [max(large, key=programs)] if large else []  # the first (largest tile) of equals
    if best and total(best[0]) >= sms:
        return best[0]
    for cfg in small:
        if total(cfg) >= sms:
            return cfg
    for cfg in small if last_resort is not None else []:
        if last_resort(cfg) >= sms:
            return cfg
    return max(best + small, key=total)


# Under the interpreter a program step costs milliseconds whatever its size, so blocks are
# sized to the problem, up to the target's block_scale times: 1 gives tiles of at most 128 (256
# for the direct family's pixels), which keeps the kernel tests' shapes spread over several
# tiles; whole-model runs plan for an interpreter target with a larger scale.
def _interpreter_config(direction: str, family: str, pb: ConvProblem,
                        x: int = 1) -> TileConfig:
    """A tile sized to the problem, at most ``x`` (the target's block_scale) times the
    kernel tests' largest."""
    rows, cols, red = gemm_dims(direction, pb)
    if family == "direct":
        if direction == "wgrad":  # spatial tiles of one image, as the forward's
            return TileConfig(_pow2_clamp(pb.P * pb.Q, 16, 256 * x),
                              _pow2_clamp(pb.K, 16, 128 * x), 0, 4, 1)
        chans = pb.K if direction == "fprop" else pb.C
        return TileConfig(_pow2_clamp(rows, 16, 256 * x), _pow2_clamp(chans, 16, 128 * x),
                          0, 4, 1)
    if direction == "wgrad":
        return TileConfig(_pow2_clamp(rows, 16, 128 * x), _pow2_clamp(cols, 16, 128 * x),
                          _pow2_clamp(red, 16, 256 * x), 4, 1)
    if family == "stem":  # the flat (r, s, c) reduction, a few steps of it (as on a GPU)
        return TileConfig(_pow2_clamp(rows, 16, 128 * x), _pow2_clamp(cols, 16, 128 * x),
                          _pow2_clamp(red, 16, 64 * x), 4, 1)
    # the reduction block covers one tap's channels (implicit GEMM) or all of them (1x1)
    chans = pb.CG if direction == "fprop" else pb.KG
    return TileConfig(_pow2_clamp(rows, 16, 128 * x), _pow2_clamp(cols, 16, 128 * x),
                      _pow2_clamp(chans, 16, 128 * x), 4, 1)


def _interpreting(device=None) -> bool:
    return target_of(device).interpreter


def settings() -> tuple:
    """What a convolution plan reads besides its problem and device: the target
    (``planning_for``). Part of every cached call's key."""
    return target_settings()


def direct_tile(block_m: int, width: int) -> Tuple[int, int]:
    """(BLOCK_H, BLOCK_W): the spatial tile of ``block_m`` pixels (a power of two) that a direct
    fprop or dgrad program owns in an image ``width`` pixels wide. As square as ``block_m``
    allows (16: 4x4, 64: 8x8, 8: 2x4), which reads the fewest halo pixels per output pixel, but
    no wider than the image's next power of two (a 1-wide image: block_m x 1)."""
    bw = 1 << ((block_m.bit_length() - 1 + 1) // 2)
    bw = max(1, min(bw, triton.next_power_of_2(max(width, 1)), block_m))
    return block_m // bw, bw


def direct_extent(direction: str, pb: ConvProblem) -> Tuple[int, int]:
    """(height, width) of the pixels a direct fprop or dgrad launch writes: the output's (P, Q),
    or the input's (H, W) for the input gradient."""
    return (pb.H, pb.W) if direction == "dgrad" else (pb.P, pb.Q)


def _phase_taps(offset: int, dil: int, stride: int, taps: int) -> int:
    """Taps r in [0, taps) with (offset - r*dil) divisible by ``stride`` (kernels' phase_taps)."""
    return sum(1 for r in range(taps) if (offset - r * dil) % stride == 0)


def dgrad_phases(pb: ConvProblem) -> Tuple[int, int, int]:
    """(stride phases, rows of the largest, taps of the one with the most) of the implicit-GEMM
    input gradient, which runs each stride phase's pixels through that phase's taps only."""
    (sh, sw), (ph, pw), (dh, dw) = pb.stride, pb.padding, pb.dilation
    rows = pb.N * triton.cdiv(pb.H, sh) * triton.cdiv(pb.W, sw)
    taps = max(_phase_taps(p + ph, dh, sh, pb.R) for p in range(sh)) * \
        max(_phase_taps(q + pw, dw, sw, pb.S) for q in range(sw))
    return sh * sw, rows, taps


def pixel_tiles(direction: str, family: str, pb: ConvProblem, cfg: TileConfig) -> int:
    """Programs of a fprop or dgrad launch (one grid axis): pixel tiles by channel tiles, per
    group; the direct kernels tile all channels at once, and their pixel tiles are spatial
    tiles of one image (``direct_tile``)."""
    if family == TMA_FAMILY:
        return tma_tiles(direction, pb, cfg)
    rows, cols, _ = gemm_dims(direction, pb)
    if family == "direct":
        chans = pb.C if direction == "dgrad" else pb.K
        height, width = direct_extent(direction, pb)
        bh, bw = direct_tile(cfg.block_m, width)
        return pb.N * triton.cdiv(height, bh) * triton.cdiv(width, bw) * \
            triton.cdiv(chans, cfg.block_n)
    if (direction, family) == ("dgrad", "implicit_gemm"):
        phases, rows, _ = dgrad_phases(pb)
        return phases * triton.cdiv(rows, cfg.block_m) * triton.cdiv(cols, cfg.block_n) * \
            pb.groups
    return triton.cdiv(rows, cfg.block_m) * triton.cdiv(cols, cfg.block_n) * pb.groups


# The direct weight gradient accumulates one row per tap ([TAPS, BLOCK_N] in float32): up to
# 7x7 in one program (64 rows, 16 registers a thread at 64x64 on 8 warps); larger windows
# take several programs, each a chunk of taps that reloads the tile's dy.
MAX_DIRECT_WGRAD_TAPS = 64


def direct_wgrad_taps(pb: ConvProblem) -> int:
    """TAPS of a direct weight-gradient launch: the taps one program sums (a power of two)."""
    return min(triton.next_power_of_2(pb.R * pb.S), MAX_DIRECT_WGRAD_TAPS)


def direct_wgrad_tiles(pb: ConvProblem, cfg: TileConfig) -> int:
    """Spatial tiles (``direct_tile``) of the output pixels a direct weight gradient reduces
    over: what its splits divide."""
    bh, bw = direct_tile(cfg.block_m, pb.Q)
    return pb.N * triton.cdiv(pb.P, bh) * triton.cdiv(pb.Q, bw)


def wgrad_tiles(family: str, pb: ConvProblem, cfg: TileConfig) -> int:
    """Programs of one split of a wgrad launch (grid axis 0)."""
    if family == "direct":  # channel vectors by input channels of a group by chunks of taps
        return triton.cdiv(pb.K, cfg.block_n) * pb.CG * \
            triton.cdiv(pb.R * pb.S, direct_wgrad_taps(pb))
    if family == TMA_FAMILY:
        return tma_tiles("wgrad", pb, cfg)
    cols = pb.CG if family == "gemm_1x1" else pb.R * pb.S * pb.CG
    return triton.cdiv(pb.KG, cfg.block_m) * triton.cdiv(cols, cfg.block_n) * pb.groups


def launch_tiles(direction: str, family: str, pb: ConvProblem, cfg: TileConfig) -> int:
    """Programs of one split of a launch of ``cfg``: ``wgrad_tiles`` or ``pixel_tiles``."""
    if direction == "wgrad":
        return wgrad_tiles(family, pb, cfg)
    return pixel_tiles(direction, family, pb, cfg)


def reduction_steps(direction: str, family: str, pb: ConvProblem, cfg: TileConfig) -> int:
    """Iterations of the flat reduction loop of a fprop or dgrad GEMM launch: (r, s, channel
    block) for the implicit GEMM, channel blocks for the 1x1 GEMM (R = S = 1), blocks of the
    flat (r, s, c) index for the stem, every stride phase's (tap, channel block) for the TMA
    forward (``pb`` the forward problem it runs)."""
    if family == TMA_FAMILY:
        return tma_steps(direction, pb, cfg)
    if family == "stem":
        return triton.cdiv(pb.R * pb.S * pb.CG, cfg.block_k)
    chans = pb.CG if direction == "fprop" else pb.KG
    if (direction, family) == ("dgrad", "implicit_gemm"):  # the taps of one stride phase
        return dgrad_phases(pb)[2] * triton.cdiv(chans, cfg.block_k)
    return pb.R * pb.S * triton.cdiv(chans, cfg.block_k)


def gemm_split(direction: str, family: str, pb: ConvProblem, cfg: TileConfig, device,
               min_steps: int = MIN_SPLIT_STEPS) -> int:
    """Split-K of a fprop or dgrad GEMM launch: 1 when its tiles already give every SM a
    program; otherwise the smallest split whose grid does, else the largest allowed.

    A split of ``steps`` reduction steps gives each range ``cdiv(steps, split)`` of them (the
    launcher's ITERS_PER_SPLIT; the last range may be shorter). Allowed: ranges of at least
    ``min_steps`` steps, none of them empty, at most MAX_SPLIT_K of them, a workspace under
    2**31 elements.
    """
    if family == "direct" or direction == "wgrad":
        return 1
    tiles = pixel_tiles(direction, family, pb, cfg)
    sms = sm_count(device)
    if tiles >= sms:
        return 1
    steps = reduction_steps(direction, family, pb, cfg)
    if steps < MIN_STEPS_TO_SPLIT:
        return 1
    rows, cols, _ = gemm_dims(direction, pb)
    # the workspace [split, groups, rows, cols] stays under 2**31 elements: no int64 forced
    fits_int32 = (2**31 - 1) // max(rows * cols * pb.groups, 1)
    best = 1
    for split in range(2, min(MAX_SPLIT_K, fits_int32) + 1):
        per_split = triton.cdiv(steps, split)
        if per_split < min_steps:  # and so for every larger split
            break
        if (split - 1) * per_split >= steps:  # the last range would be empty
            continue
        best = split
        if tiles * split >= sms:
            break
    return best


def split_for(direction: str, family: str, pb: ConvProblem, cfg: TileConfig, device) -> int:
    """The split-K of a launch of ``cfg`` (``wgrad_split`` or ``gemm_split``).

    A small tile (fewer than SMALL_TILE outputs) is what the plan takes when nothing else gives
    every SM a program (``_gpu_config``); if its split, ranges of MIN_SPLIT_STEPS steps, still
    does not, it splits down to ranges of LAST_RESORT_SPLIT_STEPS, into the fewest that do. A
    range that short moves as many bytes through the workspace as it reads, but these are
    batch-1 layers of some hundred KB, whose cost is latency: a grid that leaves SMs idle
    runs each program's steps one after the other on fewer SMs.
    """
    def split_of(min_steps, once=False):
        if direction == "wgrad":
            return wgrad_split(family, pb, cfg, device, min_steps, once)
        return gemm_split(direction, family, pb, cfg, device, min_steps)
    split = split_of(MIN_SPLIT_STEPS)
    if family in ("direct", TMA_FAMILY) \
            or cfg.block_m * cfg.block_n >= SMALL_TILE \
            or launch_tiles(direction, family, pb, cfg) * split >= sm_count(device):
        return split
    return max(split, split_of(LAST_RESORT_SPLIT_STEPS, once=True))


def split_reduce_config(direction: str, pb: ConvProblem, device=None) -> TileConfig:
    """The tile of the split-K reduction (``conv2d_split_reduce_kernel``) of a fprop or dgrad
    launch, or of the direct weight gradient: the one compiled config on a GPU; sized to the
    problem under the interpreter."""
    if not _interpreting(device):
        return SPLIT_REDUCE_CONFIG
    rows, cols, _ = gemm_dims(direction, pb)
    if direction == "wgrad":  # the direct weight gradient's: the whole weight
        rows, cols = pb.CG * pb.R * pb.S, pb.K
    x = target_of(device).block_scale
    return TileConfig(_pow2_clamp(rows, 16, 128 * x), _pow2_clamp(cols, 16, 128 * x), 0, 4, 1)


def wgrad_split(family: str, pb: ConvProblem, cfg: TileConfig, device,
                min_steps: int = MIN_SPLIT_STEPS, once: bool = False) -> int:
    """Enough partial sums that the grid covers the GPU twice over (``once``: once), each at
    least ``min_steps`` steps long."""
    # the direct kernel's reduction steps are spatial tiles, the TMA kernel's pixel boxes
    red, step = (direct_wgrad_tiles(pb, cfg), 1) if family == "direct" else \
        (tma_steps("wgrad", pb, cfg), 1) if family == TMA_FAMILY else \
        (pb.N * pb.P * pb.Q, cfg.block_k)
    if triton.cdiv(red, step) < MIN_STEPS_TO_SPLIT:
        return 1
    cover = 1 if once else 2
    want = triton.cdiv(cover * sm_count(device), max(wgrad_tiles(family, pb, cfg), 1))
    # the workspace [split, K, CG, R, S] stays under 2**31 elements, so it never forces int64
    fits_int32 = (2**31 - 1) // max(pb.K * pb.CG * pb.R * pb.S, 1)
    return max(1, min(want, triton.cdiv(red, min_steps * step), 1024, fits_int32))


def plan_conv2d(direction: str, pb: ConvProblem, device=None, index_64: bool = False,
                flat: bool = True) -> Plan:
    """Choose the kernel family and config for one direction of a conv2d problem.

    Args:
        direction: "fprop", "dgrad" or "wgrad".
        pb: the problem's shapes and arguments.
        device: where it runs (its SM count sizes the split-K).
        index_64: some tensor needs 64-bit offsets; those launches take smaller tiles, since
            64-bit index arithmetic holds more registers.
        flat: the tensors this direction reads and writes have flattenable H, W axes (see
            ``spatially_flat``), which the 1x1 GEMM needs.
    """
    family, reason = _family(direction, pb, flat)
    target = target_of(device)
    if target.interpreter:
        cfg = _interpreter_config(direction, family, pb, target.block_scale)
        # a split with more ranges than the reduction has steps leaves some empty
        split = target.wgrad_split_k if direction == "wgrad" else \
            1 if family in ("direct", TMA_FAMILY) else target.split_k
    else:
        rows, cols, red = gemm_dims(direction, pb)
        if family == "direct":  # pixels by all channels; wgrad's pixels are its reduction
            rows, cols = (red, pb.K) if direction == "wgrad" else \
                (rows, pb.C if direction == "dgrad" else pb.K)
        configs = config_table(family, index_64)[direction][dtype_class(pb.dtype)]

        def programs(cfg):
            if direction == "wgrad":
                return wgrad_tiles(family, pb, cfg) * wgrad_split(family, pb, cfg, device)
            return pixel_tiles(direction, family, pb, cfg)

        def split(cfg):
            return gemm_split(direction, family, pb, cfg, device)

        def last_resort(cfg):
            return launch_tiles(direction, family, pb, cfg) * \
                split_for(direction, family, pb, cfg, device)
        cfg = _gpu_config(configs, rows, cols, programs, sm_count(device),
                          None if direction == "wgrad" or family == "direct" else split,
                          None if family == "direct" else last_resort)
        split = split_for(direction, family, pb, cfg, device)
    if family == "direct" and direction == "wgrad":
        reason += (f"; each program sums {direct_wgrad_taps(pb)}-tap rows over spatial tiles, "
                   f"loading a tile's dy and x halo once for all its taps"
                   + (f", in {split} ranges whose partial sums a second kernel adds in a "
                      "fixed order" if split > 1 else ""))
    if (direction, family) == ("dgrad", "implicit_gemm") and tuple(pb.stride) != (1, 1):
        phases, _, taps = dgrad_phases(pb)
        reason += (f"; by stride phase: each of the {phases} phases of the input's pixels "
                   f"loops over its own taps only (at most {taps} of {pb.R * pb.S})")
    if split > 1 and direction != "wgrad":
        steps = reduction_steps(direction, family, pb, cfg)
        why = f"the {target.name} target's" if target.interpreter else \
            f"{pixel_tiles(direction, family, pb, cfg)} output tiles for {sm_count(device)} SMs"
        reason += (f"; split-K {split} ({why}): the {steps} reduction steps run in {split} "
                   "ranges, whose partial sums a second kernel adds in a fixed order")
    return Plan(direction, family, KERNELS[(direction, family)], cfg, split, reason, index_64)


def box_shape(block_m: int, N: int, P: int, Q: int) -> Tuple[int, int, int]:
    """(BN_IMG, BH, BW) of the TMA forward's BLOCK_M-pixel output box: BW 8 or 16 columns, BH
    rows, BN_IMG images, all powers of two; the one that computes the fewest pixels outside
    the N x P x Q output (ties: wider, then fewer images). A 7x7 map gets 2 x 8 x 8 at
    BLOCK_M 128."""
    best = None
    for bw in (16, 8):
        bh = 1
        while bw * bh <= block_m:
            bn = block_m // (bw * bh)
            padded = (triton.cdiv(N, bn) * bn) * (triton.cdiv(P, bh) * bh) \
                * (triton.cdiv(Q, bw) * bw)
            key = (padded, -bw, bn)
            if best is None or key < best[0]:
                best = (key, (bn, bh, bw))
            bh *= 2
    return best[1]


def _tma_boxes(block: int, N: int, P: int, Q: int) -> int:
    """Boxes of ``block`` pixels (``box_shape``) that cover N x P x Q pixels."""
    bn, bh, bw = box_shape(block, N, P, Q)
    return triton.cdiv(N, bn) * triton.cdiv(P, bh) * triton.cdiv(Q, bw)


def tma_tiles(direction: str, pb: ConvProblem, cfg: TileConfig) -> int:
    """Programs of one split of a TMA launch of ``direction`` over the conv2d ``pb`` (its
    unsplit, non-persistent grid), per group: the forward's output boxes by output-channel
    blocks; the input gradient's boxes of one stride phase (sized by the largest, phase
    (0, 0)) by input-channel blocks, for every phase; the weight gradient's taps by
    input-channel blocks by output-channel blocks."""
    if direction == "fprop":
        return pb.groups * _tma_boxes(cfg.block_m, pb.N, pb.P, pb.Q) * \
            triton.cdiv(pb.KG, cfg.block_n)
    if direction == "dgrad":
        (sh, sw) = pb.stride
        hp, wp = triton.cdiv(pb.H, sh), triton.cdiv(pb.W, sw)
        return pb.groups * sh * sw * _tma_boxes(cfg.block_m, pb.N, hp, wp) * \
            triton.cdiv(pb.CG, cfg.block_n)
    return pb.groups * pb.R * pb.S * triton.cdiv(pb.CG, cfg.block_m) * \
        triton.cdiv(pb.KG, cfg.block_n)


def _tma_phase_taps(size: int, R: int, stride: int, pad: int, dil: int) -> list:
    """Taps of each stride phase ph along one axis: those r with ph + pad - r * dil a multiple
    of ``stride`` (``_phase_taps``). For the input gradient, the taps through which phase ph's
    pixels receive; for the forward, the taps whose offset r * dil - pad lies in phase ph (the
    same condition). A phase without pixels (ph >= size) has none: the kernels skip it."""
    return [_phase_taps(ph + pad, dil, stride, R) if ph < size else 0 for ph in range(stride)]


def tma_steps(direction: str, pb: ConvProblem, cfg: TileConfig) -> int:
    """Steps of a TMA launch's reduction: the forward's over every stride phase's (tap, input-
    channel block) in turn; the input gradient's over its largest phase's (tap, output-channel
    block); the weight gradient's over output-pixel boxes (``box_shape`` of block_k pixels)."""
    if direction == "wgrad":
        return _tma_boxes(cfg.block_k, pb.N, pb.P, pb.Q)
    rows = _tma_phase_taps(pb.H, pb.R, pb.stride[0], pb.padding[0], pb.dilation[0])
    cols = _tma_phase_taps(pb.W, pb.S, pb.stride[1], pb.padding[1], pb.dilation[1])
    if direction == "fprop":
        return sum(a * b for a in rows for b in cols) * triton.cdiv(pb.CG, cfg.block_k)
    return max(rows) * max(cols) * triton.cdiv(pb.KG, cfg.block_k)


# A forward's output channels per group (an input gradient's input channels) below this take
# the narrow orientation: wgmma's M, where the wide tiles put them, is 64 rows a warpgroup
NARROW_GROUP = 64


def _tma_channels(direction: str, pb: ConvProblem) -> int:
    """The channels per group on the accumulator's channel side of a forward or input
    gradient: the output channels of the forward, the input channels of the input
    gradient."""
    return pb.KG if direction == "fprop" else pb.CG


def narrow_tma_config(direction: str, pb: ConvProblem) -> "TileConfig | None":
    """The TMA_NARROW_CONFIGS tile of a forward or input gradient whose group has fewer than
    NARROW_GROUP channels on the accumulator's channel side (``_tma_channels``): block_n
    their count to the next power of two, at least 16 (the smallest N of tl.dot); else
    None. The wide tiles would put those channels on wgmma's M, 128 or 256 rows of which a
    group of 8 fills 8: a narrow tile computes [pixels, channels] with the group's channels
    as wgmma's N instead."""
    channels = _tma_channels(direction, pb)
    if direction == "wgrad" or channels >= NARROW_GROUP:
        return None
    width = max(THIN, triton.next_power_of_2(channels))
    return next(cfg for cfg in TMA_NARROW_CONFIGS["16"] if cfg.block_n == width)


def _tma_fits(direction: str, pb: ConvProblem, cfg: TileConfig) -> bool:
    """Whether the layer's channels fill ``cfg``'s channel blocks (to the next power of two):
    the output channels of the forward, the input channels of the input gradient, both of the
    weight gradient."""
    if direction == "fprop":
        return cfg.block_n <= triton.next_power_of_2(pb.KG)
    if direction == "dgrad":
        return cfg.block_n <= triton.next_power_of_2(pb.CG)
    return cfg.block_m <= triton.next_power_of_2(pb.CG) and \
        cfg.block_n <= triton.next_power_of_2(pb.KG)


def tma_dtypes(direction: str) -> tuple:
    """The dtypes the TMA kernel of ``direction`` runs now: 16-bit, and for the forward
    float32 while cuDNN's TF32 switch is on (read at plan time, as the launch's ALLOW_TF32
    is; a call's cache key holds the switch): wgmma multiplies float32 only in TF32, so
    exact float32 keeps the pointer kernels."""
    if direction == "fprop" and torch.backends.cudnn.allow_tf32:
        return (torch.float16, torch.bfloat16, torch.float32)
    return (torch.float16, torch.bfloat16)


def tma_plan(pb: ConvProblem, device, direction: str = "fprop") -> "Plan | None":
    """The plan of the TMA kernel of ``direction`` for the conv2d ``pb``, or None where the
    pointer kernels stay: a dtype the direction's TMA kernel does not run (``tma_dtypes``:
    16-bit, or for the forward float32 with TF32 on, narrow groups excepted); a target
    without TMA; a plan for no device in particular (neither a GPU nor a named target,
    ``planning_for``); a forward the stem kernel takes (8 input channels:
    TMA's smallest, an eighth of its 64-channel steps); or a forward or input gradient whose
    grid leaves SMs idle with every TMA tile, split-K included.

    The tile: the first of the direction's table (largest first) that the layer's channels fill
    (``_tma_fits``; the table's last tile fits everything) and whose grid gives every SM a
    program; else, for the forward and the input gradient, the one whose split-K
    (``gemm_split``) does so with the fewest ranges, the larger tile on a tie (fewer partial
    sums through the workspace). The weight gradient takes the first tile that fits and
    splits its pixel boxes until the grid covers the SMs twice (``wgrad_split``). The plan's
    tile is never the forward's persistent variant (the autotuner may pick it on a GPU).

    A forward whose groups have fewer than NARROW_GROUP output channels, or an input gradient
    whose groups have fewer than NARROW_GROUP input channels, takes the narrow tile instead
    (``narrow_tma_config``: the group's channels as wgmma's N, 16 to 64 wide), split by the
    same rule where its grid leaves SMs idle.

    The caller has checked that the call's tensors can take the kernel."""
    target = target_of(device)
    on_gpu = device is not None and torch.device(device).type == "cuda"
    if pb.dtype not in tma_dtypes(direction) or not target.tma or \
            (named_target() is None and not on_gpu):
        return None
    # the TMA kernel steps tap by tap over 64 channels: 8 channels (the smallest TMA takes)
    # would fill an eighth of each step, where the stem packs the taps along K
    if direction == "fprop" and _family("fprop", pb, True)[0] == "stem":
        return None
    sms = sm_count(device)
    narrow = narrow_tma_config(direction, pb)
    if narrow is not None and pb.dtype == torch.float32:
        return None  # no narrow float32 tiles (kernels/configs.py, TMA_NARROW_CONFIGS)
    table = [cfg for cfg in config_table(TMA_FAMILY, False)[direction][dtype_class(pb.dtype)]
             if not cfg.persistent and not cfg.channels_as_n]
    configs = [narrow] if narrow is not None else \
        [cfg for cfg in table if _tma_fits(direction, pb, cfg) or cfg is table[-1]]
    if direction == "wgrad":
        cfg = configs[0]
        chosen = (cfg, wgrad_split(TMA_FAMILY, pb, cfg, device))
    else:
        chosen = next(((cfg, 1) for cfg in configs if tma_tiles(direction, pb, cfg) >= sms),
                      None)
    if chosen is None:
        splits = [(cfg, gemm_split(direction, TMA_FAMILY, pb, cfg, device)) for cfg in configs]
        filled = [(cfg, split) for cfg, split in splits
                  if tma_tiles(direction, pb, cfg) * split >= sms]
        if not filled:
            return None
        chosen = min(filled, key=lambda c: c[1])  # the first (larger tile) of equals
    cfg, split = chosen
    tiles = tma_tiles(direction, pb, cfg)
    what = {"fprop": f"{pb.CG} input channels per group",
            "dgrad": f"{pb.KG} output channels per group; by stride phase, one dy box per "
                     "tap at any stride",
            "wgrad": f"{pb.CG} input and {pb.KG} output channels per group; a tap and "
                     "channel blocks per program, reducing over output-pixel boxes"}[direction]
    dtype = "float32 in TF32 (torch.backends.cudnn.allow_tf32)" \
        if pb.dtype == torch.float32 else "16-bit"
    reason = (f"{what}, channels_last {dtype} on {target.name}: both operands by TMA, "
              f"{cfg.block_m}x{cfg.block_n}x{cfg.block_k} tiles, {tiles} programs")
    if cfg.channels_as_n:
        side = "output" if direction == "fprop" else "input"
        reason += (f"; narrow groups: {_tma_channels(direction, pb)} {side} channels per group "
                   f"(fewer than {NARROW_GROUP}) as wgmma's N, {cfg.block_n} wide, the pixels "
                   "as its M (accumulator [pixels, channels])")
    if split > 1:
        steps = tma_steps(direction, pb, cfg)
        why = "to cover the SMs twice" if direction == "wgrad" else \
            f"{tiles} output tiles for {sms} SMs"
        reason += (f"; split-K {split} ({why}): the {steps} reduction steps run in {split} "
                   f"ranges ({tiles * split} programs), whose partial sums are added in a "
                   "fixed order")
    return Plan(direction, TMA_FAMILY, kernel_of(direction, TMA_FAMILY), cfg, split, reason)
