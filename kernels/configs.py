"""Tile configurations the dispatcher may choose on a GPU, per kernel family and dtype class.

Every entry here is compiled for sm_90 and sm_80 by the compile check (``fastconv
compile-report``, tests/test_compile_gpu.py), which fails on a compile error or a register
spill; the plan in ``fastconv.conv.plan`` never picks anything else on a GPU. Under the
interpreter the plan sizes blocks to the problem instead (fewer, larger programs).

The lists are what that check measured as spill-free (registers at most 255, stack 0) on both
architectures; larger tiles measured at the time, e.g. 128x128x32 with 8 warps for 16-bit or
64x32x32 for float32, spilled. 64-bit index arithmetic (a tensor with >= 2**31 elements) holds
more registers, so those launches use the smaller GEMM_CONFIGS_INT64 tiles. The per-case report
(``fastconv compile-report --cases --specialise launch``) also compiles each benchmark case's
launches as Triton specialises them on their arguments, which the generic check cannot see
(benchmarks/NOTES.md has what it found).
"""
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class TileConfig:
    block_m: int
    block_n: int
    block_k: int  # 0 for the direct kernels, which have no reduction tile
    num_warps: int
    num_stages: int
    # ptx .maxnreg (0: ptxas's own limit). Without it ptxas caps registers per thread to keep
    # several blocks resident, and would rather spill a few bytes than go past the cap.
    max_registers: int = 0
    # TMA forward only (conv2d_fprop_tma): a persistent grid, about one program per SM, each
    # looping over output tiles
    persistent: bool = False
    # TMA forward and input gradient only: the accumulator is [pixels, channels], the group's
    # channels wgmma's N (16 to 64), for groups narrower than wgmma's 64-row M
    channels_as_n: bool = False


_C = TileConfig

# dtype classes: "16" (float16, bfloat16), "32" (float32), "64" (float64)
# Ordered from the largest tile to the smallest; the plan takes the first that the problem fills
# and whose grid gives every SM a program (fastconv.conv.plan._gpu_config).
# max_registers=255 (the hardware limit) where a launch spilled: compiled as launches specialise
# them (unit strides as constants, sizes divisible by 16: `fastconv compile-report`), some configs spilled 8 to 88 bytes that their generic variants did not,
# because ptxas, left to its own cap, stopped at 80, 96 or 168 registers to keep more blocks
# resident. Exact float32 (no TF32) still spilled at 255 with block_k 32, hence 16 there.
#
# Every list ends in small tiles (fewer than SMALL_TILE outputs: 16x32 on 2 warps, 16x16 on one;
# 16 is the smallest tl.dot takes): the plan takes one only when no larger tile fills the SMs,
# split-K included: batch-1 layers with a short reduction (1x1 projections over 96-320
# channels, depthwise layers, weight gradients over 7x7 pixels), which cannot split. The
# 16-bit 16x16 comes with block_k 32 and 16: a 1x1 projection over 192 channels is 6 steps of
# 32, too few to split (MIN_SPLIT_STEPS), but 12 of 16, which split 3 ways.
SMALL_TILE = 32 * 32
_SMALL = {
    "16": [_C(16, 32, 32, 2, 2), _C(16, 16, 32, 1, 2), _C(16, 16, 16, 1, 2)],
    # float32 split-K 16x32 without TF32 spilled 8 bytes at ptxas's own cap (72 registers)
    "32": [_C(16, 32, 16, 2, 2, max_registers=255), _C(16, 16, 16, 1, 2, max_registers=255)],
    "64": [_C(16, 16, 16, 1, 1)],
}
_PIXEL_GEMM = {  # fprop and dgrad: rows are pixels, columns channels
    "16": [_C(128, 64, 32, 8, 2), _C(64, 64, 32, 4, 3, max_registers=255), _C(32, 32, 32, 4, 2),
           *_SMALL["16"]],
    "32": [_C(32, 32, 16, 4, 2, max_registers=255), *_SMALL["32"]],
    "64": [_C(64, 32, 16, 4, 2), _C(32, 32, 16, 4, 1), *_SMALL["64"]],
}
GEMM_CONFIGS = {
    # the forward carries the fused epilogue (bias, residual, activation, pre-activation store),
    # which costs registers: 128x64x32 and 64x64x32 with 4 warps spilled with it
    "fprop": dict(_PIXEL_GEMM, **{
        "16": [_C(128, 64, 16, 8, 2), _C(64, 64, 32, 8, 3, max_registers=255),
               _C(32, 32, 32, 4, 2), *_SMALL["16"]]}),
    "dgrad": _PIXEL_GEMM,
    "wgrad": {  # rows are output channels, columns taps, reduction over pixels
        "16": [_C(128, 64, 32, 8, 2), _C(64, 64, 32, 4, 3), _C(32, 32, 32, 4, 2), *_SMALL["16"]],
        # exact float32 64x64 needed all 255 registers at 4 warps and still spilled: 8 warps
        "32": [_C(64, 64, 16, 8, 2, max_registers=255), _C(32, 32, 16, 4, 2, max_registers=255),
               *_SMALL["32"]],
        "64": [_C(32, 32, 16, 4, 1), *_SMALL["64"]],
    },
}

