"""The TMA input gradient by stride phase (kernels/conv2d_dgrad_tma.py,
fastconv/conv/tma_dgrad_launch.py): conv2d's gradient w.r.t. its input and conv_transpose2d's
forward, both operands read by TMA, at any stride.

Runs through Triton's interpreter with small tiles, every launch under ``aten_forbidden`` and
into a dx poisoned with NaN, compared with float64 torch; the GPU tiles of TMA_DGRAD_CONFIGS are
compiled for sm_90 in a subprocess instead (this file run as a script, ``test_sm90_signature``).
"""
import re

import pytest
import torch
import torch.nn.functional as F

from fastconv.conv.plan import ConvProblem, tma_steps
from fastconv.conv.tma_dgrad_launch import tma_dgrad_eligible, tma_dgrad_launches
from fastconv.kernels.configs import TMA_DGRAD_CONFIGS, TMA_NARROW_CONFIGS, TileConfig
from fastconv.ops.launch_cache import KernelLaunch, TorchOp, run_launches
from helpers import assert_rel_close, aten_forbidden, compiled_rows, print_compiled_rows

KERNEL = "conv2d_dgrad_tma_kernel"
# interpreter tile: 32 phase pixels (e.g. a 1 x 4 x 8 box) x 32 input channels x 16 output
# channels a step
SMALL = TileConfig(32, 32, 16, 4, 2)
DTYPES_16 = [torch.float16, torch.bfloat16]


