"""``fastconv.explain``: which kernel family and config a convolution would run, and why."""
import contextlib
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from fastconv.functional.conv2d import normalize_conv2d
from fastconv.conv import launch as conv2d_launch
from fastconv.conv.shapes import conv2d_output_shape, conv_memory_format
from fastconv.conv.plan import Plan
from fastconv.ops.target import Target, planning_for, target_of


@dataclass(frozen=True)
class ConvExplanation:
    """The plan of each direction of a conv2d: forward, input gradient, weight gradient."""
    fprop: Plan
    dgrad: Plan
    wgrad: Plan
    target: Target

    def __str__(self) -> str:
        sms = f", {self.target.sms} SMs" if self.target.sms else ""
        lines = [f"target: {self.target.name}{sms}"]
        for plan in (self.fprop, self.dgrad, self.wgrad):
            cfg = plan.config
            tile = f"{cfg.block_m}x{cfg.block_n}" + (f"x{cfg.block_k}" if cfg.block_k else "")
            split = f", split {plan.split}" if plan.direction == "wgrad" or plan.split > 1 else ""
            lines.append(f"{plan.direction}: {plan.family} ({plan.kernel_name}, tile {tile}, "
                         f"{cfg.num_warps} warps, {cfg.num_stages} stages{split}"
                         f"{', int64 offsets' if plan.index_64 else ''}) - {plan.reason}")
        return "\n".join(lines)


def explain(input: Tensor, weight: Tensor, stride=1, padding=0, dilation=1,
            groups: int = 1, target: Optional[str] = None) -> ConvExplanation:
    """Say which kernel family and tile config ``conv2d`` would run for these arguments, and why.

    Nothing is launched and no data is read: only shapes, strides, dtype and device matter, so
    ``input`` and ``weight`` may be meta tensors. The arguments are validated exactly as
    :func:`fastconv.functional.conv2d` validates them.

    Args:
        target: what to plan for: ``"sm_90"`` (an H100/H200, 132 SMs), ``"sm_80"`` (an A100,
            108 SMs) or ``"interpreter"`` (Triton's CPU interpreter, whose blocks are sized to
            the problem). Default: what a call with these tensors would run on here (the
            interpreter in a ``TRITON_INTERPRET=1`` process, else the tensors' GPU). The
            output names the target.

    Returns:
        ConvExplanation: ``.fprop``, ``.dgrad`` and ``.wgrad`` plans (``.family``, ``.config``,
        ``.kernel_name``, ``.split``, ``.reason``); ``str()`` gives a readable summary.
    """
    args = normalize_conv2d(input, weight, None, stride, padding, dilation, groups)
    with planning_for(target) if target is not None else contextlib.nullcontext():
        return _explain(args, weight)


def _explain(args, weight) -> ConvExplanation:
    x = args.x
    if any(args.extra):  # conv2d pads the input for an odd 'same' total; so does the plan
        x = torch.empty(x.shape[:2] + (x.shape[2] + args.extra[0], x.shape[3] + args.extra[1]),
                        dtype=x.dtype, device="meta").contiguous(
                            memory_format=conv_memory_format(x, weight))
    conv = (args.groups, args.stride, args.padding, args.dilation)
    shape = conv2d_output_shape(x.shape, weight.shape, args.stride, args.padding, args.dilation)
    y = torch.empty(shape, dtype=x.dtype, device="meta").contiguous(
        memory_format=conv_memory_format(x, weight))
    dx = torch.empty(x.shape, dtype=x.dtype, device="meta").contiguous(
        memory_format=conv_memory_format(y, y))
    return ConvExplanation(
        fprop=conv2d_launch.plan_fprop(x, weight, y, *conv),
        dgrad=conv2d_launch.plan_dgrad(y, weight, dx, *conv),
        wgrad=conv2d_launch.plan_wgrad(x, y, weight.shape, *conv),
        target=target_of(args.x.device))