_INT64 = {"16": [_C(32, 32, 32, 4, 2)], "32": [_C(32, 32, 16, 4, 1)], "64": [_C(32, 32, 16, 4, 1)]}
GEMM_CONFIGS_INT64 = {
    # float32 with TF32 and the fused epilogue left 8 bytes of stack on sm_80 at 4 warps; the
    # 16-bit split-K variant spilled 8 bytes on sm_80 at ptxas's own cap (168 registers; the
    # unsplit one already takes 254 of them)
    "fprop": dict(_INT64, **{"16": [_C(32, 32, 32, 4, 2, max_registers=255)],
                             "32": [_C(32, 32, 16, 8, 1)]}),
    "dgrad": _INT64,
    "wgrad": _INT64,
}

# Direct kernels: 64 channels wide for unit-stride channels_last access (a 16-bit pixel's 64
# channels are one 128-byte line); spill-free with 32- and 64-bit offsets alike. In the forward
# and the input gradient block_m is a spatial tile of one image (plan.direct_tile: 64 -> 8x8,
# 32 -> 4x8, 16 -> 4x4, 8 -> 2x4), whose halo every tap re-reads from L1: the 8x8 tiles read
# 10x10 input pixels per 64 outputs of a 3x3 window (1.56x), where 4x4 reads 2.25x; 8x8x32 is
# for the 32-channel layers, which no 64-wide tile fits. The small tiles (the rule above) are
# for batch-1 depthwise layers at 7x7 and 14x14, which never split: 8x8 (two elements per thread
# of one warp) gives a 7x7x232 layer 203 programs, 16x16 60. The weight gradient takes the
# same spatial tiles (its split of the tiles fills the SMs, so the 8x8 tiles win there too).
_DIRECT = {cls: [_C(16, 64, 0, 4, 1), _C(32, 32, 0, 4, 1), _C(16, 32, 0, 2, 1),
                 _C(16, 16, 0, 1, 1), _C(8, 8, 0, 1, 1)] for cls in ("16", "32", "64")}
_DIRECT_TILE = {cls: [_C(64, 64, 0, 8, 1), _C(64, 32, 0, 4, 1), *configs]
                for cls, configs in _DIRECT.items()}
# float64 in spatial tiles: left to itself ptxas held the multi-warp tiles to 96-128 registers
# and spilled 8-16 bytes (64-bit offsets, or 64 rows); 168 leaves them spill-free. 64x64 at 8
# warps is left out there: a float64 layer is never bandwidth-critical.
_DIRECT_TILE["64"] = [replace(c, max_registers=168) if c.num_warps > 1 else c
                      for c in _DIRECT_TILE["64"] if (c.block_m, c.block_n) != (64, 64)]
