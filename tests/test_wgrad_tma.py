"""The TMA weight gradient (kernels/conv2d_wgrad_tma.py, fastconv/conv/tma_wgrad_launch.py).

Runs through Triton's interpreter with small tiles under ``aten_forbidden`` (the kernel computed
what is compared), against torch.nn.grad.conv2d_weight in float64. Every launch's output is
poisoned with NaN first, so an element left unwritten shows. The GPU tiles of
TMA_WGRAD_CONFIGS are compiled for sm_90 on ResNet-50 / ResNeXt shapes instead
(test_sm90_signature): this file run as a script prints one JSON row per compile.
"""
import re

import pytest
import torch
import torch.nn.functional as F

import fastconv

from fastconv.conv.tma_launch import MAX_STRIDE
from fastconv.conv.tma_wgrad_launch import tma_wgrad_eligible, tma_wgrad_launch
from fastconv.kernels.configs import TMA_WGRAD_CONFIGS, TileConfig
from helpers import TOL, aten_forbidden, assert_rel_close, compiled_rows, print_compiled_rows

# interpreter tile: 32 output channels x 32 input channels x 16 pixels a step (a box of e.g.
# 1 x 1 x 16 or 2 x 1 x 8); the narrow one splits 24- and 40-channel groups into partial blocks
SMALL = TileConfig(32, 32, 16, 4, 2)
NARROW = TileConfig(16, 16, 16, 4, 2)
DTYPES_16 = [torch.float16, torch.bfloat16]


def _inputs(N, C, H, W, K, R, S, stride, padding, dilation, groups, dtype):
    """(x, dy): channels_last, dy shaped like the convolution's output."""
    x = torch.randn(N, C, H, W, dtype=dtype).to(memory_format=torch.channels_last)
    P = (H + 2 * padding[0] - dilation[0] * (R - 1) - 1) // stride[0] + 1
    Q = (W + 2 * padding[1] - dilation[1] * (S - 1) - 1) // stride[1] + 1
    dy = torch.randn(N, K, P, Q, dtype=dtype).to(memory_format=torch.channels_last)
    return x, dy


def _reference(x, dy, weight_shape, stride, padding, dilation, groups):
    return torch.nn.grad.conv2d_weight(x.double(), weight_shape, dy.double(), stride, padding,
                                       dilation, groups)


def _run(x, dy, weight_shape, stride, padding, dilation, groups, config=SMALL, split=1):
    """The kernel's gradient: its own output unsplit, the test's sum of the ranges split."""
    assert tma_wgrad_eligible(x, dy, weight_shape, groups, stride)
    launch, part = tma_wgrad_launch(x, dy, weight_shape, stride, padding, dilation, groups,
                                    config=config, split=split)
    part.fill_(float("nan"))
    with aten_forbidden():
        launch()
    if split == 1:
        assert part.dtype == x.dtype and part.shape == weight_shape and part.is_contiguous()
        return part
    assert part.dtype == torch.float32 and part.shape == (split, *weight_shape)
    return part.sum(dim=0)  # in split order, as the caller adds them


# (N, C, H, W, K, R, S, stride, padding, dilation, groups); maps are not multiples of the box
CASES = {
    "1x1": (3, 16, 5, 7, 24, 1, 1, (1, 1), (0, 0), (1, 1), 1),
    "3x3-pad1": (2, 16, 7, 9, 16, 3, 3, (1, 1), (1, 1), (1, 1), 1),
    "3x3-s2": (2, 16, 9, 7, 16, 3, 3, (2, 2), (1, 1), (1, 1), 1),
    "1x1-s2-downsample": (2, 32, 9, 9, 16, 1, 1, (2, 2), (0, 0), (1, 1), 1),
    "3x3-dil2": (1, 16, 10, 9, 16, 3, 3, (1, 1), (2, 2), (2, 2), 1),
    "7x7-s2-pad3": (1, 8, 13, 11, 16, 7, 7, (2, 2), (3, 3), (1, 1), 1),
    "g2-cg8": (1, 16, 6, 9, 48, 3, 3, (1, 1), (1, 1), (1, 1), 2),
    "g2-cg24-s2": (2, 48, 8, 7, 32, 3, 3, (2, 2), (1, 1), (1, 1), 2),
    "c24-k40": (2, 24, 5, 6, 40, 3, 3, (1, 1), (1, 1), (1, 1), 1),
    "s(1,2)-pad(0,1)-5x3": (2, 8, 7, 10, 8, 5, 3, (1, 2), (0, 1), (1, 1), 1),
}


