"""The TMA kernels on a GPU: first correct, then timed against cuDNN. Needs sm_90 or newer.

    python -m fastconv.bench.tma_gpu_check [--csv FILE] [--no-time]

For each layer (tma_report's ResNet-50 layers, a ResNeXt-50 grouped 3x3), 16-bit dtype, pass
(the forward with bias, residual and relu fused; the input gradient; the weight gradient) and
tile of that pass's TMA table a layer may run (the forward's plain and persistent; the narrow
tiles on the grouped layer, the wide ones on the others), each with the split-K the plan gives
it on this GPU (the tile column says "persistent" and "split<n>"): the relative
error against float64 torch, then GPU time (a CUDA graph of the call replayed,
``triton.testing.do_bench_cudagraph``) of fastconv's launches and of cuDNN (``cudnn.benchmark``;
``convolution_backward`` for the gradients), both channels_last. The launches are the seam's
(``fastconv.conv.launch``) for a plan of that tile, the split-K reduction included. Before any
of that, the one check the interpreter cannot settle: the halo of a padded 3x3, read at
negative coordinates, must be TMA's zero fill. Prints one CSV row per case as it finishes.
"""
import argparse
import csv
import sys

import torch
import torch.nn.functional as F

from fastconv.bench.tma_report import LAYERS
from fastconv.conv import launch as L
from fastconv.conv.plan import (TMA_FAMILY, Plan, config_table, kernel_of, narrow_tma_config,
                                split_for)
from fastconv.conv.tma_launch import conv2d_fprop_tma
from fastconv.kernels.configs import TMA_CONFIGS
from fastconv.numerics import OP_TOLERANCE, rel_err
from fastconv.ops.launch_cache import Finish, run_launches

# (name, N, C, H, W, K, R, S, stride, pad, groups)
CHECK_LAYERS = tuple(layer + (1,) for layer in LAYERS) + (
    ("resnext 256->256 3x3 g32 28x28", 32, 256, 28, 28, 256, 3, 3, 1, 1, 32),
)
FIELDS = ("layer", "pass", "dtype", "tile", "rel_err", "tma_ms", "cudnn_ms", "speedup",
          "tma_tflops")
PASSES = ("fprop", "dgrad", "wgrad")


def halo_is_zero(device, dtype=torch.float16, config=None) -> bool:
    """A weight whose only tap is (0, 0) over x all large: the first output row and column
    read only the halo (negative coordinates) and must be exactly 0."""
    config = config or TMA_CONFIGS["16"][-1]
    x = (500 + 100 * torch.rand(2, 64, 9, 10, device=device)).to(dtype)
    x = x.to(memory_format=torch.channels_last)
    w = torch.zeros(64, 64, 3, 3, device=device, dtype=dtype)
    w[:, :, 0, 0] = 1.0 / 64
    y = torch.full((2, 64, 9, 10), float("nan"), device=device, dtype=dtype)
    y = y.to(memory_format=torch.channels_last)
    conv2d_fprop_tma(x, w, None, y, (1, 1), (1, 1), (1, 1), 1, config=config)
    return bool((y[:, :, 0, :] == 0).all() and (y[:, :, :, 0] == 0).all()
                and (y[:, :, 1:, 1:] > 400).all())


def _call(pass_, cfg, x, w, b, res, dy, args):
    """(run, tile label) of one pass of conv2d(x, w, *args) as the seam launches a plan of
    ``cfg`` with the split the plan gives it on this GPU (none elsewhere); ``run()`` starts the
    launches and returns the result: the forward into a new y (bias, residual, relu), or the
    input or weight gradient for the output gradient ``dy``."""
    stride, padding, dilation, groups = args
    pb = L.conv_problem(x.shape, w.shape, dy.shape, groups, x.dtype, *args[:3])
    split = split_for(pass_, TMA_FAMILY, pb, cfg, x.device) if x.is_cuda else 1
    plan = Plan(pass_, TMA_FAMILY, kernel_of(pass_, TMA_FAMILY), cfg, split, "gpu check")
    finish = None
    if pass_ == "fprop":
        out = torch.empty_like(res)
        _, launches = L.conv2d_fprop(x, w, b, out, *args, residual=res, activation=1,
                                     plan=plan)
    elif pass_ == "dgrad":
        out = torch.empty_like(x)
        _, launches = L.conv2d_dgrad(dy, w, out, *args, plan=plan)
    else:
        _, launches, out = L.conv2d_wgrad(x, dy, w.shape, *args, plan=plan)
        if isinstance(out, Finish):
            finish = out
    kernel = next(one.kernel for one in launches if hasattr(one, "kernel"))
    assert kernel is kernel_of(pass_, TMA_FAMILY), kernel

    def run():
        run_launches(launches)
        return finish.fn(*finish.tensors) if finish is not None else out
    tile = f"{cfg.block_m}x{cfg.block_n}x{cfg.block_k}" + \
        (" persistent" if cfg.persistent else "") + (f" split{split}" if split > 1 else "")
    return run, tile


