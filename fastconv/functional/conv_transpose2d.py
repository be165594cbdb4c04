"""``fastconv.functional.conv_transpose2d``: torch.nn.functional.conv_transpose2d's signature on
Triton kernels (the forward runs conv2d's input-gradient kernel)."""
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from fastconv.functional._args import (check_bias, check_groups, check_same, check_tensor,
                                       int_tuple, non_negative, positive)
from fastconv.conv import transpose_op
from fastconv.conv.transpose_op import conv_transpose_output_size
from fastconv.ops import registry

_FN = "conv_transpose2d"
IntOrPair = Union[int, Sequence[int]]


def conv_transpose2d(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
                     stride: IntOrPair = 1, padding: IntOrPair = 0,
                     output_padding: IntOrPair = 0, groups: int = 1,
                     dilation: IntOrPair = 1) -> Tensor:
    """2-D transposed convolution ("deconvolution"), as
    :func:`torch.nn.functional.conv_transpose2d`, computed by fastconv's kernels.

    Args:
        input (Tensor[N, C_in, H, W] or Tensor[C_in, H, W]): input, NCHW or channels_last;
            float16, bfloat16, float32 or float64.
        weight (Tensor[C_in, C_out / groups, kH, kW]): filters, same dtype and device.
        bias (Tensor[C_out], optional): added to every output pixel.
        stride (int or tuple): stride of the transposed convolution. Default: 1.
        padding (int or tuple): ``dilation * (k - 1) - padding`` zeros are implicitly added to
            both sides of the input; equivalently, ``padding`` rows/columns are cropped from
            both sides of the output. Default: 0.
        output_padding (int or tuple): extra rows/columns added to the bottom/right of the
            output; each must be smaller than the stride or the dilation of its axis.
            Default: 0.
        groups (int): number of blocked connections from input to output channels. Default: 1.
        dilation (int or tuple): spacing between kernel taps. Default: 1.

    Returns:
        Tensor[N, C_out, H_out, W_out] (or Tensor[C_out, H_out, W_out] for unbatched input) with
        ``H_out = (H - 1) * stride - 2 * padding + dilation * (kH - 1) + output_padding + 1``,
        in channels_last when input or weight is channels_last, else contiguous.
    """
    check_tensor(_FN, "input", input, (3, 4))
    check_tensor(_FN, "weight", weight, 4)
    check_same(_FN, "weight", weight, "input", input)
    stride = int_tuple(_FN, "stride", stride, 2)
    positive(_FN, "stride", stride)
    padding = int_tuple(_FN, "padding", padding, 2)
    non_negative(_FN, "padding", padding)
    output_padding = int_tuple(_FN, "output_padding", output_padding, 2)
    non_negative(_FN, "output_padding", output_padding)
    dilation = int_tuple(_FN, "dilation", dilation, 2)
    positive(_FN, "dilation", dilation)
    groups = check_groups(_FN, groups)
    for axis, (op, s, d) in enumerate(zip(output_padding, stride, dilation)):
        # torch's rule, per axis: smaller than the stride OR smaller than the dilation
        if op >= s and op >= d:
            raise ValueError(
                f"{_FN}(): output_padding must be smaller than either stride or dilation along "
                f"each axis, got output_padding={output_padding}, stride={stride}, "
                f"dilation={dilation} (along {'HW'[axis]})")

    in_channels, out_per_group, kh, kw = weight.shape
    if in_channels < groups or in_channels % groups:
        raise ValueError(f"{_FN}(): groups={groups} must divide in_channels (weight.shape[0]="
                         f"{in_channels}) into groups of at least one channel")
    if out_per_group < 1:
        raise ValueError(f"{_FN}(): weight must have at least one output channel per group "
                         f"(weight.shape[1]), got weight of shape {list(weight.shape)}")
    if kh < 1 or kw < 1:
        raise ValueError(f"{_FN}(): weight must have a kernel of at least 1x1, got weight of "
                         f"shape {list(weight.shape)}")
    if input.shape[-3] != in_channels:
        raise ValueError(
            f"{_FN}(): input has {input.shape[-3]} channels, but weight of shape "
            f"{list(weight.shape)} expects {in_channels} (weight.shape[0], the input channels "
            f"of a transposed convolution)")
    check_bias(_FN, bias, input, out_per_group * groups)

    batched = input.dim() == 4
    x = input if batched else input.unsqueeze(0)
    if x.numel() == 0 and x.shape[0]:
        # as torch: an empty batch is fine, an empty image is not (zero channels can't get here)
        raise ValueError(f"{_FN}(): only an empty batch is supported, got input of shape "
                         f"{list(input.shape)} with an empty H or W")
    for axis, (size, k, s, p, op, d) in enumerate(zip(x.shape[2:], (kh, kw), stride, padding,
                                                      output_padding, dilation)):
        out = conv_transpose_output_size(size, k, s, p, op, d)
        if out < 1:
            raise ValueError(
                f"{_FN}(): the output would be {out} along {'HW'[axis]}, it must be at least 1: "
                f"(H - 1) * stride - 2 * padding + dilation * (k - 1) + output_padding + 1 with "
                f"input shape {list(input.shape)}, weight shape {list(weight.shape)}, "
                f"stride={stride}, padding={padding}, output_padding={output_padding}, "
                f"dilation={dilation}")
    out = registry.call(transpose_op.conv_transpose2d, x, weight, bias, list(stride),
                        list(padding), list(output_padding), groups, list(dilation))
    return out if batched else out.squeeze(0)
