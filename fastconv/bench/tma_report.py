"""Static sm_90 signature of the TMA forward kernel (``conv2d_fprop_tma_kernel``), no GPU needed.

Compiles the kernel for each dtype (16-bit, and float32 in TF32), each entry of its class's
``TMA_CONFIGS`` and a few ResNet-50
layer shapes, specialised as a launch of ``fastconv.conv.tma_launch`` specialises it (integers
equal to 1 become constants; pointers and integers divisible by 16 are marked so), and reads
what decides whether it can run like a Hopper GEMM: TMA copies (``cp.async.bulk.tensor``) and
which descriptors they read, the wgmma instruction shapes, the pipeline depth, registers, spill
stack and shared memory (``cuobjdump -res-usage``).

    python -m fastconv.bench.tma_report [--json FILE] [--variants plain,split3,...|all]
                                        [--dtypes bf16,fp16,fp32]

Besides the plain tile (``--variants plain``, the default), the kernel's split-K and persistent
variants compile on the layers they are for (``VARIANTS``), and the narrow-group orientation
(``TMA_NARROW_CONFIGS``: the group's channels as wgmma's N) on ResNeXt-50's grouped 3x3 layers,
each with the narrow tile the plan gives it (``narrow_config``; 16-bit only, as the narrow
tiles are). float32 compiles as the launcher passes it with TF32 on (``ALLOW_TF32``).

needs a process without TRITON_INTERPRET. ``--kernels DIR`` compiles the kernel package of a
source tree instead of the installed one.
"""
import argparse
import importlib.util
import json
import os
import re
import sys
import time

import triton

from fastconv.bench.compile_report import resource_usage
from fastconv.conv.tma_launch import box_shape
from fastconv.kernels.configs import TMA_CONFIGS, TMA_NARROW_CONFIGS

# (name, N, C, H, W, K, R, S, stride, pad): ResNet-50 layers at batch 32
LAYERS = (
    ("64->64 3x3 56x56", 32, 64, 56, 56, 64, 3, 3, 1, 1),
    ("128->128 3x3 s2 56x56", 32, 128, 56, 56, 128, 3, 3, 2, 1),
    ("256->64 1x1 56x56", 32, 256, 56, 56, 64, 1, 1, 1, 0),
    ("512->512 3x3 7x7", 32, 512, 7, 7, 512, 3, 3, 1, 1),
)
# ResNeXt-50 32x4d's grouped 3x3 layers at batch 32 (32 groups of 8, 16 and 32 channels; the
# first of each stage at stride 2), and a group of 40 channels (a 64-wide tile, its last 24
# columns past the group): (name, ..., groups)
NARROW_LAYERS = (
    ("resnext g32x8 3x3 s2 56x56", 32, 256, 56, 56, 256, 3, 3, 2, 1, 32),
    ("resnext g32x8 3x3 28x28", 32, 256, 28, 28, 256, 3, 3, 1, 1, 32),
    ("resnext g32x16 3x3 14x14", 32, 512, 14, 14, 512, 3, 3, 1, 1, 32),
    ("resnext g32x32 3x3 s2 14x14", 32, 1024, 14, 14, 1024, 3, 3, 2, 1, 32),
    ("resnext g32x32 3x3 7x7", 32, 1024, 7, 7, 1024, 3, 3, 1, 1, 32),
    ("g8x40 3x3 28x28", 32, 320, 28, 28, 320, 3, 3, 1, 1, 8),
)
DTYPES = ("bf16", "fp16")
TF32_DTYPES = ("fp32",)  # float32 with TF32 on: not in the default run
# Kernel variants beyond the plain tile, each on the layers it is for: split-K (the 7x7 layer
# whose 128x128 grid leaves SMs idle, and a stride-2 layer, whose split ranges cross stride
# phases), the persistent grid, and both together.
# (name, split, persistent, layer names)
VARIANTS = (
    ("plain", 1, False, tuple(layer[0] for layer in LAYERS)),
    ("split3", 3, False, ("128->128 3x3 s2 56x56", "512->512 3x3 7x7")),
    ("persistent", 1, True, ("64->64 3x3 56x56", "128->128 3x3 s2 56x56")),
    ("persistent-split3", 3, True, ("512->512 3x3 7x7",)),
    # the narrow orientation (names starting "narrow"): every grouped layer plain, split-K and
    # persistent on layers of each narrow tile, stride 1 and 2
    ("narrow", 1, False, tuple(layer[0] for layer in NARROW_LAYERS)),
    ("narrow-split3", 3, False, ("resnext g32x8 3x3 s2 56x56", "resnext g32x32 3x3 7x7",
                                 "g8x40 3x3 28x28")),
    ("narrow-persistent", 1, True, ("resnext g32x16 3x3 14x14", "resnext g32x32 3x3 s2 14x14",
                                    "g8x40 3x3 28x28")),
)
def _load_kernel(kernels_dir=None):
    if kernels_dir is None:
        from fastconv.kernels import conv2d_fprop_tma_kernel
        return conv2d_fprop_tma_kernel
    spec = importlib.util.spec_from_file_location(
        "tma_kernels", os.path.join(kernels_dir, "__init__.py"),
        submodule_search_locations=[kernels_dir])
    module = importlib.util.module_from_spec(spec)
    sys.modules["tma_kernels"] = module
    spec.loader.exec_module(module)
    return module.conv2d_fprop_tma_kernel


