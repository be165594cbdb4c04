"""Launcher of the TMA forward implicit GEMM (``fastconv.kernels.conv2d_fprop_tma_kernel``).

``tma_fprop_eligible`` says whether a forward conv2d can take the kernel; ``tma_fprop_launch``
builds its tensor descriptors and returns ``(kernel, grid, kwargs, then)``, every kernel argument
and launch option by keyword, and the split-K reduction that follows a split launch (else None);
``conv2d_fprop_tma`` starts them. The caller has validated the arguments and allocated ``y``
(and ``preact``), as for ``conv2d_launch.conv2d_fprop``. A persistent tile
(``TileConfig.persistent``) launches ``persistent_programs`` programs.
"""
from typing import Optional, Sequence

import torch
import triton
from triton.tools.tensor_descriptor import TensorDescriptor

from fastconv.kernels import conv2d_fprop_tma_kernel
from fastconv.kernels.configs import TileConfig
# box_shape lives with the plan, which counts the kernel's tiles; callers import it from here
from fastconv.conv.plan import ConvProblem, box_shape, tma_steps, tma_tiles  # noqa: F401
from fastconv.ops._runtime import INTERPRETING, needs_int64, new_output
from fastconv.ops.target import sm_count
from fastconv.ops.launch_cache import KernelLaunch, TorchOp

TMA_DTYPES = (torch.float16, torch.bfloat16)
# The forward also takes float32, multiplied in TF32 where cuDNN's switch allows it (the plan
# keeps exact float32 on the pointer kernels, see plan.tma_plan): wgmma has no exact fp32
TMA_FPROP_DTYPES = TMA_DTYPES + (torch.float32,)
# The kernel takes the stride phases as four descriptor parameters (see its docstring)
MAX_STRIDE = 2
GROUP_M = 8  # m tiles walked per n-tile column (L2 reuse; Triton's matmul tutorial uses 8)
_TMA_ALIGN = 16  # bytes: TMA's alignment of the base address and of every non-unit stride
_SHARED_PER_SM = 227 * 1024  # sm_90's shared memory a block may take


def _tma_capable(t: torch.Tensor) -> bool:
    """A device with TMA, the interpreter's CPU, or meta tensors (a plan for a named target,
    ``plan.planning_for``, decides there)."""
    if t.device.type == "cuda":
        return torch.cuda.get_device_capability(t.device)[0] >= 9
    return t.device.type == "meta" or (INTERPRETING and t.device.type == "cpu")


