"""Launcher of the TMA weight gradient (``fastconv.kernels.conv2d_wgrad_tma_kernel``).

``tma_wgrad_eligible`` says whether a weight gradient can take the kernel; ``tma_wgrad_launch``
builds its tensor descriptors and describes the launch (a ``KernelLaunch``, every argument by
keyword) together with the tensor it writes. The output contract is ``wgrad_launch``'s
(``fastconv.conv.launch``): unsplit, the gradient itself in the weight's dtype; split, float32
partial sums that the caller adds along dim 0 in a fixed order.
"""
from typing import Sequence, Tuple

import torch
import triton

from fastconv.conv.tma_launch import (MAX_STRIDE, TMA_DTYPES, _descriptor, _tma_capable,
                                      box_shape, tma_readable)
from fastconv.conv.plan import ConvProblem, tma_steps, tma_tiles
from fastconv.kernels import conv2d_wgrad_tma_kernel
from fastconv.kernels.configs import TileConfig
from fastconv.ops._runtime import INTERPRETING, needs_int64, new_output
from fastconv.ops.launch_cache import KernelLaunch


def tma_wgrad_eligible(x: torch.Tensor, dy: torch.Tensor, weight_shape: Sequence[int],
                       groups: int, stride: Sequence[int]) -> bool:
    """Whether the weight gradient of ``conv2d(x, w, stride=stride, groups=groups)``, w of
    ``weight_shape``, given the output gradient ``dy``, can run on the TMA kernel.

    Requires: float16 or bfloat16 x and dy of one dtype; both with unit channel stride
    (channels_last), 16-byte aligned addresses and pixel strides; CG = C / groups and
    KG = K / groups multiples of 8 (TMA's 16-byte rule for a box's channel rows, which also
    keeps every stride-phase view aligned); a stride of at most ``MAX_STRIDE`` on both axes
    (the kernel's four phase descriptors); 32-bit offsets (``needs_int64``: TMA coordinates
    and the epilogue's arithmetic are 32-bit); a GPU with TMA (sm_90 or newer), meta tensors,
    or the interpreter for CPU tensors.
    """
    if x.dtype not in TMA_DTYPES or dy.dtype != x.dtype:
        return False
    if x.dim() != 4 or dy.dim() != 4 or len(weight_shape) != 4 or not _tma_capable(x):
        return False
    N, C, H, W = x.shape
    K, CG = weight_shape[:2]
    if groups < 1 or C != CG * groups or K % groups or dy.shape[:2] != (N, K):
        return False
    if x.numel() == 0 or dy.numel() == 0 or CG % 8 or (K // groups) % 8:
        return False
    if not (tma_readable(x) and tma_readable(dy)):
        return False
    if not all(1 <= st <= MAX_STRIDE for st in stride):
        return False
    return not needs_int64(x, dy)


def tma_wgrad_launch(x: torch.Tensor, dy: torch.Tensor, weight_shape: Sequence[int],
                     stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
                     groups: int, *, config: TileConfig,
                     split: int = 1) -> Tuple[KernelLaunch, torch.Tensor]:
    """(launch, part): the weight gradient's launch and the tensor it writes.

    Args:
        x (Tensor[N, C, H, W]), dy (Tensor[N, K, P, Q]): as ``tma_wgrad_eligible`` accepts them.
        weight_shape: (K, C / groups, R, S).
        stride, padding, dilation: pairs.
        groups: the convolution's groups.
        config: the tile: block_m input channels (x's box, the accumulator's rows), block_n
            output channels (dY's box, wgmma's N), block_k output pixels a step (a box of
            BN_IMG x BH x BW, ``tma_launch.box_shape``), warps and stages; e.g. an entry of
            ``TMA_WGRAD_CONFIGS``.
        split: ranges of the pixel steps (grid axis 1). Each runs ceil(steps / split) steps;
            ranges past the last step sum nothing and write zeros.

    Returns:
        ``part``: with ``split`` 1 the gradient, a new contiguous tensor of ``weight_shape`` in
        x's dtype; otherwise a float32 workspace [split, *weight_shape] of partial sums, to be
        added along dim 0 (in order: bitwise reproducible).
    """
    if not all(1 <= st <= MAX_STRIDE for st in stride):
        raise ValueError(f"tma_wgrad_launch: stride {tuple(stride)} above {MAX_STRIDE}")
    if split < 1:
        raise ValueError(f"tma_wgrad_launch: split {split} < 1")
    N, C, H, W = x.shape
    K, CG, R, S = weight_shape
    P, Q = dy.shape[2:]
    KG = K // groups
    pb = ConvProblem(N, C, H, W, K, P, Q, R, S, groups, x.dtype, tuple(stride), tuple(padding),
                     tuple(dilation))
    bn_img, bh, bw = box_shape(config.block_k, N, P, Q)
    steps = tma_steps("wgrad", pb, config)

    # x as [N, H, W, C]; phase (ph, pw) = pixels (stride * i + ph, stride * j + pw). A phase with
    # no pixel (H <= ph) has no steps either (the kernel skips it): any descriptor will do there.
    x_nhwc = x.permute(0, 2, 3, 1)
    box_x = (bn_img, bh, bw, config.block_m)
    phases = {(ph, pw): _descriptor(x_nhwc[:, ph::stride[0], pw::stride[1]]
                                    if ph < H and pw < W else x_nhwc, box_x)
              for ph in range(stride[0]) for pw in range(stride[1])}
    dy_desc = _descriptor(dy.permute(0, 2, 3, 1), (bn_img, bh, bw, config.block_n))

    if split == 1:
        part = new_output(tuple(weight_shape), x)
        p_strides = (0, *part.stride())  # one range: its index never moves the pointer
    else:
        part = new_output((split, *weight_shape), x, dtype=torch.float32)
        p_strides = part.stride()
    grid = (tma_tiles("wgrad", pb, config), split)
    kwargs = dict(
        **{f"x_desc{ph}{pw}": phases.get((ph, pw), phases[0, 0]) for ph in (0, 1)
           for pw in (0, 1)},
        dy_desc=dy_desc, part_ptr=part,
        N=N, H=H, W=W, P=P, Q=Q, R=R, S=S, CG=CG, KG=KG,
        ITERS_PER_SPLIT=triton.cdiv(steps, split),
        pad_h=padding[0], pad_w=padding[1], dil_h=dilation[0], dil_w=dilation[1],
        stride_pt=p_strides[0], stride_pk=p_strides[1], stride_pc=p_strides[2],
        stride_pr=p_strides[3], stride_ps=p_strides[4],
        SPLIT_K=split > 1,
        # the interpreter's tl.dot is wrong on bfloat16 operands (see kernels._common.mma)
        DOT_IN_FP32=INTERPRETING and x.dtype == torch.bfloat16,
        STRIDE_H=stride[0], STRIDE_W=stride[1], BN_IMG=bn_img, BH=bh, BW=bw,
        BLOCK_M=config.block_m, BLOCK_N=config.block_n,
        num_warps=config.num_warps, num_stages=config.num_stages,
    )
    if config.max_registers:
        kwargs["maxnreg"] = config.max_registers
    return KernelLaunch.from_kwargs(conv2d_wgrad_tma_kernel, grid, kwargs), part