def _class(dtype: str) -> str:
    return "32" if dtype == "fp32" else "16"


def _configs(dtype="bf16"):
    """(block_m, block_n, block_k, num_warps, num_stages) of TMA_CONFIGS of ``dtype``'s
    class."""
    return [(c.block_m, c.block_n, c.block_k, c.num_warps, c.num_stages)
            for c in TMA_CONFIGS[_class(dtype)]]


def narrow_config(layer):
    """The TMA_NARROW_CONFIGS tile of a grouped layer, as the plan takes it: block_n the
    group's output channels to the next power of two, at least 16."""
    groups = layer[10] if len(layer) > 10 else 1
    width = max(16, triton.next_power_of_2(layer[5] // groups))
    c = next(c for c in TMA_NARROW_CONFIGS["16"] if c.block_n == width)
    return (c.block_m, c.block_n, c.block_k, c.num_warps, c.num_stages)


def launch_signature(kernel, dtype, config, layer, split=1, persistent=False,
                     channels_as_n=False):
    """(signature, constexprs, attrs) of the launch of ``layer`` with ``config``: x, y and
    the residual channels_last, every epilogue feature on, as ``tma_fprop_launch`` passes
    them and Triton's JIT specialises them (BLOCK_K narrowed to the group's channels, as
    ``tma_launch.reduction_block`` does); split ``split`` ways (the workspace float32),
    persistent and in the narrow orientation as asked."""
    _, N, C, H, W, K, R, S, stride, pad = layer[:10]
    groups = layer[10] if len(layer) > 10 else 1
    CG, KG = C // groups, K // groups
    bm, bn, bk, _, _ = config
    bk = min(bk, max(16, triton.next_power_of_2(CG)))
    P = (H + 2 * pad - R) // stride + 1
    Q = (W + 2 * pad - S) // stride + 1
    bn_img, bh, bw = box_shape(bm, N, P, Q)
    steps = R * S * triton.cdiv(CG, bk)  # each tap lies in one stride phase
    ints = dict(N=N, H=H, W=W, P=P, Q=Q, R=R, S=S, CG=CG, CGP=triton.cdiv(CG, bk) * bk, KG=KG,
                groups=groups, ITERS_PER_SPLIT=triton.cdiv(steps, split) if split > 1 else 1,
                pad_h=pad, pad_w=pad, dil_h=1, dil_w=1,
                stride_yn=P * Q * K, stride_yk=1, stride_yp=Q * K, stride_yq=K,
                stride_rn=P * Q * K, stride_rk=1, stride_rp=Q * K, stride_rq=K,
                stride_pt=N * P * Q * K if split > 1 else 0,
                stride_pg=N * P * Q * KG if split > 1 else 0, stride_pm=KG if split > 1 else 0,
                activation=3, has_residual=1, store_preact=1)
    meta = dict(HAS_BIAS=split == 1, DOT_IN_FP32=False, ALLOW_TF32=dtype == "fp32",
                STRIDE_H=stride, STRIDE_W=stride,
                BN_IMG=bn_img, BH=bh, BW=bw, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=8,
                SPLIT_K=split > 1, PERSISTENT=persistent, CHANNELS_AS_N=channels_as_n)
    x_desc = f"tensordesc<{dtype}[{bn_img}, {bh}, {bw}, {bk}]>"
    signature, constexprs, attrs = {}, dict(meta), {}
    for i, name in enumerate(kernel.arg_names):
        if name in meta:
            signature[name] = "constexpr"
        elif name.startswith("x_desc"):
            signature[name] = x_desc
        elif name == "w_desc":
            signature[name] = f"tensordesc<{dtype}[{bn}, {bk}]>"
        elif name.endswith("_ptr"):
            signature[name] = "*fp32" if name == "part_ptr" and split > 1 else f"*{dtype}"
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif ints[name] == 1:  # Triton's JIT turns an integer equal to 1 into a constant
            signature[name] = "constexpr"
            constexprs[name] = 1
        else:
            signature[name] = "i32"
            if ints[name] % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
    return signature, constexprs, attrs


def compile_one(kernel, dtype, config, layer, arch=90, variant=VARIANTS[0]):
    """One report row: the layer, dtype, config and variant (an entry of VARIANTS), and the
    compiled kernel's figures."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    name, split, persistent, _ = variant
    signature, constexprs, attrs = launch_signature(kernel, dtype, config, layer, split,
                                                    persistent, name.startswith("narrow"))
    row = dict(layer=layer[0], variant=name, dtype=dtype,
               tile=f"{config[0]}x{config[1]}x{config[2]}",
               warps=config[3], stages=config[4],
               box="x".join(str(constexprs[k]) for k in ("BN_IMG", "BH", "BW", "BLOCK_K")),
               triton=triton.__version__, error="")
    start = time.perf_counter()
    try:
        compiled = triton.compile(ASTSource(kernel, signature, constexprs, attrs),
                                  target=GPUTarget("cuda", arch, 32),
                                  options={"num_warps": config[3], "num_stages": config[4]})
        ptx = compiled.asm["ptx"]
        usage = resource_usage(compiled.asm["cubin"])
        row.update(
            registers=usage["REG"], spill_bytes=usage["STACK"],
            shared=usage["SHARED"] + int(compiled.metadata.shared),
            num_stages=compiled.metadata.num_stages,
            tma_copies=len(re.findall(r"cp\.async\.bulk\.tensor", ptx)),
            # x's boxes are 4-D, the weight's 2-D: each operand's copies by their rank
            tma_x=len(re.findall(r"cp\.async\.bulk\.tensor\.4d", ptx)),
            tma_w=len(re.findall(r"cp\.async\.bulk\.tensor\.2d", ptx)),
            wgmma=sorted(set(re.findall(r"wgmma\.mma_async\.sync\.aligned\.(m\d+n\d+k\d+)",
                                        ptx))),
            # the operand types: "f16", "bf16" or "tf32" (float32's only tensor-core form)
            wgmma_type=sorted(set(re.findall(
                r"wgmma\.mma_async\.sync\.aligned\.m\d+n\d+k\d+\.f32\.(\w+)\.", ptx))),
            # "shared": every wgmma reads A by descriptor from shared memory (SS), as B always
            # is; "registers": some read it from registers (RS), loaded there from shared first
            wgmma_a=("registers" if re.search(r"wgmma\.mma_async[^{]*\{[^}]*\},\s*\{", ptx)
                     else "shared"),
            ld_global=len(re.findall(r"\bld\.global", ptx)))
    except Exception as exc:  # noqa: BLE001 -- every failure belongs in the report
        row["error"] = " ".join(f"{type(exc).__name__}: {exc}".split())[:600]
    row["compile_s"] = round(time.perf_counter() - start, 1)
    return row


def report(kernel, configs=None, layers=LAYERS + NARROW_LAYERS, dtypes=DTYPES, arch=90,
           variants=VARIANTS[:1]):
    """Rows of every config, dtype and variant, on the variant's layers among ``layers``; a
    narrow variant compiles each layer's own narrow tile (``narrow_config``)."""
    rows = []
    for variant in variants:
        for layer in layers:
            if layer[0] not in variant[3]:
                continue
            narrow = variant[0].startswith("narrow")
            for dtype in dtypes:
                if narrow and _class(dtype) != "16":
                    continue  # no narrow float32 tiles
                for config in ([narrow_config(layer)] if narrow else configs or _configs(dtype)):
                    rows.append(compile_one(kernel, dtype, config, layer, arch, variant))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastconv.bench.tma_report")
    parser.add_argument("--json", help="write the rows to this file")
    parser.add_argument("--kernels", help="load the kernel package from this directory")
    parser.add_argument("--quick", action="store_true", help="one dtype (bf16)")
    parser.add_argument("--dtypes", default=",".join(DTYPES),
                        help="comma-separated, of bf16, fp16, fp32 (TF32) (default: bf16,fp16)")
    parser.add_argument("--variants", default="plain",
                        help="comma-separated names of VARIANTS, or 'all' (default: plain)")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET"):
        raise SystemExit("tma_report: unset TRITON_INTERPRET (nothing compiles under it)")
    kernel = _load_kernel(args.kernels)
    names = args.variants.split(",")
    variants = [v for v in VARIANTS if args.variants == "all" or v[0] in names]
    dtypes = ("bf16",) if args.quick else tuple(args.dtypes.split(","))
    rows = report(kernel, dtypes=dtypes, variants=variants)
    for r in rows:
        print(json.dumps(r))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    bad = [r for r in rows if r["error"] or r.get("spill_bytes")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
