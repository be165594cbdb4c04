"""Tile configurations the dispatcher may choose on a GPU, per kernel family and dtype class.

Every entry here is compiled for sm_90 and sm_80 by the compile check (``fastconv
compile-report``, tests/test_compile_gpu.py), which fails on a compile error or a register
spill; the plan in ``fastconv.ops.plan`` never picks anything else on a GPU. Under the
interpreter the plan sizes blocks to the problem instead (fewer, larger programs).

The lists are what that check measured as spill-free (registers at most 255, stack 0) on both
architectures; larger tiles measured at the time, e.g. 128x128x32 with 8 warps for 16-bit or
64x32x32 for float32, spilled. 64-bit index arithmetic (a tensor with >= 2**31 elements) holds
more registers, so those launches use the smaller GEMM_CONFIGS_INT64 tiles.
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class TileConfig:
    block_m: int
    block_n: int
    block_k: int  # 0 for the direct kernels, which have no reduction tile
    num_warps: int
    num_stages: int


_C = TileConfig

# dtype classes: "16" (float16, bfloat16), "32" (float32), "64" (float64)
# Ordered from the largest tile to the smallest; the plan takes the first that the problem fills.
_PIXEL_GEMM = {  # fprop and dgrad: rows are pixels, columns channels
    "16": [_C(128, 64, 32, 8, 2), _C(64, 64, 32, 4, 3), _C(32, 32, 32, 4, 2)],
    "32": [_C(32, 32, 32, 4, 2)],
    "64": [_C(64, 32, 16, 4, 2), _C(32, 32, 16, 4, 1)],
}
GEMM_CONFIGS = {
    # the forward carries the fused epilogue (bias, residual, activation, pre-activation store),
    # which costs registers: 128x64x32 and 64x64x32 with 4 warps spilled with it
    "fprop": dict(_PIXEL_GEMM, **{
        "16": [_C(128, 64, 16, 8, 2), _C(64, 64, 32, 8, 3), _C(32, 32, 32, 4, 2)]}),
    "dgrad": _PIXEL_GEMM,
    "wgrad": {  # rows are output channels, columns taps, reduction over pixels
        "16": [_C(128, 64, 32, 8, 2), _C(64, 64, 32, 4, 3), _C(32, 32, 32, 4, 2)],
        "32": [_C(64, 64, 16, 4, 2), _C(32, 32, 32, 4, 2)],
        "64": [_C(32, 32, 16, 4, 1)],
    },
}

_INT64 = {"16": [_C(32, 32, 32, 4, 2)], "32": [_C(32, 32, 16, 4, 1)], "64": [_C(32, 32, 16, 4, 1)]}
GEMM_CONFIGS_INT64 = {
    # float32 with TF32 and the fused epilogue left 8 bytes of stack on sm_80 at 4 warps
    "fprop": dict(_INT64, **{"32": [_C(32, 32, 16, 8, 1)]}),
    "dgrad": _INT64,
    "wgrad": _INT64,
}

# Direct kernels: few rows per thread (each row carries its own n/h/w state), 64 channels wide
# for unit-stride channels_last access; spill-free with 32- and 64-bit offsets alike.
_DIRECT = {cls: [_C(16, 64, 0, 4, 1), _C(32, 32, 0, 4, 1)] for cls in ("16", "32", "64")}
DIRECT_CONFIGS = {"fprop": _DIRECT, "dgrad": _DIRECT, "wgrad": _DIRECT}

# The 1x1 GEMM has no per-tap index arithmetic, so its register budget differs from the
# implicit GEMM's: it keeps the pixel-GEMM tiles (its epilogue included) and the int64 tiles.
GEMM_1X1_CONFIGS = {"fprop": _PIXEL_GEMM, "dgrad": _PIXEL_GEMM, "wgrad": GEMM_CONFIGS["wgrad"]}
GEMM_1X1_CONFIGS_INT64 = {"fprop": _INT64, "dgrad": _INT64, "wgrad": _INT64}
