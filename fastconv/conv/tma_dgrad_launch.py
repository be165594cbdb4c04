"""Launcher of the TMA input gradient (``fastconv.kernels.conv2d_dgrad_tma_kernel``): conv2d's
gradient w.r.t. its input, and conv_transpose2d's forward, at any stride.

``tma_dgrad_eligible`` says whether a call can take the kernel; ``tma_dgrad_launches`` describes
what it runs: the weight's repacking (a ``TorchOp``), then the kernel's ``KernelLaunch``, every
argument by keyword. The caller has validated the arguments and allocated ``dx``; with a split
reduction it chains the split-K reduction after the launch, as for ``launch.dgrad_launch``.
"""
from typing import Sequence, Tuple

import torch
import triton

from fastconv.conv.tma_launch import (TMA_DTYPES, _descriptor, _tma_capable, box_shape,
                                      reduction_block, tma_readable)
from fastconv.conv.plan import ConvProblem, tma_steps, tma_tiles
from fastconv.kernels import conv2d_dgrad_tma_kernel
from fastconv.kernels.configs import TileConfig
from fastconv.ops._runtime import INTERPRETING, needs_int64, new_output
from fastconv.ops.launch_cache import KernelLaunch, TorchOp

GROUP_M = 8  # pixel boxes walked per channel-tile column (L2 reuse, as in the TMA forward)


