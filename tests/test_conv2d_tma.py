"""The TMA forward implicit GEMM (kernels/conv2d_fprop_tma.py, fastconv/conv/tma_launch.py).

Runs through Triton's interpreter with small tiles (each interpreted program step costs
milliseconds); the GPU tiles of TMA_CONFIGS are compiled for sm_90 in a subprocess instead
(test_sm90_signature). Every launch goes through ``conv2d_fprop_tma`` directly, under
``aten_forbidden``: the TMA kernel computed what is compared.
"""
import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
import triton

import fastconv

from fastconv.bench import tma_report
from fastconv.kernels.configs import (TMA_CONFIGS, TMA_NARROW_CONFIGS, TMA_PERSISTENT_CONFIGS,
                                      TileConfig)
from fastconv.conv.plan import ConvProblem, tma_steps, tma_tiles
from fastconv.conv.tma_launch import (MAX_STRIDE, box_shape, conv2d_fprop_tma,
                                     persistent_programs, tma_fprop_eligible, tma_fprop_launch)
from helpers import TOL, aten_forbidden, assert_rel_close, rel_err

# interpreter tiles: 32 pixels (e.g. a 1 x 4 x 8 box) x 32 channels x 16 channels a step, and
# one of 64 x 64 x 32 for a box of several images
SMALL = TileConfig(32, 32, 16, 4, 2)
MEDIUM = TileConfig(64, 64, 32, 4, 2)
DTYPES_16 = [torch.float16, torch.bfloat16]