def tma_fprop_eligible(x: torch.Tensor, w: torch.Tensor, y: torch.Tensor, groups: int,
                       residual: Optional[torch.Tensor] = None,
                       stride: Optional[Sequence[int]] = None) -> bool:
    """Whether ``conv2d(x, w, groups=groups)`` into ``y`` can run on the TMA kernel.

    Requires: float16, bfloat16 or float32 x, w and y; x and y with unit channel stride
    (channels_last); a GPU with TMA (sm_90 or newer), or the interpreter for CPU tensors;
    CG = C / groups a whole number of 16 bytes (8 16-bit or 4 float32 channels) and x's pixel
    strides and address 16-byte aligned (TMA's rule, which also keeps every stride-phase view
    aligned); 32-bit offsets everywhere (``needs_int64``: TMA coordinates
    are 32-bit, and so is the epilogue's arithmetic); ``residual``, if any, shaped like y.
    ``stride``, when given, must be at most ``MAX_STRIDE`` on both axes; without it that rule is
    left to ``tma_fprop_launch``, which raises ValueError.
    """
    if x.dtype not in TMA_FPROP_DTYPES or w.dtype != x.dtype or y.dtype != x.dtype:
        return False
    if x.dim() != 4 or w.dim() != 4 or y.dim() != 4 or not _tma_capable(x):
        return False
    N, C, H, W = x.shape
    K, CG = w.shape[:2]
    if groups < 1 or C != CG * groups or K % groups or x.numel() == 0 or y.numel() == 0:
        return False
    if CG % (_TMA_ALIGN // x.element_size()) or not tma_readable(x) or y.stride(1) != 1:
        return False
    if residual is not None and tuple(residual.shape) != tuple(y.shape):
        return False
    if stride is not None and not all(1 <= s <= MAX_STRIDE for s in stride):
        return False
    return not needs_int64(x, w, y, residual)


def tma_readable(t: torch.Tensor) -> bool:
    """Whether TMA can read the 4-D [N, C, H, W] tensor ``t`` as [N, H, W, C]: unit channel
    stride (channels_last), its address and its other strides (of dimensions longer than 1)
    16-byte aligned."""
    step = _TMA_ALIGN // t.element_size()
    return t.stride(1) == 1 and t.data_ptr() % _TMA_ALIGN == 0 \
        and not any(t.stride(d) % step for d in (0, 2, 3) if t.shape[d] > 1)


def _descriptor(t: torch.Tensor, block_shape) -> TensorDescriptor:
    """A descriptor over the strided view ``t`` (last stride 1). A dimension of size 1 may carry
    any stride in torch; TMA wants every stride aligned, and one never stepped may be anything
    aligned."""
    step = _TMA_ALIGN // t.element_size()
    strides = [st if size > 1 else step for size, st in zip(t.shape[:-1], t.stride()[:-1])]
    return TensorDescriptor(t, list(t.shape), strides + [1], list(block_shape))


def _copy_channels(buf: torch.Tensor, w: torch.Tensor) -> None:
    buf[..., :w.shape[1]].copy_(w.permute(0, 2, 3, 1))


def _krsc_weight(w: torch.Tensor, cgp: int):
    """(the weight as [K, R, S, CGP], the TorchOp that fills it or None): a channels_last
    weight's memory order, channels padded with zeros to CGP, a whole number of channel
    blocks; ``w`` itself (a view) when it already is that."""
    K, CG, R, S = w.shape
    w_krsc = w.permute(0, 2, 3, 1)
    if cgp == CG and w_krsc.is_contiguous() and w_krsc.data_ptr() % _TMA_ALIGN == 0:
        return w_krsc, None
    buf = new_output((K, R, S, cgp), w, fill=0 if cgp != CG else None)
    return buf, TorchOp(_copy_channels, (buf, w))


def tma_fprop_launches(x, w, bias, y, stride, padding, dilation, groups, residual=None,
                       activation=0, preact=None, *, config: TileConfig, split: int = 1) -> list:
    """What a call runs (``tma_fprop_launch``'s arguments): the weight's repacking, if it
    needs one (a ``TorchOp``), then the kernel's ``KernelLaunch`` and, split, the split-K
    reduction that follows it."""
    launch, prep = _launch(x, w, bias, y, stride, padding, dilation, groups, residual,
                           activation, preact, config, split)
    return ([prep] if prep is not None else []) + launch.chain()


def tma_fprop_launch(x: torch.Tensor, w: torch.Tensor, bias: Optional[torch.Tensor],
                     y: torch.Tensor, stride: Sequence[int], padding: Sequence[int],
                     dilation: Sequence[int], groups: int,
                     residual: Optional[torch.Tensor] = None, activation: int = 0,
                     preact: Optional[torch.Tensor] = None, *,
                     config: TileConfig, split: int = 1) -> tuple:
    """(kernel, grid, kwargs, then) of y = act(conv2d(x, w) + bias + residual): start it with
    ``kernel[grid](**kwargs)``, then ``then`` (a ``KernelLaunch``, or None). ``kwargs`` holds
    every kernel argument and the launch options.

    Args:
        x (Tensor[N, C, H, W]), w (Tensor[K, C / groups, R, S]), bias (Tensor[K] or None),
        y (Tensor[N, K, P, Q]): as ``tma_fprop_eligible`` accepts them.
        stride, padding, dilation: pairs.
        residual (Tensor[N, K, P, Q] or None): added before the activation.
        activation: a code of ``fastconv.kernels._common`` (0: none).
        preact (Tensor like y, or None): receives the value before the activation.
        config: the tile (block_m = BN_IMG * BH * BW output pixels, block_n output channels,
            block_k channels per step), warps and stages, and whether the kernel runs
            persistent (``config.persistent``) and in which orientation
            (``config.channels_as_n``: the output channels as wgmma's N, for narrow groups);
            e.g. an entry of ``TMA_CONFIGS`` or ``TMA_NARROW_CONFIGS``.
        split: split-K. Above 1, the reduction (all stride phases' steps, in the kernel's
            order) is cut into ``split`` ranges of ``cdiv(steps, split)`` steps (grid axis 1);
            each program stores its float32 partial sum into a workspace [split, groups,
            N*P*Q, KG] allocated here, and ``then`` (the split-K reduction) adds them and
            applies bias, residual, activation and pre-activation.

    The weight is repacked first where it needs to be (see ``_krsc_weight``).
    """
    launch, prep = _launch(x, w, bias, y, stride, padding, dilation, groups, residual,
                           activation, preact, config, split)
    if prep is not None:
        prep()
    return launch.kernel, launch.grid, launch.arguments, launch.then


def persistent_programs(config: TileConfig, tiles: int, device, element_size: int = 2) -> int:
    """Grid of the persistent kernel: as many programs as the SMs hold at once, at most one
    per tile. Per SM: as many as its shared memory holds the stages' x and weight tiles
    (of ``element_size`` bytes an element), and its 64 resident warps (one for the GPU
    tiles, 128x128 and 128x256 in 4 and 3 stages, float32's 128x128x32 in 6)."""
    stage_bytes = (config.block_m + config.block_n) * config.block_k * element_size
    per_sm = min(max(1, _SHARED_PER_SM // (stage_bytes * max(config.num_stages, 1))),
                 max(1, 64 // config.num_warps))
    return max(1, min(tiles, sm_count(device) * per_sm))


def reduction_block(config: TileConfig, channels: int) -> int:
    """BLOCK_K of a TMA launch that reduces over ``channels`` per tap: the tile's, or fewer
    where the group has fewer channels (their power of two, at least 16, the K of one wgmma):
    a ResNeXt group of 8 channels would otherwise multiply 56 zeros for every 8 products, and
    its boxes would read 8 groups' channels for one. The reduction's steps are the same.
    16 holds for float32 too: TF32's wgmma and tl.dot take K 8, so 16 is a valid block, and
    a box row of 64 bytes is one TMA copies."""
    return min(config.block_k, max(16, triton.next_power_of_2(channels)))


def _launch(x, w, bias, y, stride, padding, dilation, groups, residual, activation, preact,
            config, split=1):
    # launch.py imports this module; its split-K helpers are imported when a launch needs them
    from fastconv.conv.launch import reduce_launch, split_workspace

    if not all(1 <= s <= MAX_STRIDE for s in stride):
        raise ValueError(f"tma_fprop_launch: stride {tuple(stride)} above {MAX_STRIDE}")
    if split < 1:
        raise ValueError(f"tma_fprop_launch: split {split} < 1")
    N, C, H, W = x.shape
    K, CG, R, S = w.shape
    P, Q = y.shape[2:]
    KG = K // groups
    pb = ConvProblem(N, C, H, W, K, P, Q, R, S, groups, x.dtype, tuple(stride), tuple(padding),
                     tuple(dilation))
    bn_img, bh, bw = box_shape(config.block_m, N, P, Q)
    block_k = reduction_block(config, CG)

    # x as [N, H, W, C]; phase (ph, pw) = pixels (stride * i + ph, stride * j + pw). A phase with
    # no pixel (H <= ph) has no taps either (the kernel skips it): any descriptor will do there.
    x_nhwc = x.permute(0, 2, 3, 1)
    box_x = (bn_img, bh, bw, block_k)
    phases = {(ph, pw): _descriptor(x_nhwc[:, ph::stride[0], pw::stride[1]]
                                    if ph < H and pw < W else x_nhwc, box_x)
              for ph in range(stride[0]) for pw in range(stride[1])}
    # the weight as [K, R * S * CGP] (see _krsc_weight)
    cgp = triton.cdiv(CG, block_k) * block_k
    w_krsc, prep = _krsc_weight(w, cgp)
    w_desc = _descriptor(w_krsc.reshape(K, R * S * cgp), (config.block_n, block_k))

    b = bias.contiguous() if bias is not None else y  # y: never read when HAS_BIAS is False
    res = residual if residual is not None else y  # never read when has_residual is 0
    pre = preact if preact is not None else y      # never written when store_preact is 0
    epilogue = dict(activation=activation, has_residual=int(residual is not None),
                    store_preact=int(preact is not None))
    tiles = tma_tiles("fprop", pb, config)
    grid = (persistent_programs(config, tiles, x.device, x.element_size())
            if config.persistent else tiles,)
    # split: the workspace and its reduction, which runs the epilogue (bias included)
    part, split_args = split_workspace("fprop", pb, split, tma_steps("fprop", pb, config), y, y)
    then = None
    if split > 1:
        grid += (split,)
        then = reduce_launch("fprop", pb, split, part, b, res, y, pre, epilogue,
                             bias is not None, False)
    kwargs = dict(
        **{f"x_desc{ph}{pw}": phases.get((ph, pw), phases[0, 0]) for ph in (0, 1)
           for pw in (0, 1)},
        w_desc=w_desc, b_ptr=b, res_ptr=res, y_ptr=y, pre_ptr=pre,
        N=N, H=H, W=W, P=P, Q=Q, R=R, S=S, CG=CG, CGP=cgp, KG=KG, groups=groups,
        pad_h=padding[0], pad_w=padding[1], dil_h=dilation[0], dil_w=dilation[1],
        stride_yn=y.stride(0), stride_yk=y.stride(1), stride_yp=y.stride(2),
        stride_yq=y.stride(3),
        stride_rn=res.stride(0), stride_rk=res.stride(1), stride_rp=res.stride(2),
        stride_rq=res.stride(3),
        **split_args, **epilogue,
        HAS_BIAS=bias is not None and split == 1,
        # the interpreter's tl.dot is wrong on bfloat16 operands (see kernels._common.mma)
        DOT_IN_FP32=INTERPRETING and x.dtype == torch.bfloat16,
        # cuDNN's switch, as launch._meta reads it. The plan brings float32 here only with TF32
        # on (plan.tma_plan): wgmma has no exact float32, and an exact tl.dot would be FMAs.
        # The interpreter's tl.dot multiplies in full float32 either way.
        ALLOW_TF32=x.dtype == torch.float32 and torch.backends.cudnn.allow_tf32,
        STRIDE_H=stride[0], STRIDE_W=stride[1], BN_IMG=bn_img, BH=bh, BW=bw,
        BLOCK_N=config.block_n, BLOCK_K=block_k, GROUP_M=GROUP_M,
        SPLIT_K=split > 1, PERSISTENT=config.persistent, CHANNELS_AS_N=config.channels_as_n,
        num_warps=config.num_warps, num_stages=config.num_stages,
    )
    if config.max_registers:
        kwargs["maxnreg"] = config.max_registers
    return KernelLaunch.from_kwargs(conv2d_fprop_tma_kernel, grid, kwargs, then), prep


def conv2d_fprop_tma(x, w, bias, y, stride, padding, dilation, groups, residual=None,
                     activation=0, preact=None, *, config: TileConfig, split: int = 1):
    """Launch ``tma_fprop_launch(...)`` (same arguments); returns the kernel's launch handle."""
    kernel, grid, kwargs, then = tma_fprop_launch(x, w, bias, y, stride, padding, dilation,
                                                  groups, residual, activation, preact,
                                                  config=config, split=split)
    handle = kernel[grid](**kwargs)
    if then is not None:
        then()
    return handle