# The weight gradient's programs also hold a [TAPS, BLOCK_N] float32 row per tap; left to
# itself ptxas held the 8-warp 8x8x64 tile to 64 registers and spilled 8 bytes at stride 2
# (tests/test_depthwise_compile.py), so its multi-warp tiles may take up to 128 (float64's
# keep their 168).
_DIRECT_WGRAD = {cls: [c if c.max_registers or c.num_warps == 1 else
                       replace(c, max_registers=128) for c in configs]
                 for cls, configs in _DIRECT_TILE.items()}
DIRECT_CONFIGS = {"fprop": _DIRECT_TILE, "dgrad": _DIRECT_TILE, "wgrad": _DIRECT_WGRAD}

# The 1x1 GEMM has no per-tap index arithmetic, so its register budget differs from the
# implicit GEMM's: it keeps the pixel-GEMM tiles (its epilogue included) and the int64 tiles.
GEMM_1X1_CONFIGS = {"fprop": _PIXEL_GEMM, "dgrad": _PIXEL_GEMM, "wgrad": GEMM_CONFIGS["wgrad"]}
GEMM_1X1_CONFIGS_INT64 = {"fprop": _INT64, "dgrad": _INT64, "wgrad": _INT64}

# The stem forward (fastconv.kernels.conv2d_fprop_stem): few input channels, a reduction over
# the flat (r, s, c) index of R*S*C, 27 (3x3x3) to 147 (7x7x3) long, against N*P*Q rows in the
# hundreds of thousands at batch 32 and 16-64 output channels. BLOCK_K 16 and 32 waste the same
# there (147 -> 160, 92% useful; 27 -> 32, 84%; 64 would give 192 and 64). Its A tile is a
# gather of single elements with [BLOCK_M, BLOCK_K] tiles of offsets and window tests, which
# no asynchronous copy takes, so num_stages buys nothing and registers set the tile: with the
# fused epilogue 128x64x32 on 8 warps spilled 72-160 bytes and 64x64x32 on 4 warps 304-368
# (128x64x16 on 8 warps: 244-254 registers, no spill). Columns of 32 too, so a 32-channel
# stem (MobileNet) does not multiply a half-empty B. Ends in the pixel GEMM's small tiles.
STEM_CONFIGS = {
    "fprop": {
        "16": [_C(128, 64, 16, 8, 2), _C(128, 32, 32, 8, 2), _C(64, 64, 32, 8, 2),
               _C(64, 32, 32, 4, 2), _C(32, 32, 32, 4, 2), *_SMALL["16"]],
        "32": [_C(64, 64, 16, 8, 2, max_registers=255), _C(64, 32, 16, 4, 2, max_registers=255),
               _C(32, 32, 16, 4, 2, max_registers=255), *_SMALL["32"]],
        "64": [_C(64, 32, 16, 4, 2), _C(32, 32, 16, 4, 1), *_SMALL["64"]],
    },
}
# with 64-bit offsets the implicit GEMM's tiles; float32's spilled 8 bytes on sm_80 at the 80
# registers ptxas stopped at on its own (the stem's per-element gather holds more addresses)
STEM_CONFIGS_INT64 = {"fprop": dict(GEMM_CONFIGS_INT64["fprop"],
                                    **{"32": [_C(32, 32, 16, 8, 1, max_registers=255)]})}

# The split-K reduction (fastconv.kernels.conv2d_split_reduce): elementwise, memory-bound. 64
# channels wide for unit-stride channels_last and workspace access; 32 rows keep its grid from
# collapsing on the small outputs that are split in the first place (a 7x7x512 layer: 16
# programs), and 16 elements per thread keep float64 with every epilogue switch in registers.
# The direct weight gradient's reduction (its workspace [split, CG*R*S, K] into a [K, CG*R*S]
# gradient: a unit row stride that Triton makes a constant) spilled 8 bytes at the 64 registers
# ptxas stopped at on its own; the hardware limit (255) lets it take what it needs (64-bit
# offsets and float64: more than 128).
SPLIT_REDUCE_CONFIG = _C(32, 64, 0, 4, 1, max_registers=255)