@pytest.mark.parametrize("dtype", DTYPES_16, ids=str)
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_matches_torch(case, dtype):
    N, C, H, W, K, R, S, stride, padding, dilation, groups = case
    x, dy = _inputs(N, C, H, W, K, R, S, stride, padding, dilation, groups, dtype)
    shape = (K, C // groups, R, S)
    ref = _reference(x, dy, shape, stride, padding, dilation, groups)
    dw = _run(x, dy, shape, stride, padding, dilation, groups)
    assert_rel_close(dw, ref, dtype, f"{case}")


@pytest.mark.parametrize("dtype", DTYPES_16, ids=str)
@pytest.mark.parametrize("case", ["3x3-s2", "g2-cg24-s2", "c24-k40"])
def test_split_ranges_add_up(case, dtype):
    """Split 3: three float32 partial sums, each of its own range of pixel steps, whose sum is
    the gradient (the 16x16x16 tile on 24 and 40 channels: partial blocks on both sides)."""
    N, C, H, W, K, R, S, stride, padding, dilation, groups = CASES[case]
    x, dy = _inputs(N, C, H, W, K, R, S, stride, padding, dilation, groups, dtype)
    shape = (K, C // groups, R, S)
    ref = _reference(x, dy, shape, stride, padding, dilation, groups)
    dw = _run(x, dy, shape, stride, padding, dilation, groups, config=NARROW, split=3)
    assert_rel_close(dw, ref, dtype, f"{case} split 3")


def test_more_ranges_than_steps():
    """A 3 x 4 map of one image is two boxes of 2 x 8 pixels, two steps: of 5 ranges of one
    step each the last three are empty, and must still store zeros (they were poisoned)."""
    x, dy = _inputs(1, 16, 3, 4, 16, 3, 3, (1, 1), (1, 1), (1, 1), 1, torch.float16)
    shape = (16, 16, 3, 3)
    launch, part = tma_wgrad_launch(x, dy, shape, (1, 1), (1, 1), (1, 1), 1, config=SMALL,
                                    split=5)
    args = launch.arguments
    assert (args["BN_IMG"], args["BH"], args["BW"]) == (1, 2, 8)
    assert args["ITERS_PER_SPLIT"] == 1 and launch.grid[1] == 5
    part.fill_(float("nan"))
    with aten_forbidden():
        launch()
    assert torch.equal(part[2:], torch.zeros_like(part[2:]))
    ref = _reference(x, dy, shape, (1, 1), (1, 1), (1, 1), 1)
    assert_rel_close(part.sum(dim=0), ref, torch.float16, "two steps, five ranges")


@pytest.mark.parametrize("dtype", DTYPES_16, ids=str)
def test_partial_channel_blocks_read_nothing_of_the_next_group(dtype):
    """CG = KG = 24 with 16-channel blocks: group 0's second blocks of x and dy run into group
    1's channels (x's about 300 times larger there); group 1's run past C and K (zeros). The
    gradient stays right only if those rows and columns of a tile are never stored: a column
    past CG would land on the next filter's first channels, a row past KG on the next group's
    filter."""
    N, groups, CG, H, W = 2, 2, 24, 5, 6
    x, dy = _inputs(N, groups * CG, H, W, groups * CG, 3, 3, (1, 1), (1, 1), (1, 1), groups,
                    dtype)
    x[:, CG:] += 300
    shape = (groups * CG, CG, 3, 3)
    ref = _reference(x, dy, shape, (1, 1), (1, 1), (1, 1), groups)
    dw = _run(x, dy, shape, (1, 1), (1, 1), (1, 1), groups, config=NARROW)
    assert_rel_close(dw[:CG], ref[:CG], dtype, "group 0 (its boxes reach group 1)")
    assert_rel_close(dw[CG:], ref[CG:], dtype, "group 1 (its boxes reach past C and K)")


def test_padding_is_tma_zero_fill():
    """With x all large and positive and dy all ones, tap (0, 0) of a padded 3x3 reads the
    halo for the first output row and column: only TMA's zero fill keeps its gradient at the
    sum over the interior pixels that tap really meets."""
    x = (500 + 100 * torch.rand(1, 16, 6, 5)).half().to(memory_format=torch.channels_last)
    dy = torch.ones(1, 16, 6, 5, dtype=torch.float16).to(memory_format=torch.channels_last)
    shape = (16, 16, 3, 3)
    ref = _reference(x, dy, shape, (1, 1), (1, 1), (1, 1), 1)
    dw = _run(x, dy, shape, (1, 1), (1, 1), (1, 1), 1)
    assert_rel_close(dw, ref, torch.float16, "every tap")
    # each corner tap meets 5 x 4 of the 6 x 5 pixels: a non-zero halo would add 11 more
    for r, s in ((0, 0), (0, 2), (2, 0), (2, 2)):
        assert_rel_close(dw[:, :, r, s], ref[:, :, r, s], torch.float16, f"corner tap {r, s}")


def test_launch_by_keyword_on_meta_tensors():
    """The launch is described by name on meta tensors too (the static report builds it so):
    the phase descriptors' doubled strides, the grid over (group, tap, k tile, c tile) by
    ranges, the workspace."""
    x = torch.empty(2, 32, 9, 9, dtype=torch.bfloat16, device="meta",
                    memory_format=torch.channels_last)
    dy = torch.empty(2, 48, 5, 5, dtype=torch.bfloat16, device="meta",
                     memory_format=torch.channels_last)
    shape = (48, 16, 3, 3)
    assert tma_wgrad_eligible(x, dy, shape, 2, (2, 2))
    launch, part = tma_wgrad_launch(x, dy, shape, (2, 2), (1, 1), (1, 1), 2, config=SMALL,
                                    split=2)
    args = launch.arguments
    assert args["x_desc11"].strides[1:3] == [2 * x.stride(2), 2 * x.stride(3)]
    assert args["x_desc00"].block_shape[-1] == SMALL.block_m
    assert args["dy_desc"].block_shape[-1] == SMALL.block_n
    assert args["BN_IMG"] * args["BH"] * args["BW"] == SMALL.block_k
    assert launch.grid == (2 * 9 * 1 * 1, 2) and args["SPLIT_K"] is True
    assert part.shape == (2, *shape) and part.dtype == torch.float32
    _, whole = tma_wgrad_launch(x, dy, shape, (2, 2), (1, 1), (1, 1), 2, config=SMALL)
    assert whole.shape == shape and whole.dtype == torch.bfloat16
    with pytest.raises(ValueError):
        tma_wgrad_launch(x, dy, shape, (3, 3), (1, 1), (1, 1), 2, config=SMALL)


def test_eligibility():
    x, dy = _inputs(2, 16, 8, 8, 16, 3, 3, (1, 1), (1, 1), (1, 1), 1, torch.float16)
    shape = (16, 16, 3, 3)
    assert tma_wgrad_eligible(x, dy, shape, 1, (1, 1))
    assert tma_wgrad_eligible(x, dy, shape, 1, (MAX_STRIDE, 1))
    assert not tma_wgrad_eligible(x, dy, shape, 1, (MAX_STRIDE + 1, 1))
    assert not tma_wgrad_eligible(x.contiguous(), dy, shape, 1, (1, 1))   # NCHW x
    assert not tma_wgrad_eligible(x, dy.contiguous(), shape, 1, (1, 1))   # NCHW dy
    assert not tma_wgrad_eligible(x.float(), dy.float(), shape, 1, (1, 1))
    assert not tma_wgrad_eligible(x, dy.bfloat16(), shape, 1, (1, 1))
    assert not tma_wgrad_eligible(x, dy[:, :8], shape, 1, (1, 1))          # K mismatch
    # groups 2 of 8 channels (KG 8): eligible; 4 groups of 4: not
    assert tma_wgrad_eligible(x, dy, (16, 8, 3, 3), 2, (1, 1))
    assert not tma_wgrad_eligible(x, dy, (16, 4, 3, 3), 4, (1, 1))
    # KG = 12: a dy box's channel row is not 16 bytes a group... and dy's pixel stride 24 bytes
    x24, dy24 = _inputs(2, 16, 8, 8, 24, 3, 3, (1, 1), (1, 1), (1, 1), 2, torch.float16)
    assert not tma_wgrad_eligible(x24, dy24, (24, 8, 3, 3), 2, (1, 1))
    # CG = 12: x's pixel stride is 24 bytes, not a multiple of 16
    x12, _ = _inputs(2, 12, 8, 8, 16, 3, 3, (1, 1), (1, 1), (1, 1), 1, torch.float16)
    assert not tma_wgrad_eligible(x12, dy, (16, 12, 3, 3), 1, (1, 1))
    # a view of x whose address is 8 bytes off 16-byte alignment
    flat = torch.randn(2 * 8 * 8 * 16 + 8, dtype=torch.float16)
    shifted = flat[4:4 + 2 * 8 * 8 * 16].view(2, 8, 8, 16).permute(0, 3, 1, 2)
    assert shifted.stride() == x.stride() and not tma_wgrad_eligible(shifted, dy, shape, 1, (1, 1))


def test_configs_are_hopper_gemm_tiles():
    big = [c for c in TMA_WGRAD_CONFIGS["16"] if c.block_m == 128]
    assert {128, 256} <= {c.block_n for c in big}
    for cfg in TMA_WGRAD_CONFIGS["16"]:
        assert cfg.block_k == 64 and cfg.num_stages >= 3
        assert cfg.num_warps == 4 * (cfg.block_m // 64)  # one warpgroup per 64 rows


@pytest.mark.parametrize("groups,stride", [(1, 1), (2, 2)], ids=["3x3", "grouped-stride-2"])
def test_the_op_runs_the_tma_weight_gradient_on_sm90(kernel_launches, groups, stride):
    """Planned for an sm_90 (of 16 SMs), conv2d's backward runs the TMA weight gradient (at
    stride 1 split into ranges, the plan covering the SMs twice over, then added; the
    stride-2 layer's 8 steps are too few to split): no pointer weight-gradient kernel, the
    gradient against float64 torch."""
    import fastconv.functional as FC
    from fastconv.conv.plan import TMA_FAMILY
    from fastconv.ops.target import Target, planning_for
    sm90 = Target("sm_90", False, sms=16, tma=True)
    dtype = torch.bfloat16
    # 8 x 16 x 16 output pixels at stride 1: 32 steps of 64, enough to split
    x = torch.randn(8, 16, 16, 16).to(dtype).contiguous(memory_format=torch.channels_last)
    w = (torch.randn(32, 16 // groups, 3, 3) / 12).to(dtype).requires_grad_()
    with planning_for(sm90), aten_forbidden():
        plan = fastconv.explain(x, w, stride=stride, padding=1, groups=groups).wgrad
        y = FC.conv2d(x, w, stride=stride, padding=1, groups=groups)
        grad = torch.randn_like(y)
        y.backward(grad)
    assert plan.family == TMA_FAMILY and (plan.split > 1) == (stride == 1), plan
    names = [name for name, _, _ in kernel_launches]
    assert "conv2d_wgrad_tma_kernel" in names and "conv2d_wgrad_igemm_kernel" not in names, names
    wr = w.detach().double().requires_grad_()
    F.conv2d(x.double(), wr, stride=stride, padding=1, groups=groups).backward(grad.double())
    assert_rel_close(w.grad, wr.grad, dtype, "weight gradient")


# ---------------------------------------------------------------------------- sm_90 compiles
# (layer, N, C, H, W, K, R, S, stride, pad, groups): ResNet-50's weight gradients at batch 32,
# and ResNeXt grouped 3x3s of 8 and 16 channels per group
LAYERS = (
    ("64->64 3x3 56x56", 32, 64, 56, 56, 64, 3, 3, 1, 1, 1),
    ("128->128 3x3 s2 56x56", 32, 128, 56, 56, 128, 3, 3, 2, 1, 1),
    ("256->64 1x1 56x56", 32, 256, 56, 56, 64, 1, 1, 1, 0, 1),
    ("512->2048 1x1 7x7", 32, 512, 7, 7, 2048, 1, 1, 1, 0, 1),
    ("512->512 3x3 7x7", 32, 512, 7, 7, 512, 3, 3, 1, 1, 1),
    ("1024->2048 1x1 s2 14x14", 32, 1024, 14, 14, 2048, 1, 1, 2, 0, 1),
    ("resnext 32x8 3x3 s2 56x56", 32, 256, 56, 56, 256, 3, 3, 2, 1, 32),
    ("resnext 32x16 3x3 28x28", 32, 512, 28, 28, 512, 3, 3, 1, 1, 32),
)
SPLITS = (1, 4)  # the gradient's own store, and float32 partial sums


def _descriptor_copies(ptx: str, names) -> dict:
    """TMA copies (``cp.async.bulk.tensor``) per descriptor parameter: the kernel's descriptor
    parameters are its ``.b8 ...[128]`` params, in the order of ``names``; a copy names the
    register that ``cvta.param`` made of one."""
    params = re.findall(r"\.param \.align 64 \.b8 (\w+)\[128\]", ptx)
    of_param = dict(zip(params, names))
    moved = {reg: of_param[p] for reg, p in re.findall(r"mov\.b64\s+(%rd\d+), (\w+);", ptx)
             if p in of_param}
    addr = {reg: moved[src] for reg, src in re.findall(r"cvta\.param\.u64\s+(%rd\d+), (%rd\d+);",
                                                       ptx) if src in moved}
    addr.update(moved)
    counts = dict.fromkeys(names, 0)
    for reg in re.findall(r"cp\.async\.bulk\.tensor[.\w:]*\s+\[[^\]]*\],\s*\[(%rd\d+),", ptx):
        name = addr.get(reg, "unknown")
        counts[name] = counts.get(name, 0) + 1
    return counts


def _compile(job):
    """One JSON-able row per split of one (layer, dtype, config)."""
    import torch
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from fastconv.bench import compile_report as CR

    index, dtype_name, ci = job
    layer, N, C, H, W, K, R, S, st, pad, groups = LAYERS[index]
    cfg = TMA_WGRAD_CONFIGS["16"][ci]
    dtype = getattr(torch, dtype_name)
    P, Q = (H + 2 * pad - R) // st + 1, (W + 2 * pad - S) // st + 1
    x = torch.empty(N, C, H, W, dtype=dtype, device="meta", memory_format=torch.channels_last)
    dy = torch.empty(N, K, P, Q, dtype=dtype, device="meta", memory_format=torch.channels_last)
    rows = []
    for split in SPLITS:
        row = dict(layer=layer, dtype=dtype_name, split=split, cg=C // groups, kg=K // groups,
                   tile=f"{cfg.block_m}x{cfg.block_n}x{cfg.block_k}", warps=cfg.num_warps,
                   num_stages=cfg.num_stages, error="")
        try:
            launch, _ = tma_wgrad_launch(x, dy, (K, C // groups, R, S), (st, st), (pad, pad),
                                         (1, 1), groups, config=cfg, split=split)
            v = CR.variant_of_launch(launch)
            attrs = {(v.kernel.arg_names.index(n),): [["tt.divisibility", 16]]
                     for n in v.divisible_16}
            compiled = triton.compile(ASTSource(v.kernel, v.signature, v.constexprs, attrs),
                                      target=GPUTarget("cuda", 90, 32), options=v.options)
            ptx = compiled.asm["ptx"]
            usage = CR.resource_usage(compiled.asm["cubin"])
            copies = _descriptor_copies(ptx, [n for n, t in v.signature.items()
                                              if t.startswith("tensordesc")])
            row.update(
                registers=usage["REG"], stack=usage["STACK"],
                shared=usage["SHARED"] + int(compiled.metadata.shared),
                stages=compiled.metadata.num_stages,
                tma_x=sum(n for d, n in copies.items() if d.startswith("x_desc")),
                tma_dy=copies.get("dy_desc", 0),
                wgmma=sorted(set(re.findall(
                    r"wgmma\.mma_async\.sync\.aligned\.(m\d+n\d+k\d+)", ptx))),
                # "registers": some wgmma reads A from registers (X^T, by design)
                wgmma_a=("registers" if re.search(r"wgmma\.mma_async[^{]*\{[^}]*\},\s*\{", ptx)
                         else "shared"))
        except Exception as exc:  # noqa: BLE001 -- every failure belongs in the report
            row["error"] = CR.one_line(exc)
        rows.append(row)
    return rows


def _jobs():
    return [(i, d, c) for i in range(len(LAYERS)) for d in ("bfloat16", "float16")
            for c in range(len(TMA_WGRAD_CONFIGS["16"]))]


@pytest.mark.xdist_group("gpu_compile")
def test_sm90_signature():
    """Every TMA_WGRAD_CONFIGS tile, bf16 and fp16, split and not, on ResNet-50 and ResNeXt
    weight-gradient shapes, compiled for sm_90 as the launch specialises it: no error, no
    spills, shared memory within the block's 227 KB, TMA copies of both operands, wgmma with
    N >= 128 where the tile and the layer's output channels allow it, >= 3 stages."""
    rows = compiled_rows(__file__)
    assert len(rows) == len(_jobs()) * len(SPLITS)
    for r in rows:
        what = f"{r['layer']} {r['dtype']} {r['tile']} split {r['split']}"
        assert not r["error"], f"{what}: {r['error']}"
        assert r["stack"] == 0, f"{what}: {r['stack']} bytes of spills"
        assert r["shared"] <= 227 * 1024, f"{what}: {r['shared']} bytes of shared memory"
        assert r["tma_x"] > 0 and r["tma_dy"] > 0, \
            f"{what}: TMA copies of x {r['tma_x']}, of dy {r['tma_dy']}"
        n = [int(re.search(r"n(\d+)k", s).group(1)) for s in r["wgmma"]]
        assert n, f"{what}: no wgmma"
        if int(r["tile"].split("x")[1]) >= 128 and r["kg"] >= 128:
            assert min(n) >= 128, f"{what}: {r['wgmma']}"
        assert r["stages"] >= 3 and r["stages"] == r["num_stages"], what


if __name__ == "__main__":
    print_compiled_rows(_compile, _jobs())