def tma_dgrad_eligible(dy: torch.Tensor, w: torch.Tensor, dx: torch.Tensor, groups: int) -> bool:
    """Whether the input gradient of ``conv2d(x, w, groups=groups)``, ``dy`` into ``dx``, can
    run on the TMA kernel (any stride, padding and dilation).

    Requires: float16 or bfloat16 dy, w and dx; dy and dx with unit channel stride
    (channels_last); a GPU with TMA (sm_90 or newer), the interpreter for CPU tensors, or meta
    tensors; KG = K / groups (dy's channels per group, what the kernel reads by TMA) a multiple
    of 8, and dy's address and pixel strides 16-byte aligned; 32-bit offsets everywhere
    (``needs_int64``: TMA coordinates are 32-bit, and so is the epilogue's arithmetic).
    """
    if dy.dtype not in TMA_DTYPES or w.dtype != dy.dtype or dx.dtype != dy.dtype:
        return False
    if dy.dim() != 4 or w.dim() != 4 or dx.dim() != 4 or not _tma_capable(dy):
        return False
    K, CG = w.shape[:2]
    if groups < 1 or dy.shape[1] != K or dx.shape[1] != CG * groups or K % groups:
        return False
    if dy.numel() == 0 or dx.numel() == 0 or (K // groups) % 8:
        return False
    if not tma_readable(dy) or dx.stride(1) != 1:
        return False
    return not needs_int64(dy, w, dx)


def _copy_taps(buf: torch.Tensor, w: torch.Tensor) -> None:
    """buf [C, R, S, KGP] <- w [K, CG, R, S]: each group's [KG, CG] block transposed, the
    output channels last (buf's columns past KG keep their zeros)."""
    K, CG, R, S = w.shape
    groups = buf.shape[0] // CG
    buf.view(groups, CG, R, S, -1)[..., :K // groups].copy_(
        w.view(groups, K // groups, CG, R, S).permute(0, 2, 3, 4, 1))


def _crsk_weight(w: torch.Tensor, groups: int, kgp: int):
    """(Wt [C, R, S, KGP], the TorchOp that fills it): Wt[g * CG + c, r, s, k] =
    w[g * KG + k, c, r, s], output channels padded with zeros to KGP, a whole number of
    channel blocks."""
    K, CG, R, S = w.shape
    buf = new_output((CG * groups, R, S, kgp), w, fill=0 if kgp != K // groups else None)
    return buf, TorchOp(_copy_taps, (buf, w))


def tma_dgrad_launches(dy: torch.Tensor, w: torch.Tensor, dx: torch.Tensor,
                       stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
                       groups: int, *, config: TileConfig, split: int = 1) -> Tuple[list, object]:
    """(launches, part) of dx = d conv2d(x, w) / dx for the output gradient ``dy``.

    Args:
        dy (Tensor[N, K, P, Q]), w (Tensor[K, C / groups, R, S]), dx (Tensor[N, C, H, W]):
            as ``tma_dgrad_eligible`` accepts them; dx may extend past the forward input's
            extent (conv_transpose2d's output_padding).
        stride, padding, dilation: pairs.
        config: the tile (block_m = BN_IMG * BH * BW input pixels of one stride phase,
            block_n input channels, block_k output channels per step), warps, stages and
            orientation (``config.channels_as_n``: the input channels as wgmma's N, for
            narrow groups); e.g. an entry of ``TMA_DGRAD_CONFIGS`` or ``TMA_NARROW_CONFIGS``.
        split: ways the reduction over (taps, output channels) is split.

    Returns:
        launches: [the weight's repacking (``TorchOp``), the kernel (``KernelLaunch``)].
        part: ``dx`` when ``split`` is 1 (the kernel writes it); else the float32 workspace
            [split, groups, N * H * W, C / groups] of partial sums, by dx's pixel rows
            (n * H + h) * W + w, that the caller reduces into dx.
    """
    # launch.py imports this module; its split-K workspace is imported when a launch needs it
    from fastconv.conv.launch import split_workspace

    N, C, H, W = dx.shape
    K, CG, R, S = w.shape
    KG = K // groups
    bn_img, bh, bw = box_shape(config.block_m, N, triton.cdiv(H, stride[0]),
                               triton.cdiv(W, stride[1]))
    block_k = reduction_block(config, KG)
    kgp = triton.cdiv(KG, block_k) * block_k
    w_t, prep = _crsk_weight(w, groups, kgp)
    dy_desc = _descriptor(dy.permute(0, 2, 3, 1), (bn_img, bh, bw, block_k))
    w_desc = _descriptor(w_t.reshape(C, R * S * kgp), (config.block_n, block_k))

    pb = ConvProblem(N, C, H, W, K, *dy.shape[2:], R, S, groups, dy.dtype, tuple(stride),
                     tuple(padding), tuple(dilation))
    grid = (tma_tiles("dgrad", pb, config),)
    # the largest phase's (tap, channel block) steps, in ranges (ITERS_PER_SPLIT) of the
    # workspace [split, groups, N*H*W, CG] by dx's pixel rows; unsplit, dx and constants
    part, split_args = split_workspace("dgrad", pb, split, tma_steps("dgrad", pb, config), dy,
                                       dx)
    if split > 1:
        if needs_int64(part):
            raise ValueError("tma_dgrad_launches: the split-K workspace needs 64-bit offsets; "
                             "split fewer ways")
        grid += (split,)
    kwargs = dict(
        dy_desc=dy_desc, w_desc=w_desc, dx_ptr=dx, **split_args,
        N=N, H=H, W=W, R=R, S=S, CG=CG, KG=KG, KGP=kgp,
        stride_h=stride[0], stride_w=stride[1], pad_h=padding[0], pad_w=padding[1],
        dil_h=dilation[0], dil_w=dilation[1],
        stride_dxn=dx.stride(0), stride_dxc=dx.stride(1), stride_dxh=dx.stride(2),
        stride_dxw=dx.stride(3),
        # the interpreter's tl.dot is wrong on bfloat16 operands (see kernels._common.mma)
        DOT_IN_FP32=INTERPRETING and dy.dtype == torch.bfloat16,
        SPLIT_K=split > 1, BN_IMG=bn_img, BH=bh, BW=bw,
        BLOCK_N=config.block_n, BLOCK_K=block_k, GROUP_M=GROUP_M,
        CHANNELS_AS_N=config.channels_as_n,
        num_warps=config.num_warps, num_stages=config.num_stages,
    )
    if config.max_registers:
        kwargs["maxnreg"] = config.max_registers
    return [prep, KernelLaunch.from_kwargs(conv2d_dgrad_tma_kernel, grid, kwargs)], part
