"""Launchers of the conv2d kernels: shapes and strides in, one kernel launch out.

Callers (the ops in ``fastconv.ops.conv2d``) have already validated the arguments and allocated
the outputs; these functions only pick the plan and launch.
"""
from typing import Optional, Sequence

import torch
import triton

from fastconv.ops._runtime import INTERPRETING, new_output
from fastconv.ops.plan import ConvProblem, Plan, plan_conv2d


def conv_problem(x_shape, w_shape, y_shape, groups: int, dtype: torch.dtype) -> ConvProblem:
    n, c, h, w = x_shape
    k, _, r, s = w_shape
    return ConvProblem(n, c, h, w, k, y_shape[2], y_shape[3], r, s, groups, dtype)


def _dtype_flags(dtype: torch.dtype, family: str) -> dict:
    flags = {"ACC_FP64": dtype == torch.float64, "INDEX_64": False}
    if family == "implicit_gemm":
        flags["DOT_IN_FP32"] = INTERPRETING and dtype == torch.bfloat16
        # conv follows cuDNN's switch, as torch.nn.functional.conv2d does
        flags["ALLOW_TF32"] = dtype == torch.float32 and torch.backends.cudnn.allow_tf32
    return flags


def needs_int64(*tensors: torch.Tensor) -> bool:
    """Whether an element offset of some tensor (a strided view included) can reach 2**31."""
    for t in tensors:
        reach = sum((size - 1) * abs(st) for size, st in zip(t.shape, t.stride()) if size > 0)
        if t.numel() >= 2**31 or reach >= 2**31:
            return True
    return False


def _meta(plan: Plan, dtype: torch.dtype) -> dict:
    cfg = plan.config
    meta = _dtype_flags(dtype, plan.family)
    meta["INDEX_64"] = plan.index_64
    meta.update(BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n,
                num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    if plan.family == "implicit_gemm":
        meta["BLOCK_K"] = cfg.block_k
    return meta


def _conv_args(stride, padding, dilation) -> tuple:
    return (stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1])


def conv2d_fprop(x: torch.Tensor, w: torch.Tensor, bias: Optional[torch.Tensor], y: torch.Tensor,
                 stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
                 groups: int) -> Plan:
    """y = conv2d(x, w) + bias, written into the preallocated ``y``."""
    pb = conv_problem(x.shape, w.shape, y.shape, groups, x.dtype)
    plan = plan_conv2d("fprop", pb, x.device, needs_int64(x, w, y))
    if y.numel() == 0:
        return plan
    cfg = plan.config
    meta = _meta(plan, x.dtype)
    meta["HAS_BIAS"] = bias is not None
    # the kernels read the bias with unit stride; a strided view (bias[::2]) is copied first
    b = bias.contiguous() if bias is not None else y  # y: never read when HAS_BIAS is False
    m_tiles = triton.cdiv(pb.N * pb.P * pb.Q, cfg.block_m)
    if plan.family == "implicit_gemm":
        grid = (m_tiles * triton.cdiv(pb.KG, cfg.block_n) * groups,)
        sizes = (pb.N, pb.H, pb.W, pb.P, pb.Q, pb.R, pb.S, pb.CG, pb.KG)
    else:
        grid = (m_tiles * triton.cdiv(pb.K, cfg.block_n),)
        sizes = (pb.N, pb.H, pb.W, pb.P, pb.Q, pb.R, pb.S, pb.CG, pb.KG, pb.K)
    plan.kernel[grid](x, w, b, y, *sizes, *_conv_args(stride, padding, dilation),
                      *x.stride(), *w.stride(), *y.stride(), **meta)
    return plan


def conv2d_dgrad(dy: torch.Tensor, w: torch.Tensor, dx: torch.Tensor, stride: Sequence[int],
                 padding: Sequence[int], dilation: Sequence[int], groups: int) -> Plan:
    """dx = d conv2d / d input, written into the preallocated ``dx``."""
    pb = conv_problem(dx.shape, w.shape, dy.shape, groups, dy.dtype)
    plan = plan_conv2d("dgrad", pb, dy.device, needs_int64(dy, w, dx))
    if dx.numel() == 0:
        return plan
    cfg = plan.config
    meta = _meta(plan, dy.dtype)
    m_tiles = triton.cdiv(pb.N * pb.H * pb.W, cfg.block_m)
    if plan.family == "implicit_gemm":
        grid = (m_tiles * triton.cdiv(pb.CG, cfg.block_n) * groups,)
        sizes = (pb.N, pb.H, pb.W, pb.P, pb.Q, pb.R, pb.S, pb.CG, pb.KG)
    else:
        grid = (m_tiles * triton.cdiv(pb.C, cfg.block_n),)
        sizes = (pb.N, pb.H, pb.W, pb.P, pb.Q, pb.R, pb.S, pb.CG, pb.KG, pb.C)
    plan.kernel[grid](dy, w, dx, *sizes, *_conv_args(stride, padding, dilation),
                      *dy.stride(), *w.stride(), *dx.stride(), **meta)
    return plan


def conv2d_wgrad(x: torch.Tensor, dy: torch.Tensor, weight_shape: Sequence[int],
                 stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
                 groups: int) -> torch.Tensor:
    """d conv2d / d weight, as a new contiguous tensor of ``weight_shape``."""
    pb = conv_problem(x.shape, weight_shape, dy.shape, groups, x.dtype)
    # the plan keeps the split-K workspace under 2**31 elements, so only x, dy and the weight
    # itself can need 64-bit offsets
    big_weight = pb.K * pb.CG * pb.R * pb.S >= 2**31
    plan = plan_conv2d("wgrad", pb, x.device, needs_int64(x, dy) or big_weight)
    acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    if pb.K * pb.CG * pb.R * pb.S == 0:
        return new_output(weight_shape, x)
    cfg = plan.config
    red = pb.N * pb.P * pb.Q
    step = cfg.block_k if plan.family == "implicit_gemm" else cfg.block_m
    m_per_split = triton.cdiv(triton.cdiv(red, plan.split), step) * step
    split = max(1, triton.cdiv(red, max(m_per_split, 1)))
    part = new_output((split, *weight_shape), x, dtype=acc_dtype)
    meta = _meta(plan, x.dtype)
    if plan.family == "implicit_gemm":
        tiles = triton.cdiv(pb.KG, cfg.block_m) * triton.cdiv(pb.R * pb.S * pb.CG, cfg.block_n)
        grid = (tiles * groups, split)
        sizes = (pb.N, pb.H, pb.W, pb.P, pb.Q, pb.R, pb.S, pb.CG, pb.KG, m_per_split)
    else:
        grid = (triton.cdiv(pb.K, cfg.block_n) * pb.CG * pb.R * pb.S, split)
        sizes = (pb.N, pb.H, pb.W, pb.P, pb.Q, pb.R, pb.S, pb.CG, pb.KG, pb.K, m_per_split)
    plan.kernel[grid](x, dy, part, *sizes, *_conv_args(stride, padding, dilation),
                      *x.stride(), *dy.stride(), *part.stride(), **meta)
    # the partials are added in a fixed order: bitwise reproducible, no atomics
    total = part[0] if split == 1 else part.sum(dim=0)
    return total.to(x.dtype)