# RoIAlign / RoIPool: block_m = bins of one RoI per program, block_n = channels, no reduction
# tile. "tile" serves the forward and the atomic backward (the first entry whose bins the RoI
# fills: 7x7 = 49 bins pad to 64); "ordered" is the deterministic backward, one bin at a time
# across a channel vector of one element per thread. Each of the four bilinear taps carries its
# own gathered address per element: 64x32 at 4 warps (16 elements per thread) spilled with
# 64-bit offsets and in float64. At 4 warps ptxas's own register cap (128) still spilled 8 bytes
# in float64 with 64-bit offsets on sm_80, hence the explicit limit of the small tile.
# The 64x32 forward at 8 warps, compiled as launches specialise it, spilled 8 bytes in 16-bit
# (ptxas stopped at 48 registers) and 24 in float64 (at 128) on sm_80; its float64 atomic
# backward spilled 96-216 bytes at 168: it may take all 255 (8 warps x 255 fit one SM).
# The ordered backward adds with plain loads and stores; left to itself ptxas held it to
# 48-64 registers and spilled 8-24 bytes in float64 on sm_80, so it gets 128.
# Adaptive sampling (sampling_ratio <= 0) samples ceil(roi / bins) rows and columns per bin: the
# programs of the largest RoIs would run 10-100x longer than the rest while the grid drains. The
# forward and the atomic backward give each tile this many programs, which share its sample
# rows (the forward's partial sums then go through the split-K reduction).
ROI_ADAPTIVE_SPLIT = 4

ROI_CONFIGS = {
    "tile": [_C(64, 32, 0, 8, 1, max_registers=255), _C(16, 32, 0, 4, 1, max_registers=168)],
    "ordered": [_C(1, 128, 0, 4, 1, max_registers=128)],
}

# The TMA forward implicit GEMM (fastconv.kernels.conv2d_fprop_tma), 16-bit: the shape of a
# Hopper GEMM known to run near cuDNN (DESIGN.md, Performance method): 128x128 and 128x256 tiles,
# 64 channels a step (a 128-byte row, TMA's widest swizzle), 8 warps (two warpgroups, each
# issuing wgmma on 64 rows). Stages as many as shared memory holds: 4 x 32 KB for 128x128,
# 3 x 48 KB for 128x256, under sm_90's 227 KB per block with the epilogue's scratch.
# block_m counts output pixels, a box of BN_IMG x BH x BW (conv2d_tma.box_shape).
#
# float32 (TF32 wgmma, m64nNk8): an element of 4 bytes, so 32 channels a step make the same
# 128-byte row and a 128x128 stage the same 32 KB; each step is half the 16-bit one's
# products, so more of them in flight: 6 stages, 192 KB. No 128x256: its float32 epilogue
# held all 255 registers and spilled 24-40 bytes at 3 and 4 stages.
TMA_CONFIGS = {
    "16": [_C(128, 256, 64, 8, 3), _C(128, 128, 64, 8, 4)],
    "32": [_C(128, 128, 32, 8, 6)],
}

