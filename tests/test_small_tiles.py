"""The GPU tables' small tiles, run on the CPU.

Under the interpreter the plan sizes tiles to the problem (16 rows and columns at least), so the
small tiles that a GPU plan takes for batch-1 layers (16x32, 16x16 with block_k 32 and 16; the
direct kernels' 8x8) would otherwise only ever be compiled, never run. Here the interpreter's
tile is replaced by each of them in turn, forward and both gradients against torch, on shapes
that leave ragged edges in every tile dimension.
"""
import pytest
import torch
import torch.nn.functional as F

import fastconv.functional as FC
from fastconv.kernels.configs import SMALL_TILE
from fastconv.ops import launch_cache
from fastconv.conv import plan as P

from helpers import assert_rel_close, aten_forbidden

DTYPES = {"16": torch.float16, "32": torch.float32, "64": torch.float64}
# family -> (N, C, H, W, K, kernel, stride, padding, groups): the plan's family for it
LAYERS = {
    "implicit_gemm": (1, 24, 6, 5, 20, 3, 1, 1, 1),
    "gemm_1x1": (2, 24, 5, 7, 20, 1, 1, 0, 1),
    "stem": (1, 3, 9, 10, 20, 3, 2, 1, 1),     # 3x3x3 = 27 flat reduction
    "direct": (1, 20, 9, 9, 20, 3, 2, 1, 20),  # depthwise
}


def _small_tiles():
    for family, tables in P.CONFIG_TABLES.items():
        table = tables[0][0]  # 32-bit offsets: the int64 tables have no small tiles
        for direction, by_class in table.items():
            for cls, configs in by_class.items():
                for cfg in configs:
                    if cfg.block_m * cfg.block_n < SMALL_TILE:
                        yield pytest.param(family, direction, cls, cfg,
                                           id=f"{family}-{direction}-{cls}-"
                                              f"{cfg.block_m}x{cfg.block_n}x{cfg.block_k}")


@pytest.mark.parametrize("family,direction,cls,cfg", list(_small_tiles()))
def test_small_tile_matches_torch(monkeypatch, family, direction, cls, cfg):
    dtype = DTYPES[cls]
    real = P._interpreter_config
    forced = []

    def config(d, fam, pb, *scale):  # this direction of this family takes the tile; the
        if (d, fam) == (direction, family):  # others as usual
            forced.append(pb)
            return cfg
        return real(d, fam, pb, *scale)
    monkeypatch.setattr(P, "_interpreter_config", config)
    blocks = []
    record = launch_cache._Step.__init__

    def spy(self, launch, slots):  # every launch a call runs is recorded once (the call cache)
        blocks.append((launch.meta.get("BLOCK_M"), launch.meta.get("BLOCK_N")))
        record(self, launch, slots)
    monkeypatch.setattr(launch_cache._Step, "__init__", spy)

    n, c, h, w, k, r, stride, padding, groups = LAYERS[family]
    x = torch.randn(n, c, h, w, dtype=dtype, requires_grad=True)
    wt = torch.randn(k, c // groups, r, r, dtype=dtype, requires_grad=True)
    dy_shape = F.conv2d(x.detach().double(), wt.detach().double(), stride=stride,
                        padding=padding, groups=groups).shape
    dy = torch.randn(dy_shape, dtype=dtype)
    with aten_forbidden():
        y = FC.conv2d(x, wt, stride=stride, padding=padding, groups=groups)
        gx, gw = torch.autograd.grad(y, (x, wt), dy)
    assert forced, f"no {direction} launch of the {family} family"
    assert (cfg.block_m, cfg.block_n) in blocks

    xd, wd = x.detach().double().requires_grad_(), wt.detach().double().requires_grad_()
    ref = F.conv2d(xd, wd, stride=stride, padding=padding, groups=groups)
    rgx, rgw = torch.autograd.grad(ref, (xd, wd), dy.double())
    assert_rel_close(y, ref, dtype, "y")
    assert_rel_close(gx, rgx, dtype, "dx")
    assert_rel_close(gw, rgw, dtype, "dw")
