"""Tile configurations the dispatcher may choose on a GPU, per kernel family and dtype class.

Every entry here is compiled for sm_90 and sm_80 by the compile check, which fails on a compile
error or a register spill; the plan in ``fastconv.ops.plan`` never picks anything else on a GPU.
Under the interpreter the plan sizes blocks to the problem instead (fewer, larger programs).
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class TileConfig:
    block_m: int
    block_n: int
    block_k: int  # 0 for the direct kernels, which have no reduction tile
    num_warps: int
    num_stages: int


# dtype classes: "16" (float16, bfloat16), "32" (float32), "64" (float64)
# Ordered from the largest tile to the smallest; the plan takes the first that the problem fills.
GEMM_CONFIGS = {
    "fprop": {
        "16": [TileConfig(128, 128, 32, 8, 3), TileConfig(128, 64, 32, 4, 4), TileConfig(64, 32, 32, 4, 4)],
        "32": [TileConfig(128, 64, 32, 8, 3), TileConfig(64, 32, 32, 4, 3)],
        "64": [TileConfig(64, 32, 16, 4, 2)],
    },
    "dgrad": {
        "16": [TileConfig(128, 128, 32, 8, 3), TileConfig(128, 64, 32, 4, 4), TileConfig(64, 32, 32, 4, 4)],
        "32": [TileConfig(128, 64, 32, 8, 3), TileConfig(64, 32, 32, 4, 3)],
        "64": [TileConfig(64, 32, 16, 4, 2)],
    },
    "wgrad": {
        "16": [TileConfig(128, 128, 32, 8, 3), TileConfig(64, 64, 32, 4, 4)],
        "32": [TileConfig(64, 64, 32, 4, 3), TileConfig(32, 64, 32, 4, 3)],
        "64": [TileConfig(32, 32, 16, 4, 2)],
    },
}

DIRECT_CONFIGS = {
    "fprop": {"16": [TileConfig(64, 64, 0, 4, 1)], "32": [TileConfig(64, 64, 0, 4, 1)],
              "64": [TileConfig(32, 64, 0, 4, 1)]},
    "dgrad": {"16": [TileConfig(64, 64, 0, 4, 1)], "32": [TileConfig(64, 64, 0, 4, 1)],
              "64": [TileConfig(32, 64, 0, 4, 1)]},
    "wgrad": {"16": [TileConfig(64, 64, 0, 4, 1)], "32": [TileConfig(64, 64, 0, 4, 1)],
              "64": [TileConfig(32, 64, 0, 4, 1)]},
}