# Narrow groups (ResNeXt's 32 groups of 4 to 32 channels), forward and input gradient alike:
# the tiles above put the group's channels on wgmma's M, at least 64 rows a warpgroup and
# 128 or 256 a tile, of which a group of 8 fills 8. These accumulate the other way round
# (TileConfig.channels_as_n): block_m 128 pixels, block_n the group's channels rounded up to
# a power of two (wgmma's N: 16, 32, 64), block_k 64 (the launchers narrow it to the group's
# channels, tma_launch.reduction_block). The pixel box (the A operand) goes through
# registers. 16 and 32 channels: one warpgroup (4 warps) of two 64-row wgmmas, 50-128
# registers. 64 channels: two warpgroups (8 warps), one 64-row wgmma each; with 4 warps the
# forward's fused epilogue (every activation compiled in) held 255 registers and spilled 208
# bytes, with 8 it takes 186 (254 persistent). A stage is (128 + block_n) x block_k x 2
# bytes, 24 KB at most: 4 stages.
# float32 has none: its narrow groups stay on the pointer kernels (plan.tma_plan).
TMA_NARROW_CONFIGS = {
    "16": [_C(128, 64, 64, 8, 4, channels_as_n=True), _C(128, 32, 64, 4, 4, channels_as_n=True),
           _C(128, 16, 64, 4, 4, channels_as_n=True)],
    "32": [],
}

# The same tiles run persistent (TileConfig.persistent): a grid of about one program per SM,
# each looping over output tiles. Not the plan's choice (nothing has measured it yet): offered
# to the autotuner beside TMA_CONFIGS and TMA_NARROW_CONFIGS, which keeps it where a GPU
# times it faster. Not the 128x256 tile: it takes all 255 registers already, and persistent it
# spilled 24 bytes on a stride-2 1x1 (ResNet-50's layer3.0.downsample, `fastconv
# compile-report --first-call`); nor the 64-wide narrow tile (186 registers, 254 persistent).
# float32's 128x128x32 persistent takes 255 registers (175-200 plain) without spilling.
TMA_PERSISTENT_CONFIGS = {cls: [replace(c, persistent=True)
                                for c in configs + TMA_NARROW_CONFIGS[cls]
                                if c.block_n <= (32 if c.channels_as_n else 128)]
                          for cls, configs in TMA_CONFIGS.items()}

# The TMA weight gradient (fastconv.kernels.conv2d_wgrad_tma), 16-bit only: block_m input
# channels (x's box, the accumulator's rows, the operand wgmma reads from registers), block_n
# output channels (dY's box, wgmma's N, read from shared memory), block_k output pixels a step
# (a box of BN_IMG x BH x BW, tma_launch.box_shape; 64 pixels of 64-128 channels are 8-16 KB
# per box, with 128- and 256-byte rows). The plan takes the first tile that the layer's
# channels fill on both sides (plan.tma_plan).
TMA_WGRAD_CONFIGS = {
    "16": [
        # the Hopper GEMM tiles (see TMA_CONFIGS): 3 x 48 KB and 4 x 32 KB of boxes in flight
        _C(128, 256, 64, 8, 3), _C(128, 128, 64, 8, 4),
        # 64 input channels (ResNet-50's 64 -> 256 1x1, VGG's 64 -> 128): one warpgroup of 64
        # rows, wgmma's N still 128
        _C(64, 128, 64, 4, 4),
        # 64 output channels over more input channels (ResNet-50's 256 -> 64 1x1)
        _C(128, 64, 64, 8, 4),
        # 64 channels on both sides (ResNet-50's 64 -> 64 3x3): the whole layer's K x CG per tap
        _C(64, 64, 64, 4, 4),
    ],
}

# The TMA input gradient (conv2d_dgrad_tma_kernel) is the same GEMM with the roles renamed:
# block_m a box of input pixels of one stride phase (N of wgmma: the dy box is its B operand),
# block_n input channels (M of wgmma: the repacked weight's rows), block_k output channels a
# step. Same tiles, stages and warps for the same reasons: 32 KB a stage at 128x128 (4 stages),
# 48 KB at 128x256 (3), under sm_90's 227 KB; the 128x256 epilogue stores in two halves.
TMA_DGRAD_CONFIGS = {
    "16": [_C(128, 256, 64, 8, 3), _C(128, 128, 64, 8, 4)],
}