def _tiles(pass_, N, C, H, W, K, R, S, groups, dtype) -> list:
    """The tiles of ``pass_``'s TMA table a layer may run: the narrow ones (and their
    persistent variants) where its groups are narrow (``plan.narrow_tma_config``), else the
    wide ones."""
    pb = L.conv_problem((N, C, H, W), (K, C // groups, R, S), (N, K, H, W), groups, dtype)
    narrow = narrow_tma_config(pass_, pb) is not None
    return [cfg for cfg in config_table(TMA_FAMILY, False)[pass_]["16"]
            if cfg.channels_as_n == narrow]


def check(device="cuda", layers=CHECK_LAYERS, configs=None, dtypes=(torch.bfloat16,
          torch.float16), time=True, out=None, passes=PASSES):
    """Rows (dicts of FIELDS) of every case; ``out``, a csv.DictWriter, gets each at once.
    ``configs``, when given, is the tile list of every pass (default: each pass's TMA table)."""
    import triton.testing

    rows = []
    for name, N, C, H, W, K, R, S, stride, pad, groups in layers:
        for dtype in dtypes:
            x = torch.randn(N, C, H, W, device=device, dtype=dtype)
            x = x.to(memory_format=torch.channels_last)
            w = (torch.randn(K, C // groups, R, S, device=device) / (C // groups * R * S) ** 0.5)
            w = w.to(dtype).to(memory_format=torch.channels_last)
            b = torch.randn(K, device=device, dtype=dtype)
            args = ((stride, stride), (pad, pad), (1, 1), groups)
            ref = F.conv2d(x.double(), w.double(), b.double(), *args)
            res = torch.randn_like(ref).to(dtype).to(memory_format=torch.channels_last)
            dy = torch.randn_like(res)
            flops = 2 * N * K * ref.shape[2] * ref.shape[3] * C // groups * R * S
            for pass_ in passes:
                if pass_ == "fprop":
                    want = torch.relu(ref + res.double())
                    mask = None
                else:
                    mask = [pass_ == "dgrad", pass_ == "wgrad", False]
                    want = torch.ops.aten.convolution_backward(
                        dy.double(), x.double(), w.double(), None, *args[:3], False, (0, 0),
                        groups, mask)[0 if pass_ == "dgrad" else 1]
                cudnn_ms = None
                if time:
                    cudnn_ms = triton.testing.do_bench_cudagraph(
                        (lambda: F.conv2d(x, w, b, *args)) if mask is None else
                        (lambda: torch.ops.aten.convolution_backward(
                            dy, x, w, None, *args[:3], False, (0, 0), groups, mask)))
                for cfg in configs or _tiles(pass_, N, C, H, W, K, R, S, groups, dtype):
                    run, tile = _call(pass_, cfg, x, w, b, res, dy, args)
                    got = run()
                    row = dict(layer=name, dtype=str(dtype).replace("torch.", ""), tile=tile,
                               rel_err=f"{rel_err(got, want):.2e}")
                    row["pass"] = pass_
                    if time:
                        ms = triton.testing.do_bench_cudagraph(run)
                        row.update(tma_ms=f"{ms:.4f}", cudnn_ms=f"{cudnn_ms:.4f}",
                                   speedup=f"{cudnn_ms / ms:.2f}",
                                   tma_tflops=f"{flops / ms / 1e9:.1f}")
                    rows.append(row)
                    if out is not None:
                        out.writerow(row)
                        sys.stdout.flush()
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastconv.bench.tma_gpu_check")
    parser.add_argument("--csv", help="also write the rows to this file")
    parser.add_argument("--no-time", action="store_true", help="correctness only")
    parser.add_argument("--dtypes", nargs="+", choices=["bfloat16", "float16"],
                        default=["bfloat16", "float16"])
    parser.add_argument("--passes", nargs="+", choices=PASSES, default=list(PASSES))
    args = parser.parse_args(argv)
    torch.backends.cudnn.benchmark = True  # the baseline of DESIGN.md's performance method
    halo = halo_is_zero("cuda")
    print(f"halo zero fill (negative TMA coordinates): {halo}", flush=True)
    writer = csv.DictWriter(sys.stdout, fieldnames=FIELDS)
    writer.writeheader()
    rows = check(time=not args.no_time, out=writer, passes=args.passes,
                 dtypes=tuple(getattr(torch, d) for d in args.dtypes))
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            file_writer = csv.DictWriter(f, fieldnames=FIELDS)
            file_writer.writeheader()
            file_writer.writerows(rows)
    bad = [r for r in rows if float(r["rel_err"]) >= OP_TOLERANCE[getattr(torch, r["dtype"])]]
    return 1 if bad or not halo else 0


if __name__ == "__main__":
    sys.exit(main())