def _inputs(N, C, H, W, K, R, S, groups, dtype, bias=False, residual=False):
    x = torch.randn(N, C, H, W, dtype=dtype).to(memory_format=torch.channels_last)
    w = (torch.randn(K, C // groups, R, S) / (C // groups * R * S) ** 0.5).to(dtype)
    b = torch.randn(K, dtype=dtype) if bias else None
    return x, w, b


def _output(ref, dtype):
    """y of ref's shape, channels_last, poisoned with NaN so that a missed element shows."""
    return torch.full(ref.shape, float("nan"), dtype=dtype).to(memory_format=torch.channels_last)


def _run(x, w, b, stride, padding, dilation, groups, config=SMALL, residual=None,
         activation=0, preact=None, y=None, ref_shape=None, split=1):
    if y is None:
        y = _output(torch.empty(ref_shape), x.dtype)
    assert tma_fprop_eligible(x, w, y, groups, residual, stride=stride)
    with aten_forbidden():
        conv2d_fprop_tma(x, w, b, y, stride, padding, dilation, groups, residual, activation,
                         preact, config=config, split=split)
    return y


def _reference(x, w, b, stride, padding, dilation, groups):
    return F.conv2d(x.double(), w.double(), None if b is None else b.double(), stride, padding,
                    dilation, groups)


# (N, C, H, W, K, R, S, stride, padding, dilation, groups); maps are not multiples of the box
CASES = {
    "1x1": (3, 16, 5, 7, 24, 1, 1, (1, 1), (0, 0), (1, 1), 1),
    "3x3-pad1": (1, 16, 9, 11, 16, 3, 3, (1, 1), (1, 1), (1, 1), 1),
    "3x3-s2-cg24": (3, 24, 9, 7, 16, 3, 3, (2, 2), (1, 1), (1, 1), 1),
    "7x7-s2-pad3": (1, 8, 13, 11, 16, 7, 7, (2, 2), (3, 3), (1, 1), 1),
    "3x3-dil2": (1, 16, 10, 9, 16, 3, 3, (1, 1), (2, 2), (2, 2), 1),
    "3x3-s2-dil2": (1, 16, 11, 11, 16, 3, 3, (2, 2), (2, 2), (2, 2), 1),
    "1x1-s2-downsample": (2, 32, 9, 9, 16, 1, 1, (2, 2), (0, 0), (1, 1), 1),
    "resnext-g2-cg24-s2": (3, 48, 8, 8, 32, 3, 3, (2, 2), (1, 1), (1, 1), 2),
    "g2-cg8-kg24": (1, 16, 6, 9, 48, 3, 3, (1, 1), (1, 1), (1, 1), 2),
    "s2-h1": (1, 16, 1, 5, 16, 3, 3, (2, 2), (1, 1), (1, 1), 1),
    "s(1,2)-pad(0,1)-5x3": (2, 8, 7, 10, 8, 5, 3, (1, 2), (0, 1), (1, 1), 1),
    "s2-w3-dil3": (1, 8, 6, 3, 8, 3, 3, (2, 2), (2, 2), (3, 3), 1),
}


@pytest.mark.parametrize("dtype", DTYPES_16, ids=str)
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_matches_torch(case, dtype):
    N, C, H, W, K, R, S, stride, padding, dilation, groups = case
    x, w, _ = _inputs(N, C, H, W, K, R, S, groups, dtype)
    ref = _reference(x, w, None, stride, padding, dilation, groups)
    y = _run(x, w, None, stride, padding, dilation, groups, ref_shape=ref.shape)
    assert_rel_close(y, ref, dtype, f"{case}")


@pytest.mark.parametrize("dtype", DTYPES_16, ids=str)
def test_several_images_per_box(dtype):
    """3x3 maps at BLOCK_M 64: one image per 8 x 8 box would leave 55 of 64 rows idle; the
    launcher picks a box of several images (2 x 4 x 8), over a batch that is not a multiple of
    it (the last box's second image is past N: TMA's fill, masked stores)."""
    N, C, H, W, K = 5, 64, 3, 3, 40
    x, w, b = _inputs(N, C, H, W, K, 3, 3, 1, dtype, bias=True)
    ref = _reference(x, w, b, (1, 1), (1, 1), (1, 1), 1)
    assert box_shape(MEDIUM.block_m, N, 3, 3) == (2, 4, 8)
    y = _run(x, w, b, (1, 1), (1, 1), (1, 1), 1, config=MEDIUM, ref_shape=ref.shape)
    assert_rel_close(y, ref, dtype, "7x7 maps, 64x64x32")


@pytest.mark.parametrize("dtype", DTYPES_16, ids=str)
@pytest.mark.parametrize("epilogue", ["bias", "bias-residual-relu", "silu-preact",
                                      "residual-silu-preact-nchw-residual"])
def test_fused_epilogue(epilogue, dtype):
    N, C, H, W, K, stride = 3, 16, 9, 7, 24, (2, 2)
    groups = 2 if "residual-silu" in epilogue else 1
    x, w, b = _inputs(N, C, H, W, K, 3, 3, groups, dtype, bias="bias" in epilogue)
    z = _reference(x, w, b, stride, (1, 1), (1, 1), groups)
    residual = None
    if "residual" in epilogue:
        residual = torch.randn(z.shape, dtype=dtype)
        if "nchw" not in epilogue:
            residual = residual.to(memory_format=torch.channels_last)
        z = z + residual.double()
    activation, ref = 0, z
    if "relu" in epilogue:
        activation, ref = 1, torch.relu(z)
    if "silu" in epilogue:
        activation, ref = 3, F.silu(z)
    preact = _output(z, dtype) if "preact" in epilogue else None
    y = _run(x, w, b, stride, (1, 1), (1, 1), groups, residual=residual, activation=activation,
             preact=preact, ref_shape=z.shape)
    assert_rel_close(y, ref, dtype, epilogue)
    if preact is not None:
        assert_rel_close(preact, z, dtype, "pre-activation")


@pytest.mark.parametrize("dtype", DTYPES_16, ids=str)
def test_wide_tile_epilogue_in_halves(dtype):
    """BLOCK_N 256 (the 128x256 config's width) runs its epilogue one half of the channels at a
    time: both halves land on the right channels, the second n tile's past K masked."""
    N, C, H, W, K = 1, 16, 5, 6, 300
    x, w, b = _inputs(N, C, H, W, K, 3, 3, 1, dtype, bias=True)
    z = _reference(x, w, b, (1, 1), (1, 1), (1, 1), 1)
    residual = torch.randn(z.shape, dtype=dtype).to(memory_format=torch.channels_last)
    z = z + residual.double()
    preact = _output(z, dtype)
    y = _run(x, w, b, (1, 1), (1, 1), (1, 1), 1, config=TileConfig(32, 256, 16, 4, 2),
             residual=residual, activation=3, preact=preact, ref_shape=z.shape)
    assert_rel_close(y, F.silu(z), dtype, "128x256-like tile")
    assert_rel_close(preact, z, dtype, "pre-activation")


@pytest.mark.parametrize("stride", [(1, 1), (2, 2)])
def test_padding_is_tma_zero_fill(stride):
    """The halo of a padded 3x3 is read at negative (and past-the-end) coordinates, which only
    TMA's zero fill turns into padding. With x all large and positive and a weight whose only
    non-zero tap is (0, 0), every output pixel of the first row and column reads nothing but
    halo: exactly 0 if the fill is zero, hundreds otherwise."""
    N, C, H, W, K = 2, 16, 8, 9, 16
    x = (500 + 100 * torch.rand(N, C, H, W)).half().to(memory_format=torch.channels_last)
    w = torch.zeros(K, C, 3, 3, dtype=torch.float16)
    w[:, :, 0, 0] = 1.0 / C
    ref = _reference(x, w, None, stride, (1, 1), (1, 1), 1)
    y = _run(x, w, None, stride, (1, 1), (1, 1), 1, ref_shape=ref.shape)
    assert torch.equal(y[:, :, 0, :], torch.zeros_like(y[:, :, 0, :]))
    assert torch.equal(y[:, :, :, 0], torch.zeros_like(y[:, :, :, 0]))
    assert (y[:, :, 1:, 1:] > 400).all()  # the interior read real pixels
    # and the other side: taps (2, 2) past the last row and column
    w2 = torch.zeros_like(w)
    w2[:, :, 2, 2] = 1.0 / C
    ref2 = _reference(x, w2, None, stride, (1, 1), (1, 1), 1)
    y2 = _run(x, w2, None, stride, (1, 1), (1, 1), 1, ref_shape=ref2.shape)
    assert_rel_close(y2, ref2, torch.float16, "bottom/right halo")
    assert (ref2 == 0).any() and torch.equal(y2[ref2 == 0], torch.zeros_like(y2[ref2 == 0]))


@pytest.mark.parametrize("dtype", DTYPES_16, ids=str)
def test_partial_channel_block_reads_nothing_of_the_next_group(dtype):
    """CG = 24 with BLOCK_K 16: group 0's second channel block is an x box over channels 16..31,
    8 of them group 1's. Group 1's channels hold values 300 times larger than group 0's: if
    the weight's zero padding past CG failed, group 0's output would be swamped by them."""
    N, groups, CG, H, W, K = 2, 2, 24, 6, 7, 32
    x = torch.randn(N, groups * CG, H, W, dtype=dtype)
    x[:, CG:] = 300 + torch.rand(N, CG, H, W, dtype=dtype)
    x = x.to(memory_format=torch.channels_last)
    w = (torch.randn(K, CG, 3, 3) / (CG * 9) ** 0.5).to(dtype)
    ref = _reference(x, w, None, (1, 1), (1, 1), (1, 1), groups)
    y = _run(x, w, None, (1, 1), (1, 1), (1, 1), groups, ref_shape=ref.shape)
    KG = K // groups
    assert_rel_close(y[:, :KG], ref[:, :KG], dtype, "group 0 (its boxes reach group 1)")
    assert_rel_close(y[:, KG:], ref[:, KG:], dtype, "group 1 (its boxes reach past C)")


# ---------------------------------------------------------------------------- split-K
@pytest.mark.parametrize("split,stride,epilogue,dtype", [
    (2, (1, 1), "bias-residual-relu", torch.float16),
    (3, (2, 2), "bias-silu-preact", torch.bfloat16),
    (3, (1, 1), "residual-gelu", torch.float16),
    (40, (2, 2), "bias", torch.float16),  # more ranges than the 18 steps: empty ones add 0
], ids=["2-s1", "3-s2", "3-s1-gelu", "40-s2"])
def test_split_k_matches_torch(split, stride, epilogue, dtype, kernel_launches):
    """Split-K: the reduction over all stride phases' taps x channel blocks cut into ranges
    (at stride 2, ranges that start and end inside a phase); the partial sums by output pixel
    row, added by the split-K reduction, which applies bias, residual and activation."""
    N, C, H, W, K = 2, 32, 7, 6, 24
    x, w, b = _inputs(N, C, H, W, K, 3, 3, 1, dtype, bias="bias" in epilogue)
    z = _reference(x, w, b, stride, (1, 1), (1, 1), 1)
    residual = None
    if "residual" in epilogue:
        residual = torch.randn(z.shape, dtype=dtype).to(memory_format=torch.channels_last)
        z = z + residual.double()
    activation, ref = 0, z
    if "relu" in epilogue:
        activation, ref = 1, torch.relu(z)
    if "silu" in epilogue:
        activation, ref = 3, F.silu(z)
    if "gelu" in epilogue:
        activation, ref = 4, F.gelu(z)
    preact = _output(z, dtype) if "preact" in epilogue else None
    y = _output(z, dtype)
    _, grid, kwargs, then = tma_fprop_launch(x, w, b, y, stride, (1, 1), (1, 1), 1, residual,
                                             activation, preact, config=SMALL, split=split)
    assert grid[1] == split and kwargs["SPLIT_K"] and not kwargs["HAS_BIAS"]
    # 9 taps x 2 channel blocks of 16, whatever the stride: every tap lies in one phase
    assert kwargs["ITERS_PER_SPLIT"] == triton.cdiv(18, split)
    assert then.kernel.fn.__name__ == "conv2d_split_reduce_kernel"
    y = _run(x, w, b, stride, (1, 1), (1, 1), 1, residual=residual, activation=activation,
             preact=preact, y=y, split=split)
    assert [name for name, _, _ in kernel_launches] == \
        ["conv2d_fprop_tma_kernel", "conv2d_split_reduce_kernel"]
    assert_rel_close(y, ref, dtype, f"split {split}")
    if preact is not None:
        assert_rel_close(preact, z, dtype, "pre-activation")


def test_split_k_grouped_stride_2_with_an_empty_phase():
    """Groups and a stride-2 map one pixel high (its second row phase has no pixels, and no
    steps): the split ranges are counted as the kernel counts its steps."""
    N, C, H, W, K, groups = 2, 32, 1, 9, 32, 2
    x, w, b = _inputs(N, C, H, W, K, 3, 3, groups, torch.float16, bias=True)
    ref = _reference(x, w, b, (2, 2), (1, 1), (1, 1), groups)
    pb = ConvProblem(N, C, H, W, K, *ref.shape[2:], 3, 3, groups, torch.float16, (2, 2),
                     (1, 1), (1, 1))
    # row tap 1 only (phase 1 has no pixels) x 3 column taps x one block of 16 channels
    assert tma_steps("fprop", pb, SMALL) == 3
    y = _run(x, w, b, (2, 2), (1, 1), (1, 1), groups, ref_shape=ref.shape, split=4)
    assert_rel_close(y, ref, torch.float16, "split 4, groups 2, H 1")


# ---------------------------------------------------------------------------- narrow groups
def _narrow(block_n):
    """An interpreter tile in the narrow orientation: 32 pixels by ``block_n`` channels, 16
    channels a step (the launcher narrows it no further: groups here have >= 8 channels)."""
    return TileConfig(32, block_n, 16, 4, 2, channels_as_n=True)


# (groups, channels per group on both sides, stride): groups of 8, 16, 24, 40 channels; the
# tile is their count to the next power of two, as the plan's
NARROW_CASES = {
    "g3x8-s1": (3, 8, (1, 1)),
    "g2x16-s2": (2, 16, (2, 2)),
    "g2x24-s1": (2, 24, (1, 1)),
    "g2x40-s2": (2, 40, (2, 2)),
}


@pytest.mark.parametrize("split", [1, 3])
@pytest.mark.parametrize("case", NARROW_CASES.values(), ids=NARROW_CASES.keys())
def test_narrow_orientation_matches_torch(case, split, kernel_launches):
    """CHANNELS_AS_N: acc [pixels, channels] = X_box @ W_tile^T, the group's output channels
    wgmma's N. A 32-wide tile over 24 channels and a 64-wide one over 40 run into the next
    group's filters (or past K): those columns are never stored. Split 3 ways, the partial
    sums go through the split-K reduction (bias included)."""
    groups, width, stride = case
    dtype = torch.float16 if width % 16 else torch.bfloat16
    N, H, W = 2, 7, 9
    x, w, b = _inputs(N, groups * width, H, W, groups * width, 3, 3, groups, dtype, bias=True)
    ref = _reference(x, w, b, stride, (1, 1), (1, 1), groups)
    cfg = _narrow(max(16, triton.next_power_of_2(width)))
    y = _run(x, w, b, stride, (1, 1), (1, 1), groups, config=cfg, ref_shape=ref.shape,
             split=split)
    names = [name for name, _, _ in kernel_launches]
    assert names == ["conv2d_fprop_tma_kernel"] + ["conv2d_split_reduce_kernel"] * (split > 1)
    assert kernel_launches[0][2]["CHANNELS_AS_N"]
    assert_rel_close(y, ref, dtype, f"narrow {case} split {split}")


@pytest.mark.parametrize("dtype", DTYPES_16, ids=str)
def test_narrow_orientation_fused_epilogue(dtype):
    """bias + residual + relu on the [pixels, channels] accumulator, and the pre-activation,
    groups of 24 output channels (16 input) at stride 2."""
    N, C, H, W, K, groups, stride = 2, 32, 9, 7, 48, 2, (2, 2)
    x, w, b = _inputs(N, C, H, W, K, 3, 3, groups, dtype, bias=True)
    z = _reference(x, w, b, stride, (1, 1), (1, 1), groups)
    residual = torch.randn(z.shape, dtype=dtype).to(memory_format=torch.channels_last)
    z = z + residual.double()
    preact = _output(z, dtype)
    y = _run(x, w, b, stride, (1, 1), (1, 1), groups, config=_narrow(32), residual=residual,
             activation=1, preact=preact, ref_shape=z.shape)
    assert_rel_close(y, torch.relu(z), dtype, "narrow bias-residual-relu")
    assert_rel_close(preact, z, dtype, "narrow pre-activation")


@pytest.mark.parametrize("stride,split", [((1, 1), 1), ((2, 2), 2)])
def test_narrow_orientation_persistent(stride, split):
    """The persistent variant of a narrow tile on a one-SM target: fewer programs than tiles,
    each walking tiles a grid apart, groups of 16 channels, with relu."""
    from fastconv.ops.target import Target, planning_for
    cfg = dataclasses.replace(_narrow(16), num_warps=8, persistent=True)
    N, C, H, W, K, groups = 2, 32, 20, 20, 32, 2
    x, w, b = _inputs(N, C, H, W, K, 3, 3, groups, torch.float16, bias=True)
    ref = torch.relu(_reference(x, w, b, stride, (1, 1), (1, 1), groups))
    y = _output(ref, torch.float16)
    with planning_for(Target("interpreter", True, sms=1)):
        _, grid, kwargs, _ = tma_fprop_launch(x, w, b, y, stride, (1, 1), (1, 1), groups,
                                              activation=1, config=cfg, split=split)
        pb = ConvProblem(N, C, H, W, K, *ref.shape[2:], 3, 3, groups, torch.float16, stride,
                         (1, 1), (1, 1))
        assert kwargs["PERSISTENT"] and kwargs["CHANNELS_AS_N"]
        assert grid[0] < tma_tiles("fprop", pb, cfg), grid
        y = _run(x, w, b, stride, (1, 1), (1, 1), groups, config=cfg, activation=1, y=y,
                 split=split)
    assert_rel_close(y, ref, torch.float16, f"narrow persistent, stride {stride}, split {split}")


# ResNeXt-50 32x4d's grouped 3x3 layers with TMA-eligible groups, batch 32:
# (name, C, H, stride); 32 groups of C / 32 channels
RESNEXT_GROUPED = [("layer2.0.conv2", 256, 56, 2), ("layer2.1.conv2", 256, 28, 1),
                   ("layer3.0.conv2", 512, 28, 2), ("layer3.1.conv2", 512, 14, 1),
                   ("layer4.0.conv2", 1024, 14, 2), ("layer4.1.conv2", 1024, 7, 1)]


@pytest.mark.parametrize("layer", RESNEXT_GROUPED, ids=[r[0] for r in RESNEXT_GROUPED])
def test_the_plan_takes_the_narrow_tile_for_resnext_groups(layer):
    """On sm_90 ResNeXt-50's grouped 3x3 layers (32 groups of 8, 16, 32 channels) take the
    narrow tile, block_n the group's channels (16 at least), forward and input gradient;
    explain() says why; the autotuner's candidates stay narrow."""
    from fastconv.conv.autotune import candidates
    from fastconv.conv.launch import conv_problem
    from fastconv.conv.plan import TMA_FAMILY
    name, C, H, stride = layer
    x = torch.empty(32, C, H, H, dtype=torch.bfloat16, device="meta").contiguous(
        memory_format=torch.channels_last)
    w = torch.empty(C, C // 32, 3, 3, dtype=torch.bfloat16, device="meta")
    plans = fastconv.explain(x, w, padding=1, stride=stride, groups=32, target="sm_90")
    width = max(16, C // 32)
    for plan, side in ((plans.fprop, "output"), (plans.dgrad, "input")):
        assert plan.family == TMA_FAMILY and plan.config.channels_as_n, plan
        assert (plan.config.block_m, plan.config.block_n) == (128, width), plan
        assert plan.config.num_stages >= 3 and plan.split == 1, plan
        assert f"narrow groups: {C // 32} {side} channels per group" in plan.reason
    P = (H + 2 - 3) // stride + 1
    pb = conv_problem(x.shape, w.shape, (32, C, P, P), 32, torch.bfloat16, stride=(stride,) * 2,
                      padding=(1, 1))
    assert all(c.config.channels_as_n for c in candidates(plans.fprop, pb, "cpu"))


def test_the_plan_keeps_wide_tiles_from_64_channels_per_group():
    """64 channels per group (and ungrouped layers) keep the wide tiles."""
    x = torch.empty(32, 128, 28, 28, dtype=torch.float16, device="meta").contiguous(
        memory_format=torch.channels_last)
    w = torch.empty(128, 64, 3, 3, dtype=torch.float16, device="meta")
    plans = fastconv.explain(x, w, padding=1, groups=2, target="sm_90")
    assert plans.fprop.family == "implicit_gemm_tma" and not plans.fprop.config.channels_as_n
    assert plans.dgrad.family == "implicit_gemm_tma" and not plans.dgrad.config.channels_as_n
    assert "narrow" not in plans.fprop.reason


# ---------------------------------------------------------------------------- persistent
@pytest.mark.parametrize("stride,split", [((1, 1), 1), ((2, 2), 1), ((2, 2), 2)])
def test_persistent_programs_loop_over_tiles(stride, split):
    """The persistent variant on a one-SM target: a grid smaller than the tile count, each
    program walking tiles a grid apart (with a split, every split index does so)."""
    from fastconv.ops.target import Target, planning_for
    # 8 warps: at most 8 programs an SM (64 warps), fewer than the 12 or 48 tiles here
    cfg = dataclasses.replace(SMALL, num_warps=8, persistent=True)
    N, C, H, W, K = 2, 16, 16, 16, 96
    x, w, b = _inputs(N, C, H, W, K, 3, 3, 1, torch.float16, bias=True)
    ref = torch.relu(_reference(x, w, b, stride, (1, 1), (1, 1), 1))
    y = _output(ref, torch.float16)
    with planning_for(Target("interpreter", True, sms=1)):
        _, grid, kwargs, _ = tma_fprop_launch(x, w, b, y, stride, (1, 1), (1, 1), 1,
                                              activation=1, config=cfg, split=split)
        P, Q = ref.shape[2:]
        pb = ConvProblem(N, C, H, W, K, P, Q, 3, 3, 1, torch.float16, stride, (1, 1), (1, 1))
        tiles = tma_tiles("fprop", pb, SMALL)
        assert kwargs["PERSISTENT"] and grid[0] < tiles, (grid, tiles)
        y = _run(x, w, b, stride, (1, 1), (1, 1), 1, config=cfg, activation=1, y=y,
                 split=split)
    assert_rel_close(y, ref, torch.float16, f"persistent, stride {stride}, split {split}")


def test_persistent_grid_is_one_program_per_sm_for_the_gpu_tiles():
    for cfg in TMA_PERSISTENT_CONFIGS["16"]:
        # the wide tiles: one an SM (the default SM count, 132); the narrow ones (one
        # warpgroup, at most 24 KB a stage): as many as shared memory holds, 2 or 3
        programs = persistent_programs(cfg, 10_000, "cpu")
        assert programs in ((2 * 132, 3 * 132) if cfg.channels_as_n else (132,)), cfg
        assert persistent_programs(cfg, 50, "cpu") == 50


def test_launch_by_keyword():
    """(kernel, grid, kwargs): every kernel argument by name, descriptors of the phases."""
    x, w, _ = _inputs(2, 16, 9, 9, 16, 3, 3, 1, torch.float16)
    y = _output(torch.empty(2, 16, 5, 5), torch.float16)
    kernel, grid, kwargs, then = tma_fprop_launch(x, w, None, y, (2, 2), (1, 1), (1, 1), 1,
                                            config=SMALL)
    params = set(kernel.arg_names)
    assert params <= set(kwargs) and set(kwargs) - params <= {"num_warps", "num_stages"}
    assert kwargs["x_desc11"].strides[1:3] == [2 * x.stride(2), 2 * x.stride(3)]
    assert kwargs["x_desc11"].base.data_ptr() == x[:, :, 1, 1].data_ptr()
    assert kwargs["STRIDE_H"] == 2
    assert kwargs["BN_IMG"] * kwargs["BH"] * kwargs["BW"] == SMALL.block_m
    assert len(grid) == 1 and grid[0] > 0


def test_eligibility():
    x, w, _ = _inputs(2, 16, 8, 8, 16, 3, 3, 1, torch.float16)
    y = _output(torch.empty(2, 16, 8, 8), torch.float16)
    assert tma_fprop_eligible(x, w, y, 1)
    assert tma_fprop_eligible(x, w, y, 1, stride=(MAX_STRIDE, 1))
    assert not tma_fprop_eligible(x, w, y, 1, stride=(MAX_STRIDE + 1, 1))
    assert not tma_fprop_eligible(x.contiguous(), w, y, 1)         # NCHW x: channels not unit
    assert not tma_fprop_eligible(x, w, y.contiguous(), 1)         # NCHW y
    assert not tma_fprop_eligible(x.double(), w.double(), y.double(), 1)
    assert not tma_fprop_eligible(x, w.bfloat16(), y, 1)
    assert not tma_fprop_eligible(x, w, y, 1, residual=y[:1])
    # CG = 12: x's pixel stride is 24 bytes, not a multiple of 16
    x12, w12, _ = _inputs(2, 12, 8, 8, 16, 3, 3, 1, torch.float16)
    assert not tma_fprop_eligible(x12, w12, y, 1)
    # groups 2 of 8 channels: eligible; of 4: not
    assert tma_fprop_eligible(x, w[:, :8], y, 2)
    assert not tma_fprop_eligible(x, w[:, :4], y, 4)
    # a view whose address is 8 bytes off 16-byte alignment
    flat = torch.randn(2 * 8 * 8 * 16 + 8, dtype=torch.float16)
    shifted = flat[4:4 + 2 * 8 * 8 * 16].view(2, 8, 8, 16).permute(0, 3, 1, 2)
    assert shifted.stride() == x.stride() and not tma_fprop_eligible(shifted, w, y, 1)


def test_box_shapes():
    assert box_shape(128, 32, 7, 7) in ((2, 8, 8), (16, 1, 8))   # several images per box
    assert box_shape(128, 32, 56, 56)[2] in (8, 16)


def test_configs_are_hopper_gemm_tiles():
    for cfg in TMA_CONFIGS["16"]:
        assert (cfg.block_m, cfg.block_k, cfg.num_warps) == (128, 64, 8)
        assert cfg.block_n in (128, 256) and cfg.num_stages >= 3
        assert not cfg.channels_as_n
    # the narrow-group tiles: 128 pixels by 16, 32 or 64 channels, one warpgroup (two for
    # 64 channels, whose forward epilogue spilled on one)
    assert sorted(c.block_n for c in TMA_NARROW_CONFIGS["16"]) == [16, 32, 64]
    for cfg in TMA_NARROW_CONFIGS["16"]:
        assert (cfg.block_m, cfg.block_k) == (128, 64)
        assert cfg.num_warps == (8 if cfg.block_n == 64 else 4)
        assert cfg.channels_as_n and not cfg.persistent and cfg.num_stages >= 3


def test_gpu_check_script_runs_here():
    """fastconv.bench.tma_gpu_check, the GPU run's script, on small cases in the interpreter
    (without its timing): the script itself works when a GPU session gets to run it."""
    from fastconv.bench import tma_gpu_check
    assert tma_gpu_check.halo_is_zero("cpu", config=SMALL)
    tiny = (("tiny g2 s2", 2, 16, 6, 7, 16, 3, 3, 2, 1, 2),)
    rows = tma_gpu_check.check("cpu", layers=tiny, configs=[SMALL], time=False)
    # on a GPU each layer runs the tiles it may take: the grouped layer's narrow ones
    for layer in tma_gpu_check.CHECK_LAYERS:
        name, N, C, H, W, K, R, S, _, _, groups = layer
        for pass_ in ("fprop", "dgrad"):
            tiles = tma_gpu_check._tiles(pass_, N, C, H, W, K, R, S, groups, torch.bfloat16)
            assert tiles and {t.channels_as_n for t in tiles} == {C // groups < 64}, name
    assert sorted((r["pass"], r["dtype"]) for r in rows) == sorted(
        (p, d) for p in tma_gpu_check.PASSES for d in ("bfloat16", "float16"))
    for r in rows:
        assert float(r["rel_err"]) < TOL[getattr(torch, r["dtype"])], r


@pytest.mark.xdist_group("gpu_compile")
def test_sm90_signature(tmp_path):
    """Every TMA_CONFIGS tile, bf16 and fp16, on ResNet-50 layer shapes, compiled for sm_90,
    plain and as its split-K and persistent variants (tma_report.VARIANTS): TMA copies for both
    operands, wgmma with N >= 128 and both operands in shared memory, the configured stages,
    no spills. The narrow variants compile each of ResNeXt-50's grouped 3x3 layers (and a
    group of 40) with its narrow tile: wgmma's N the tile's channels, A (the pixel box) from
    registers, the same TMA, stages and no spills. Runs in a subprocess without
    TRITON_INTERPRET."""
    out = tmp_path / "tma.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "fastconv.bench.tma_report", "--json", str(out),
                           "--variants", "all"],
                          env=env, capture_output=True, text=True, timeout=1800)
    assert out.exists(), proc.stderr[-3000:]
    rows = json.loads(out.read_text())
    wide = [v for v in tma_report.VARIANTS if not v[0].startswith("narrow")]
    narrow = [v for v in tma_report.VARIANTS if v[0].startswith("narrow")]
    assert len(rows) == 2 * (len(TMA_CONFIGS["16"]) * sum(len(v[-1]) for v in wide)
                             + sum(len(v[-1]) for v in narrow))
    assert {r["variant"] for r in rows} == {v[0] for v in tma_report.VARIANTS}
    for r in rows:
        what = f"{r['variant']} {r['layer']} {r['dtype']} {r['tile']}"
        assert not r["error"], f"{what}: {r['error']}"
        assert r["spill_bytes"] == 0, f"{what}: {r['spill_bytes']} bytes of spills"
        assert r["tma_x"] > 0 and r["tma_w"] > 0, \
            f"{what}: TMA copies of x {r['tma_x']}, of the weight {r['tma_w']}"
        widths = {int(s.split("n")[1].split("k")[0]) for s in r["wgmma"]}
        if r["variant"].startswith("narrow"):
            # the group's channels are wgmma's N: the tile's width, A from registers
            assert widths == {int(r["tile"].split("x")[1])}, f"{what}: {r['wgmma']}"
            assert r["wgmma_a"] == "registers", what
        else:
            assert widths and min(widths) >= 128, f"{what}: {r['wgmma']}"
            assert r["wgmma_a"] == "shared", what
        assert r["num_stages"] >= 3 and r["num_stages"] == r["stages"], what
    # the plan's narrow tiles for ResNeXt's groups of 8, 16 and 32 channels all compiled
    assert {r["tile"] for r in rows if r["variant"] == "narrow"} >= \
        {"128x16x64", "128x32x64", "128x64x64"}
    assert proc.returncode == 0, proc.stdout[-3000:]


# ---------------------------------------------------------------------------- through the op
def test_the_op_runs_the_tma_kernel_on_sm90_and_replays_it(kernel_launches):
    """Planned for an sm_90 (here with one SM, so that a tiny grid is enough), an eligible
    forward runs the TMA kernel through ``fastconv.functional.conv2d``: the weight repacked
    first, the call recorded, and a second call of the signature replayed with its own
    tensors (descriptors rebuilt on them)."""
    import fastconv.functional as FC
    from fastconv.ops.launch_cache import CACHES
    from fastconv.ops.target import Target, planning_for
    one_sm = Target("sm_90", False, sms=1, tma=True)

    def tensors():
        x = torch.randn(2, 24, 6, 5).to(torch.bfloat16).contiguous(
            memory_format=torch.channels_last)
        w = torch.randn(40, 24, 3, 3).to(torch.bfloat16)
        return x, w, torch.randn(40).to(torch.bfloat16)
    outs = []
    with planning_for(one_sm), aten_forbidden():
        x, w, b = tensors()
        assert fastconv.explain(x, w, padding=1).fprop.family == "implicit_gemm_tma"
        for _ in range(2):
            x, w, b = tensors()
            outs.append((FC.conv2d(x, w, b, padding=1, stride=(2, 1)), x, w, b))
    assert [name for name, _, _ in kernel_launches] == ["conv2d_fprop_tma_kernel"] * 2
    assert sum(c.hits for c in CACHES) >= 1
    for y, x, w, b in outs:
        ref = F.conv2d(x.double(), w.double(), b.double(), padding=1, stride=(2, 1))
        assert rel_err(y, ref) < TOL[torch.bfloat16]


def test_the_plan_splits_a_late_7x7_layer_on_tma_at_batch_32():
    """ResNet-50's 512 -> 512 3x3 over 7x7 at batch 32 on sm_90 (132 SMs): 56 tiles of 128x128
    (16 x 1 x 8 boxes), too few; split 3 ways (72 steps: 3 ranges of 24) they give 168
    programs, where the 128x256 tile would need 5 ranges of its 28 tiles. explain() says so."""
    from fastconv.conv.autotune import candidates
    from fastconv.conv.launch import conv_problem
    from fastconv.conv.plan import TMA_FAMILY, reduction_steps
    x = torch.randn(32, 512, 7, 7).to(torch.float16).contiguous(
        memory_format=torch.channels_last)
    w = torch.randn(512, 512, 3, 3).to(torch.float16)
    plans = fastconv.explain(x, w, padding=1, target="sm_90")
    fprop = plans.fprop
    assert fprop.family == TMA_FAMILY and fprop.split == 3, fprop
    assert (fprop.config.block_m, fprop.config.block_n) == (128, 128)
    assert not fprop.config.persistent  # the plan's default: nothing has measured it
    assert "split-K 3 (56 output tiles for 132 SMs)" in str(plans)
    assert "72 reduction steps run in 3 ranges (168 programs)" in str(plans)
    pb = conv_problem(x.shape, w.shape, (32, 512, 7, 7), 1, torch.float16, padding=(1, 1))
    assert reduction_steps("fprop", TMA_FAMILY, pb, fprop.config) == 72
    # the autotuner times the plan's tile, its neighbour and its persistent variant, each
    # with its own split
    options = candidates(fprop, pb, "cpu")
    assert [(c.config.block_n, c.config.persistent, c.split) for c in options] == \
        [(128, False, 3), (256, False, 5), (128, True, 3)]
    # a batch of 256 fills the SMs unsplit
    big = torch.empty(256, 512, 7, 7, dtype=torch.float16, device="meta").contiguous(
        memory_format=torch.channels_last)
    assert tma_plan_of(big, w).split == 1


def tma_plan_of(x, w):
    from fastconv.conv.launch import conv_problem
    from fastconv.conv.plan import tma_plan
    from fastconv.ops.target import TARGETS, planning_for
    with planning_for(TARGETS["sm_90"]):
        return tma_plan(conv_problem(x.shape, w.shape, (x.shape[0], w.shape[0], 7, 7), 1,
                                     x.dtype, padding=(1, 1)), x.device)


def test_the_op_runs_the_tma_kernel_split_through_functional(kernel_launches):
    """On an sm_90 target of 2 SMs a 1-tile layer of 18 reduction steps splits in 2: the op
    runs the TMA kernel, then the split-K reduction (bias and relu), also on replay."""
    import fastconv.functional as FC
    from fastconv.ops.target import Target, planning_for
    two_sms = Target("sm_90", False, sms=2, tma=True)

    def tensors():
        x = torch.randn(1, 128, 4, 5).to(torch.float16).contiguous(
            memory_format=torch.channels_last)
        w = (torch.randn(24, 128, 3, 3) / 34).to(torch.float16)
        return x, w, torch.randn(24).to(torch.float16)
    outs = []
    with planning_for(two_sms), aten_forbidden():
        x, w, b = tensors()
        plan = fastconv.explain(x, w, padding=1).fprop
        assert plan.family == "implicit_gemm_tma" and plan.split == 2, plan
        for _ in range(2):
            x, w, b = tensors()
            outs.append((FC.conv2d(x, w, b, padding=1, activation="relu"), x, w, b))
    assert [name for name, _, _ in kernel_launches] == \
        ["conv2d_fprop_tma_kernel", "conv2d_split_reduce_kernel"] * 2
    assert kernel_launches[0][1][1] == 2  # grid axis 1: the split
    for y, x, w, b in outs:
        ref = torch.relu(F.conv2d(x.double(), w.double(), b.double(), padding=1))
        assert_rel_close(y, ref, torch.float16, "split through the op")


# ---------------------------------------------------------------------------- float32 (TF32)
# float32 runs the TMA forward in TF32 (wgmma's only float32 form), so it is held to TF32's
# tolerance (DESIGN.md, numerics). The interpreter's tl.dot multiplies in full float32 whatever
# the input precision, so here the error is float32's; the bound is the kernel's on a GPU.
TF32_CASES = {k: CASES[k] for k in ("1x1", "3x3-pad1", "3x3-s2-cg24", "1x1-s2-downsample",
                                    "resnext-g2-cg24-s2", "g2-cg8-kg24",
                                    "s(1,2)-pad(0,1)-5x3")}
# groups of 4 and 12 channels: 16 and 48 bytes a pixel, TMA-aligned in float32 only
TF32_CASES["g2-cg12-s2"] = (2, 24, 9, 8, 16, 3, 3, (2, 2), (1, 1), (1, 1), 2)
TF32_CASES["g4-cg4"] = (1, 16, 6, 7, 16, 3, 3, (1, 1), (1, 1), (1, 1), 4)


def _assert_tf32_close(out, ref, what):
    from fastconv.numerics import OP_TOLERANCE_TF32
    err = rel_err(out, ref)
    assert err < OP_TOLERANCE_TF32, f"{what}: relative error {err:.3e}"


@pytest.mark.parametrize("case", TF32_CASES.values(), ids=TF32_CASES.keys())
def test_tf32_matches_torch(case):
    N, C, H, W, K, R, S, stride, padding, dilation, groups = case
    x, w, _ = _inputs(N, C, H, W, K, R, S, groups, torch.float32)
    ref = _reference(x, w, None, stride, padding, dilation, groups)
    _, _, kwargs, _ = tma_fprop_launch(x, w, None, _output(ref, torch.float32), stride, padding,
                                       dilation, groups, config=SMALL)
    assert kwargs["ALLOW_TF32"] and kwargs["BLOCK_K"] == 16
    y = _run(x, w, None, stride, padding, dilation, groups, ref_shape=ref.shape)
    _assert_tf32_close(y, ref, f"{case}")


@pytest.mark.parametrize("split", [1, 3])
def test_tf32_fused_epilogue_and_split(split, kernel_launches):
    """Bias, an NCHW residual, SiLU and the pre-activation, grouped at stride 2, unsplit and
    split 3 ways (float32 partial sums, then the split-K reduction's epilogue)."""
    N, C, H, W, K, stride, groups = 2, 32, 9, 7, 48, (2, 2), 2
    x, w, b = _inputs(N, C, H, W, K, 3, 3, groups, torch.float32, bias=True)
    z = _reference(x, w, b, stride, (1, 1), (1, 1), groups)
    residual = torch.randn(z.shape)
    z = z + residual.double()
    preact = _output(z, torch.float32)
    y = _run(x, w, b, stride, (1, 1), (1, 1), groups, residual=residual, activation=3,
             preact=preact, ref_shape=z.shape, split=split)
    names = [name for name, _, _ in kernel_launches]
    assert names == ["conv2d_fprop_tma_kernel"] + ["conv2d_split_reduce_kernel"] * (split > 1)
    _assert_tf32_close(y, F.silu(z), f"split {split}")
    _assert_tf32_close(preact, z, f"pre-activation, split {split}")


def test_tf32_follows_cudnns_switch_in_the_launch():
    x, w, _ = _inputs(1, 16, 6, 6, 16, 3, 3, 1, torch.float32)
    y = _output(torch.empty(1, 16, 6, 6), torch.float32)
    flag = torch.backends.cudnn.allow_tf32
    try:
        for allow in (True, False):
            torch.backends.cudnn.allow_tf32 = allow
            kwargs = tma_fprop_launch(x, w, None, y, (1, 1), (1, 1), (1, 1), 1,
                                      config=SMALL)[2]
            assert kwargs["ALLOW_TF32"] is allow
    finally:
        torch.backends.cudnn.allow_tf32 = flag
    x16, w16 = x.half(), w.half()
    kwargs = tma_fprop_launch(x16, w16, None, y.half(), (1, 1), (1, 1), (1, 1), 1,
                              config=SMALL)[2]
    assert not kwargs["ALLOW_TF32"]


def test_tf32_eligibility():
    """float32: 16-byte alignment is 4 channels per group; float64 never."""
    x, w, _ = _inputs(2, 16, 8, 8, 16, 3, 3, 1, torch.float32)
    y = _output(torch.empty(2, 16, 8, 8), torch.float32)
    assert tma_fprop_eligible(x, w, y, 1)
    assert tma_fprop_eligible(x, w[:, :4], y, 4)          # groups of 4 channels: 16 bytes
    assert not tma_fprop_eligible(x, w[:, :2], y, 8)      # of 2: 8 bytes
    assert not tma_fprop_eligible(x.double(), w.double(), y.double(), 1)
    assert not tma_fprop_eligible(x, w.half(), y, 1)


@pytest.mark.parametrize("layer", [
    ("resnet50 layer1 3x3", 64, 56, 1, 1),
    ("resnet50 layer4 3x3 s2", 512, 14, 2, 1),
    ("resnext g32x4 3x3", 128, 56, 1, 32),  # narrow groups: no float32 narrow tiles
], ids=lambda layer: layer[0])
def test_the_plan_takes_tma_for_float32_only_with_tf32(layer):
    """On sm_90 a float32 channels_last forward takes the TMA kernel (TMA_CONFIGS["32"]) while
    cuDNN's TF32 switch is on, and explain() says TF32; with it off (exact float32) the
    pointer kernels; the input and weight gradients stay on the pointer kernels either way.
    The autotuner's candidates are the float32 table's."""
    from fastconv.conv.autotune import candidates
    from fastconv.conv.launch import conv_problem
    from fastconv.conv.plan import TMA_FAMILY
    _, C, H, stride, groups = layer
    x = torch.empty(32, C, H, H, device="meta").contiguous(memory_format=torch.channels_last)
    w = torch.empty(C, C // groups, 3, 3, device="meta")
    flag = torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = True
        plans = fastconv.explain(x, w, padding=1, stride=stride, groups=groups,
                                 target="sm_90")
        assert plans.dgrad.family != TMA_FAMILY and plans.wgrad.family != TMA_FAMILY
        fprop = plans.fprop
        if groups > 1:
            assert fprop.family != TMA_FAMILY, fprop
        else:
            assert fprop.family == TMA_FAMILY and fprop.config in TMA_CONFIGS["32"], fprop
            assert "float32 in TF32" in fprop.reason
            P = (H + 2 - 3) // stride + 1
            pb = conv_problem(x.shape, w.shape, (32, C, P, P), 1, torch.float32,
                              stride=(stride,) * 2, padding=(1, 1))
            options = candidates(fprop, pb, "cpu")
            assert options[0].config == fprop.config
            assert [c.config.persistent for c in options] == [False, True]
            assert all(dataclasses.replace(c.config, persistent=False) in TMA_CONFIGS["32"]
                       for c in options)
        torch.backends.cudnn.allow_tf32 = False
        plans = fastconv.explain(x, w, padding=1, stride=stride, groups=groups,
                                 target="sm_90")
        assert plans.fprop.family != TMA_FAMILY, plans.fprop
        assert "TF32" not in plans.fprop.reason
    finally:
        torch.backends.cudnn.allow_tf32 = flag


def test_tf32_tiles_fill_shared_memory_and_persist_one_an_sm():
    """float32 tiles: 32 channels a step (a 128-byte row, as 16-bit's 64), 128 pixels by 128
    channels on two warpgroups, 3 stages or more within sm_90's 227 KB; persistent, one
    program an SM."""
    assert TMA_CONFIGS["32"] and not TMA_NARROW_CONFIGS["32"]
    for cfg in TMA_CONFIGS["32"]:
        assert (cfg.block_m, cfg.block_k, cfg.num_warps) == (128, 32, 8)
        stage = (cfg.block_m + cfg.block_n) * cfg.block_k * 4
        assert cfg.num_stages >= 3 and cfg.num_stages * stage <= 227 * 1024 - 4096
    for cfg in TMA_PERSISTENT_CONFIGS["32"]:
        assert persistent_programs(cfg, 10_000, "cpu", element_size=4) == 132


@pytest.mark.xdist_group("gpu_compile")
def test_sm90_signature_tf32(tmp_path):
    """Every TMA_CONFIGS["32"] tile in float32 with TF32 on ResNet-50 layer shapes, compiled
    for sm_90, plain and as its split-K and persistent variants: TMA copies for both operands,
    wgmma on tf32 operands with N >= 128 and both operands in shared memory, the configured
    stages (3 or more), no spills. Runs in a subprocess without TRITON_INTERPRET."""
    out = tmp_path / "tma.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "fastconv.bench.tma_report", "--json", str(out),
                           "--variants", "all", "--dtypes", "fp32"],
                          env=env, capture_output=True, text=True, timeout=1800)
    assert out.exists(), proc.stderr[-3000:]
    rows = json.loads(out.read_text())
    wide = [v for v in tma_report.VARIANTS if not v[0].startswith("narrow")]
    assert len(rows) == len(TMA_CONFIGS["32"]) * sum(len(v[-1]) for v in wide)
    assert {r["variant"] for r in rows} == {v[0] for v in wide}
    for r in rows:
        what = f"{r['variant']} {r['layer']} {r['tile']}"
        assert not r["error"], f"{what}: {r['error']}"
        assert r["spill_bytes"] == 0, f"{what}: {r['spill_bytes']} bytes of spills"
        assert r["tma_x"] > 0 and r["tma_w"] > 0, what
        assert r["wgmma_type"] == ["tf32"], f"{what}: {r['wgmma_type']}"
        widths = {int(s.split("n")[1].split("k")[0]) for s in r["wgmma"]}
        assert widths and min(widths) >= 128 and r["wgmma_a"] == "shared", what
        assert r["num_stages"] >= 3 and r["num_stages"] == r["stages"], what
    assert proc.returncode == 0, proc.stdout[-3000:]