def _problem(N, C, H, W, K, R, S, stride, padding, dilation, groups, extra, dtype):
    """(dy, w, reference dx): dy and w rounded to ``dtype`` (dy channels_last), the reference
    from them in float64. ``extra`` (rows, columns) makes dx larger than the forward input
    (conv_transpose2d's output_padding): the reference is then conv_transpose2d's forward, else
    autograd's input gradient of conv2d."""
    x = torch.randn(N, C, H, W, dtype=torch.float64)
    w = (torch.randn(K, C // groups, R, S) / (K // groups * R * S) ** 0.5).to(dtype)
    P, Q = F.conv2d(x, w.double(), None, stride, padding, dilation, groups).shape[2:]
    dy = torch.randn(N, K, P, Q).to(dtype).contiguous(memory_format=torch.channels_last)
    if extra == (0, 0):
        x.requires_grad_()
        y = F.conv2d(x, w.double(), None, stride, padding, dilation, groups)
        ref, = torch.autograd.grad(y, x, dy.double())
    else:
        natural = [(n - 1) * st - 2 * p + d * (k - 1) + 1
                   for n, st, p, d, k in zip((P, Q), stride, padding, dilation, (R, S))]
        output_padding = tuple(h + e - n for h, e, n in zip((H, W), extra, natural))
        ref = F.conv_transpose2d(dy.double(), w.double(), None, stride, padding, output_padding,
                                 groups, dilation)
        assert ref.shape[2:] == (H + extra[0], W + extra[1])
    return dy, w, ref


def _poisoned(shape, dtype):
    return torch.full(shape, float("nan"), dtype=dtype).contiguous(
        memory_format=torch.channels_last)


def _run(dy, w, dx, stride, padding, dilation, groups, split=1, config=SMALL):
    """dx as the launches compute it; with a split, the workspace's partial sums added in
    torch (what the caller's reduction kernel does)."""
    assert tma_dgrad_eligible(dy, w, dx, groups)
    launches, part = tma_dgrad_launches(dy, w, dx, stride, padding, dilation, groups,
                                        config=config, split=split)
    assert isinstance(launches[0], TorchOp) and isinstance(launches[1], KernelLaunch)
    with aten_forbidden():
        run_launches(launches)
    if split == 1:
        assert part is dx
        return dx
    N, C, H, W = dx.shape
    assert part.shape == (split, groups, N * H * W, C // groups) and part.dtype == torch.float32
    total = part.sum(0).view(groups, N, H, W, C // groups).permute(1, 0, 4, 2, 3)
    return total.reshape(N, C, H, W)


def _check(case, dtype, split=1, config=SMALL):
    N, C, H, W, K, R, S, stride, padding, dilation, groups, extra = case
    dy, w, ref = _problem(N, C, H, W, K, R, S, stride, padding, dilation, groups, extra, dtype)
    dx = _poisoned(ref.shape, dtype)
    out = _run(dy, w, dx, stride, padding, dilation, groups, split, config)
    assert_rel_close(out, ref, dtype, f"{case} split {split}")


# (N, C, H, W, K, R, S, stride, padding, dilation, groups, extra dx rows/columns); the forward
# input's shape, K output channels
CASES = {
    "3x3-s1": (2, 16, 6, 7, 16, 3, 3, (1, 1), (1, 1), (1, 1), 1, (0, 0)),
    "3x3-s2": (1, 16, 7, 6, 24, 3, 3, (2, 2), (1, 1), (1, 1), 1, (0, 0)),
    "3x3-s3": (1, 16, 8, 7, 16, 3, 3, (3, 3), (1, 1), (1, 1), 1, (0, 0)),
    "5x3-s(3,2)": (1, 16, 11, 9, 16, 5, 3, (3, 2), (2, 1), (1, 1), 1, (0, 0)),
    "1x1-s2-tapless-phases": (2, 24, 7, 6, 16, 1, 1, (2, 2), (0, 0), (1, 1), 1, (0, 0)),
    "7x7-s2-pad3": (1, 16, 9, 11, 16, 7, 7, (2, 2), (3, 3), (1, 1), 1, (0, 0)),
    "3x3-s2-dil2": (1, 16, 9, 8, 16, 3, 3, (2, 2), (2, 2), (2, 2), 1, (0, 0)),
    "3x3-s1-dil(2,3)": (1, 16, 8, 9, 16, 3, 3, (1, 1), (1, 2), (2, 3), 1, (0, 0)),
    # padding above dil * (R - 1): dy is larger than dx plus the window, its edge rows unread
    "pad-above-window-s1": (1, 16, 5, 6, 16, 3, 3, (1, 1), (3, 4), (1, 1), 1, (0, 0)),
    "pad-above-window-s(2,3)": (1, 16, 6, 5, 16, 3, 3, (2, 3), (4, 3), (1, 1), 1, (0, 0)),
    "h-below-stride": (1, 16, 2, 5, 16, 3, 3, (3, 3), (1, 1), (1, 1), 1, (0, 0)),
    "1x1-s3-h-below-stride": (2, 16, 1, 2, 16, 1, 1, (3, 3), (0, 0), (1, 1), 1, (0, 0)),
    # groups: KG 8 and CG 12; KG 24 (a partial 16-channel step) and CG 20
    "g2-kg8-cg12-s2": (1, 24, 6, 5, 16, 3, 3, (2, 2), (1, 1), (1, 1), 2, (0, 0)),
    "g2-kg24-cg20": (2, 40, 5, 6, 48, 3, 3, (1, 1), (1, 1), (1, 1), 2, (0, 0)),
    # C and K past the tile: two channel tiles (the second partial), three partial K steps
    "cg48-kg40-s2": (1, 48, 5, 5, 40, 3, 3, (2, 2), (1, 1), (1, 1), 1, (0, 0)),
    # conv_transpose2d with output_padding: dx rows and columns that receive only some taps
    "transposed-s2-op1": (1, 16, 5, 5, 16, 3, 3, (2, 2), (1, 1), (1, 1), 1, (1, 1)),
    "transposed-s3-op2-dil2": (2, 16, 6, 7, 24, 3, 3, (3, 3), (1, 2), (2, 2), 1, (2, 2)),
}


@pytest.mark.parametrize("dtype", DTYPES_16, ids=str)
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_matches_torch(case, dtype, kernel_launches):
    _check(case, dtype)
    # the kernel's one launch computed dx: nothing else ran (the repack is a torch copy)
    assert [name for name, _, _ in kernel_launches] == [KERNEL]


SPLIT_CASES = {k: CASES[k] for k in ("3x3-s1", "3x3-s2", "1x1-s2-tapless-phases",
                                     "g2-kg24-cg20", "transposed-s3-op2-dil2")}


@pytest.mark.parametrize("dtype", DTYPES_16, ids=str)
@pytest.mark.parametrize("case", SPLIT_CASES.values(), ids=SPLIT_CASES.keys())
def test_split_k(case, dtype, kernel_launches):
    """Three splits of the reduction: the 1x1 stride-2 layer has one step per phase (two
    ranges of three empty), 3x3 stride 1 nine (three each)."""
    _check(case, dtype, split=3)
    names = [name for name, _, _ in kernel_launches]
    assert names == [KERNEL] and kernel_launches[0][1][1] == 3


# ------------------------------------------------------------------ narrow groups
# (groups, input channels per group, output channels per group, stride): the narrow
# orientation puts the group's input channels on wgmma's N, 8, 16, 24 and 40 of them (tiles
# of 16, 16, 32, 64: 24 and 40 run into the next group's rows of Wt, never stored)
NARROW_CASES = {
    "g3-cg8-kg16-s1": (3, 8, 16, (1, 1)),
    "g2-cg16-kg8-s2": (2, 16, 8, (2, 2)),
    "g2-cg24-kg24-s1": (2, 24, 24, (1, 1)),
    "g2-cg40-kg16-s2": (2, 40, 16, (2, 2)),
}


@pytest.mark.parametrize("split", [1, 3])
@pytest.mark.parametrize("case", NARROW_CASES.values(), ids=NARROW_CASES.keys())
def test_narrow_orientation(case, split, kernel_launches):
    """CHANNELS_AS_N: acc [pixels, channels] = dY_box @ Wt_tile^T, the group's input channels
    wgmma's N; unsplit into dx, split 3 ways into the workspace."""
    groups, cg, kg, stride = case
    dtype = torch.float16 if cg % 16 else torch.bfloat16
    width = max(16, 1 << (cg - 1).bit_length())
    config = TileConfig(32, width, 16, 4, 2, channels_as_n=True)
    _check((2, groups * cg, 7, 9, groups * kg, 3, 3, stride, (1, 1), (1, 1), groups, (0, 0)),
           dtype, split, config)
    assert [name for name, _, _ in kernel_launches] == [KERNEL]
    assert kernel_launches[0][2]["CHANNELS_AS_N"]
    assert kernel_launches[0][1][1:] == ((split,) if split > 1 else ())


def test_the_plan_takes_the_narrow_tile_by_input_channels_per_group():
    """The input gradient's channel side is the input channels: 32 groups of 16 input and 64
    output channels take the narrow 16-wide tile for dx and the wide one for the forward;
    32 groups of 8 input channels (ResNeXt-50's layer2) the 16-wide tile too."""
    import fastconv
    for C, K, width in ((512, 2048, 16), (256, 256, 16)):
        x = torch.empty(32, C, 28, 28, dtype=torch.float16, device="meta").contiguous(
            memory_format=torch.channels_last)
        w = torch.empty(K, C // 32, 3, 3, dtype=torch.float16, device="meta")
        plans = fastconv.explain(x, w, padding=1, groups=32, target="sm_90")
        dgrad = plans.dgrad
        assert dgrad.family == "implicit_gemm_tma" and dgrad.config.channels_as_n, dgrad
        assert dgrad.config.block_n == width and dgrad.config.num_stages >= 3
        assert f"narrow groups: {C // 32} input channels per group" in dgrad.reason
        assert plans.fprop.config.channels_as_n == (K // 32 < 64), plans.fprop


def test_iterations_per_split_follow_the_largest_phase():
    """ITERS_PER_SPLIT: the largest phase's taps (3x3 stride 2: 2 x 2) times the K steps."""
    dy = torch.empty(2, 64, 7, 7, dtype=torch.float16, device="meta").contiguous(
        memory_format=torch.channels_last)
    w = torch.empty(64, 32, 3, 3, dtype=torch.float16, device="meta")
    dx = torch.empty(2, 32, 14, 14, dtype=torch.float16, device="meta").contiguous(
        memory_format=torch.channels_last)
    def taps(R, stride, pad, H):  # the largest phase's taps along the rows: 16 channels, 1 step
        return tma_steps("dgrad", ConvProblem(1, 16, H, 1, 16, 1, 1, R, 1, 1, torch.float16,
                                              (stride, 1), (pad, 0)), SMALL)
    assert taps(3, 2, 1, 14) == 2 and taps(1, 2, 0, 14) == 1
    assert taps(3, 3, 1, 2) == 1  # phase 2 (no pixels) would have had one too
    launches, part = tma_dgrad_launches(dy, w, dx, (2, 2), (1, 1), (1, 1), 1, config=SMALL,
                                        split=3)
    args = launches[1].arguments
    assert args["ITERS_PER_SPLIT"] == 6  # 4 taps x 4 steps of 16 channels, in 3 ranges
    assert args["SPLIT_K"] and launches[1].grid[1] == 3
    assert part.shape == (3, 1, 2 * 14 * 14, 32) and part.device.type == "meta"
    launches, part = tma_dgrad_launches(dy, w, dx, (2, 2), (1, 1), (1, 1), 1, config=SMALL)
    assert part is dx and len(launches[1].grid) == 1 and not launches[1].arguments["SPLIT_K"]


@pytest.mark.parametrize("groups", [1, 2])
def test_weight_repack(groups):
    """Wt [C, R * S * KGP]: Wt[g * CG + c, (r * S + s) * KGP + k] = w[g * KG + k, c, r, s],
    zeros past KG."""
    K, CG, R, S = 24, 12, 3, 2
    w = torch.randn(K, CG, R, S).half()
    dy = _poisoned((1, K, 4, 4), torch.float16)
    dx = _poisoned((1, CG * groups, 4, 4), torch.float16)
    launches, _ = tma_dgrad_launches(dy, w, dx, (1, 1), (0, 0), (1, 1), groups, config=SMALL)
    launches[0]()
    KG = K // groups
    KGP = -(-KG // SMALL.block_k) * SMALL.block_k
    wt = launches[0].tensors[0]
    assert wt.shape == (CG * groups, R, S, KGP)
    desc = launches[1].arguments["w_desc"]
    assert list(desc.shape) == [CG * groups, R * S * KGP]
    assert list(desc.block_shape) == [SMALL.block_n, SMALL.block_k]
    for g in range(groups):
        block = wt[g * CG:(g + 1) * CG]
        assert torch.equal(block[..., :KG], w[g * KG:(g + 1) * KG].permute(1, 2, 3, 0))
        assert not block[..., KG:].any()


def test_one_descriptor_over_dy_at_every_stride():
    """dy is one 4-D [N, P, Q, K] descriptor, not stride-phase views, at stride 3 as at 1."""
    dy = _poisoned((2, 16, 3, 3), torch.float16)
    w = torch.randn(16, 8, 3, 3).half()
    dx = _poisoned((2, 8, 9, 9), torch.float16)
    launches, _ = tma_dgrad_launches(dy, w, dx, (3, 3), (0, 0), (1, 1), 1, config=SMALL)
    args = launches[1].arguments
    desc = args["dy_desc"]
    assert list(desc.shape) == [2, 3, 3, 16] and desc.base.data_ptr() == dy.data_ptr()
    assert list(desc.block_shape) == [args["BN_IMG"], args["BH"], args["BW"], SMALL.block_k]
    assert args["BN_IMG"] * args["BH"] * args["BW"] == SMALL.block_m
    # 9 phases x (boxes of a 3 x 3 phase grid) x 1 channel tile
    assert launches[1].grid[0] % 9 == 0 and args["stride_h"] == 3


def test_eligibility():
    dy = _poisoned((2, 16, 8, 8), torch.float16)
    w = torch.randn(16, 16, 3, 3).half()
    dx = _poisoned((2, 16, 8, 8), torch.float16)
    assert tma_dgrad_eligible(dy, w, dx, 1)
    assert tma_dgrad_eligible(dy.bfloat16(), w.bfloat16(), dx.bfloat16(), 1)
    assert not tma_dgrad_eligible(dy.float(), w.float(), dx.float(), 1)
    assert not tma_dgrad_eligible(dy, w.bfloat16(), dx, 1)
    assert not tma_dgrad_eligible(dy, w, dx.bfloat16(), 1)
    assert not tma_dgrad_eligible(dy.contiguous(), w, dx, 1)      # NCHW dy
    assert not tma_dgrad_eligible(dy, w, dx.contiguous(), 1)      # NCHW dx
    # groups 2 of KG 8: eligible; 4 of KG 4, or KG 12, not
    assert tma_dgrad_eligible(dy, w[:, :8], dx, 2)
    assert not tma_dgrad_eligible(dy, w[:, :4], dx, 4)
    dy12 = _poisoned((2, 12, 8, 8), torch.float16)
    assert not tma_dgrad_eligible(dy12, w[:12], dx, 1)
    # dy's address 8 bytes off 16-byte alignment
    flat = torch.randn(2 * 8 * 8 * 16 + 8, dtype=torch.float16)
    shifted = flat[4:4 + 2 * 8 * 8 * 16].view(2, 8, 8, 16).permute(0, 3, 1, 2)
    assert shifted.stride() == dy.stride() and not tma_dgrad_eligible(shifted, w, dx, 1)
    # meta tensors: eligible, unless an offset reaches 2**31
    meta = dict(dtype=torch.float16, device="meta")
    big = torch.empty(2, 16, 2**14, 2**12, **meta).contiguous(memory_format=torch.channels_last)
    assert tma_dgrad_eligible(dy.to("meta"), w.to("meta"), dx.to("meta"), 1)
    assert not tma_dgrad_eligible(big, w.to("meta"), dx.to("meta"), 1)
    assert not tma_dgrad_eligible(dy, w, dx, 3)                    # C is not CG * groups


def test_configs_are_hopper_gemm_tiles():
    for cfg in TMA_DGRAD_CONFIGS["16"]:
        assert (cfg.block_m, cfg.block_k, cfg.num_warps) == (128, 64, 8)
        assert cfg.block_n in (128, 256) and cfg.num_stages >= 3
        assert not cfg.channels_as_n


# ------------------------------------------------------------------ sm_90 code generation
# ResNet-50's input gradients at batch 32 and ResNeXt's grouped 3x3 (32 groups of 8 and of 16
# channels), as the forward layer: (name, N, C, H, W, K, R, S, stride, padding, groups); each
# compiled with every TMA_DGRAD_CONFIGS tile (the wide orientation)
COMPILE_LAYERS = [
    ("64->64 3x3 56x56", 32, 64, 56, 56, 64, 3, 3, 1, 1, 1),
    ("128->128 3x3 s2 56x56", 32, 128, 56, 56, 128, 3, 3, 2, 1, 1),
    ("256->64 1x1 56x56", 32, 256, 56, 56, 64, 1, 1, 1, 0, 1),
    ("512->512 3x3 7x7", 32, 512, 7, 7, 512, 3, 3, 1, 1, 1),
    ("1024->2048 1x1 s2 14x14", 32, 1024, 14, 14, 2048, 1, 1, 2, 0, 1),
    ("resnext 256 g32x8 3x3 56x56", 32, 256, 56, 56, 256, 3, 3, 1, 1, 32),
    ("resnext 512 g32x16 3x3 28x28", 32, 512, 28, 28, 512, 3, 3, 1, 1, 32),
]
# ResNeXt-50's grouped 3x3 layers (32 groups of 8, 16, 32 channels, the first of a stage at
# stride 2) and a group of 40, each compiled with its narrow tile (NARROW_COMPILE: the tile
# the plan takes, block_n its input channels per group to a power of two)
NARROW_COMPILE_LAYERS = [
    ("resnext 256 g32x8 3x3 s2 56x56", 32, 256, 56, 56, 256, 3, 3, 2, 1, 32),
    ("resnext 256 g32x8 3x3 28x28", 32, 256, 28, 28, 256, 3, 3, 1, 1, 32),
    ("resnext 512 g32x16 3x3 14x14", 32, 512, 14, 14, 512, 3, 3, 1, 1, 32),
    ("resnext 1024 g32x32 3x3 s2 14x14", 32, 1024, 14, 14, 1024, 3, 3, 2, 1, 32),
    ("resnext 1024 g32x32 3x3 7x7", 32, 1024, 7, 7, 1024, 3, 3, 1, 1, 32),
    ("g8x40 3x3 28x28", 32, 320, 28, 28, 320, 3, 3, 1, 1, 8),
]
NARROW_COMPILE = "narrow"
COMPILE_DTYPES = ("bfloat16", "float16")


def _compile(job):
    """One JSON-able row: the sm_90 compile of one launch, built on meta tensors and
    specialised as Triton's JIT specialises it (fastconv's compile report helpers), with what
    its PTX says of TMA copies and wgmma."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from fastconv.bench import compile_report as CR

    index, dtype_name, cfg_index = job
    if cfg_index == NARROW_COMPILE:
        name, N, C, H, W, K, R, S, stride, pad, groups = NARROW_COMPILE_LAYERS[index]
        width = max(16, triton.next_power_of_2(C // groups))
        cfg = next(c for c in TMA_NARROW_CONFIGS["16"] if c.block_n == width)
    else:
        name, N, C, H, W, K, R, S, stride, pad, groups = COMPILE_LAYERS[index]
        cfg = TMA_DGRAD_CONFIGS["16"][cfg_index]
    dtype = getattr(torch, dtype_name)
    P, Q = (H + 2 * pad - R) // stride + 1, (W + 2 * pad - S) // stride + 1
    meta = dict(dtype=dtype, device="meta", memory_format=torch.channels_last)
    dy, dx = torch.empty(N, K, P, Q, **meta), torch.empty(N, C, H, W, **meta)
    w = torch.empty(K, C // groups, R, S, dtype=dtype, device="meta")
    assert tma_dgrad_eligible(dy, w, dx, groups)
    launches, _ = tma_dgrad_launches(dy, w, dx, (stride, stride), (pad, pad), (1, 1), groups,
                                     config=cfg)
    variant = CR.variant_of_launch(launches[1], direction="dgrad", family="implicit_gemm_tma",
                                   dtype=dtype)
    row = CR.compile_variant(variant, 90)
    out = dict(layer=name, dtype=dtype_name, tile=f"{cfg.block_m}x{cfg.block_n}x{cfg.block_k}",
               narrow=cfg.channels_as_n,
               num_stages=cfg.num_stages, box="x".join(str(launches[1].meta[k])
                                                        for k in ("BN_IMG", "BH", "BW")),
               registers=row["registers"], stack=row["stack"], shared=row["shared"],
               loads=row["global_loads"], error=row["error"])
    if not row["error"]:
        # the same compile again (Triton's cache): its PTX and the stages it pipelined
        kernel = variant.kernel
        attrs = {(kernel.arg_names.index(n),): [["tt.divisibility", 16]]
                 for n in variant.divisible_16}
        compiled = triton.compile(ASTSource(kernel, variant.signature, variant.constexprs, attrs),
                                  target=GPUTarget("cuda", 90, 32), options=variant.options)
        ptx = compiled.asm["ptx"]
        out.update(
            stages=compiled.metadata.num_stages,
            # dy's boxes are 4-D, the weight's 2-D: each operand's copies by their rank
            tma_dy=len(re.findall(r"cp\.async\.bulk\.tensor\.4d", ptx)),
            tma_w=len(re.findall(r"cp\.async\.bulk\.tensor\.2d", ptx)),
            wgmma=sorted(set(re.findall(r"wgmma\.mma_async\.sync\.aligned\.(m\d+n\d+k\d+)",
                                        ptx))),
            # an A operand read from registers shows as a brace list before B's descriptor
            wgmma_a=("registers" if re.search(r"wgmma\.mma_async[^{]*\{[^}]*\},\s*\{", ptx)
                     else "shared"))
    return out


def _compile_jobs():
    return [(i, d, c) for c in range(len(TMA_DGRAD_CONFIGS["16"]))
            for i in range(len(COMPILE_LAYERS)) for d in COMPILE_DTYPES] + \
        [(i, d, NARROW_COMPILE) for i in range(len(NARROW_COMPILE_LAYERS))
         for d in COMPILE_DTYPES]


def main():
    print_compiled_rows(_compile, _compile_jobs())


@pytest.mark.xdist_group("gpu_compile")
def test_sm90_signature():
    """Every TMA_DGRAD_CONFIGS tile, bf16 and fp16, on the layers above, compiled for sm_90: no
    error, no spills, TMA copies for both operands, wgmma with N >= 128 (the pixels) and both
    operands in shared memory, at least 3 stages. The narrow tiles on ResNeXt's grouped layers
    (NARROW_COMPILE_LAYERS): the same, but wgmma's N the tile's width (the group's input
    channels) and its A operand (dy's box) from registers."""
    rows = compiled_rows(__file__)
    assert len(rows) == len(_compile_jobs())
    for r in rows:
        what = f"{r['layer']} {r['dtype']} {r['tile']}"
        assert not r["error"], f"{what}: {r['error']}"
        assert int(r["stack"]) == 0, f"{what}: {r['stack']} bytes of spill stack"
        assert r["tma_dy"] > 0 and r["tma_w"] > 0, \
            f"{what}: TMA copies of dy {r['tma_dy']}, of the weight {r['tma_w']}"
        widths = {int(re.search(r"n(\d+)", s).group(1)) for s in r["wgmma"]}
        if r["narrow"]:
            assert widths == {int(r["tile"].split("x")[1])}, f"{what}: {r['wgmma']}"
            assert r["wgmma_a"] == "registers", what
        else:
            assert widths and min(widths) >= 128, f"{what}: {r['wgmma']}"
            assert r["wgmma_a"] == "shared", what
        assert r["num_stages"] >= 3 and r["stages"] == r["num_stages"], what


if __name__ == "__main__":
    main()


# ---------------------------------------------------------------------------- through the op
@pytest.mark.parametrize("groups,stride,dilation,padding,output_padding", [
    (1, 1, 1, 1, 0), (2, 1, 2, 1, 0), (1, 2, 1, 1, 0), (2, 2, 1, 1, 0), (1, 2, 2, 2, 1)],
    ids=["3x3", "grouped-dilated", "stride-2", "grouped-stride-2", "transposed-op"])
def test_the_ops_run_the_tma_input_gradient_on_sm90(kernel_launches, groups, stride, dilation,
                                                    padding, output_padding):
    """Planned for an sm_90 (one SM, so that a tiny grid is enough), conv2d's backward and
    conv_transpose2d's forward run the TMA input gradient at every stride: no pointer
    input-gradient kernel, the result against float64 torch."""
    import fastconv.functional as FC
    from fastconv.ops.target import Target, planning_for
    one_sm = Target("sm_90", False, sms=1, tma=True)
    dtype = torch.float16
    x = torch.randn(2, 32, 7, 6).to(dtype).contiguous(memory_format=torch.channels_last)
    w = (torch.randn(16, 32 // groups, 3, 3) / 9).to(dtype)
    conv = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    with planning_for(one_sm), aten_forbidden():
        if output_padding:
            wt = w.transpose(0, 1).contiguous() if groups == 1 else w
            out = FC.conv_transpose2d(x, wt, output_padding=output_padding, **conv)
        else:
            xg = x.clone().requires_grad_()
            y = FC.conv2d(xg, w, **conv)
            grad = torch.randn_like(y)
            y.backward(grad)
    names = [name for name, _, _ in kernel_launches]
    assert KERNEL in names and "conv2d_dgrad_igemm_kernel" not in names, names
    if output_padding:
        ref = F.conv_transpose2d(x.double(), wt.double(), output_padding=output_padding, **conv)
        assert_rel_close(out, ref, dtype, "conv_transpose2d")
    else:
        xr = x.double().requires_grad_()
        F.conv2d(xr, w.double(), **conv).backward(grad.double())
        assert_rel_close(xg.grad, xr.grad, dtype, "input gradient")
