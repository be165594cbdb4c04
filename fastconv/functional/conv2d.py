"""``fastconv.functional.conv2d``: torch.nn.functional.conv2d's signature on Triton kernels."""
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

import fastconv.ops  # noqa: F401  (registers torch.ops.fastconv.*)
from fastconv.functional._args import (check_bias, check_groups, check_same, check_tensor,
                                       int_tuple, non_negative, positive)

_FN = "conv2d"
IntOrPair = Union[int, Sequence[int]]


def _resolve_padding(padding, weight: Tensor, stride: Tuple[int, int],
                     dilation: Tuple[int, int]) -> Tuple[Tuple[int, int], Tuple[int, int]]:
    """Return (symmetric padding, extra right/bottom padding) for any accepted ``padding``."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0), (0, 0)
        if padding != "same":
            raise ValueError(f"{_FN}(): padding must be 'same', 'valid', an int or a pair of "
                             f"ints, got padding={padding!r}")
        if any(s != 1 for s in stride):
            raise ValueError(f"{_FN}(): padding='same' is not supported for strided "
                             f"convolutions, got stride={stride}")
        totals = [d * (k - 1) for d, k in zip(dilation, weight.shape[2:])]
        # an odd total puts the extra row/column after the input, as torch does
        return tuple(t // 2 for t in totals), tuple(t - 2 * (t // 2) for t in totals)
    pad = int_tuple(_FN, "padding", padding, 2)
    non_negative(_FN, "padding", pad)
    return pad, (0, 0)


def conv2d(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
           stride: IntOrPair = 1, padding: Union[str, IntOrPair] = 0,
           dilation: IntOrPair = 1, groups: int = 1) -> Tensor:
    """2-D convolution, as :func:`torch.nn.functional.conv2d`, computed by fastconv's kernels.

    Args:
        input (Tensor[N, C_in, H, W] or Tensor[C_in, H, W]): input, NCHW or channels_last;
            float16, bfloat16, float32 or float64.
        weight (Tensor[C_out, C_in / groups, kH, kW]): filters, same dtype and device.
        bias (Tensor[C_out], optional): added to every output pixel.
        stride (int or tuple): stride of the window. Default: 1.
        padding (int, tuple, 'valid' or 'same'): implicit zero padding on both sides;
            'same' (stride 1 only) pads so that the output has the input's size. Default: 0.
        dilation (int or tuple): spacing between kernel taps. Default: 1.
        groups (int): number of blocked connections from input to output channels. Default: 1.

    Returns:
        Tensor[N, C_out, H_out, W_out] (or Tensor[C_out, H_out, W_out] for unbatched input), in
        channels_last when input or weight is channels_last, else contiguous.
    """
    check_tensor(_FN, "input", input, (3, 4))
    check_tensor(_FN, "weight", weight, 4)
    check_same(_FN, "weight", weight, "input", input)
    stride = int_tuple(_FN, "stride", stride, 2)
    positive(_FN, "stride", stride)
    dilation = int_tuple(_FN, "dilation", dilation, 2)
    positive(_FN, "dilation", dilation)
    groups = check_groups(_FN, groups)
    out_channels, in_per_group, kh, kw = weight.shape
    if out_channels < groups or out_channels % groups:
        raise ValueError(f"{_FN}(): groups={groups} must divide out_channels (weight.shape[0]="
                         f"{out_channels}) into groups of at least one channel")
    if kh < 1 or kw < 1:
        raise ValueError(f"{_FN}(): weight must have a kernel of at least 1x1, got weight of "
                         f"shape {list(weight.shape)}")
    in_channels = input.shape[-3]
    if in_channels != in_per_group * groups:
        raise ValueError(
            f"{_FN}(): input has {in_channels} channels, but weight of shape "
            f"{list(weight.shape)} with groups={groups} expects {in_per_group * groups} "
            f"(weight.shape[1] * groups)")
    check_bias(_FN, bias, input, out_channels)
    pad, extra = _resolve_padding(padding, weight, stride, dilation)

    batched = input.dim() == 4
    x = input if batched else input.unsqueeze(0)
    for axis, (size, p, e, d, k) in enumerate(zip(x.shape[2:], pad, extra, dilation, (kh, kw))):
        padded, span = size + 2 * p + e, d * (k - 1) + 1
        if padded < span:
            raise ValueError(
                f"{_FN}(): the padded input is {padded} along {'HW'[axis]} but the (dilated) "
                f"kernel spans {span}: the kernel can't be larger than the padded input "
                f"(input shape {list(input.shape)}, weight shape {list(weight.shape)}, "
                f"padding={pad}, dilation={dilation})")
    if x.numel() == 0 and x.shape[0] and x.shape[1]:
        # torch convolves an empty batch or zero channels, but not an empty image, even padded
        raise ValueError(f"{_FN}(): only an empty batch or zero channels are supported, got "
                         f"input of shape {list(input.shape)} with an empty H or W")
    if any(extra):
        x = F.pad(x, (0, extra[1], 0, extra[0]))
    out = torch.ops.fastconv.conv2d(x, weight, bias, list(stride), list(pad), list(dilation),
                                    groups)
    return out if batched else out.squeeze(0)
