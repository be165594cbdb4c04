"""``fastconv.functional.conv1d``: torch.nn.functional.conv1d's signature on the conv2d kernels.

A 1-D convolution is a 2-D one over an image of height 1: ``[N, C, L]`` is viewed as
``[N, C, 1, L]`` and the weight ``[C_out, C_in/g, k]`` as ``[C_out, C_in/g, 1, k]``. No kernel of
its own; every argument is checked here, in 1-D terms, before the conv2d op is called.
"""
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from fastconv.conv import op as conv_op
from fastconv.ops import registry
from fastconv.functional._args import (check_bias, check_groups, check_same, check_tensor,
                                       check_weight_channels, check_window_fits, int_tuple,
                                       non_negative, positive)

_FN = "conv1d"
IntOrSingle = Union[int, Sequence[int]]


def _resolve_padding(padding, kernel: int, stride: int, dilation: int) -> Tuple[int, int]:
    """Return (symmetric padding, extra padding after the input) for any accepted ``padding``."""
    if isinstance(padding, str):
        if padding == "valid":
            return 0, 0
        if padding != "same":
            raise ValueError(f"{_FN}(): padding must be 'same', 'valid', an int or a tuple of "
                             f"1 int, got padding={padding!r}")
        if stride != 1:
            raise ValueError(f"{_FN}(): padding='same' is not supported for strided "
                             f"convolutions, got stride={stride}")
        total = dilation * (kernel - 1)
        # an odd total puts the extra element after the input, as torch does
        return total // 2, total % 2
    (pad,) = int_tuple(_FN, "padding", padding, 1)
    non_negative(_FN, "padding", (pad,))
    return pad, 0


def conv1d(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
           stride: IntOrSingle = 1, padding: Union[str, IntOrSingle] = 0,
           dilation: IntOrSingle = 1, groups: int = 1) -> Tensor:
    """1-D convolution, as :func:`torch.nn.functional.conv1d`, computed by fastconv's conv2d
    kernels on a height-1 view of the problem.

    Args:
        input (Tensor[N, C_in, L] or Tensor[C_in, L]): input, any strides (e.g. the
            ``x.transpose(1, 2)`` of channels-last ``[N, L, C]`` data); float16, bfloat16,
            float32 or float64.
        weight (Tensor[C_out, C_in / groups, k]): filters, same dtype and device.
        bias (Tensor[C_out], optional): added to every output position.
        stride (int or tuple of 1 int): stride of the window. Default: 1.
        padding (int, tuple of 1 int, 'valid' or 'same'): implicit zero padding on both sides;
            'same' (stride 1 only) pads so that the output has the input's length, with the odd
            element after the input for even kernels, as torch. Default: 0.
        dilation (int or tuple of 1 int): spacing between kernel taps. Default: 1.
        groups (int): number of blocked connections from input to output channels. Default: 1.

    Returns:
        Tensor[N, C_out, L_out] (or Tensor[C_out, L_out] for unbatched input), laid out as torch
        lays it out: contiguous, unless the weight's strides are channels-last-like.
    """
    check_tensor(_FN, "input", input, (2, 3))
    check_tensor(_FN, "weight", weight, 3)
    check_same(_FN, "weight", weight, "input", input)
    (stride,) = int_tuple(_FN, "stride", stride, 1)
    positive(_FN, "stride", (stride,))
    (dilation,) = int_tuple(_FN, "dilation", dilation, 1)
    positive(_FN, "dilation", (dilation,))
    groups = check_groups(_FN, groups)
    out_channels, _, kernel = weight.shape
    check_weight_channels(_FN, input, weight, groups)
    if kernel < 1:
        raise ValueError(f"{_FN}(): weight must have a kernel of length at least 1, got weight "
                         f"of shape {list(weight.shape)}")
    check_bias(_FN, bias, input, out_channels)
    pad, extra = _resolve_padding(padding, kernel, stride, dilation)

    batched = input.dim() == 3
    x = input if batched else input.unsqueeze(0)
    check_window_fits(_FN, input, weight, x, (pad,), (extra,), (dilation,), (kernel,), "L")
    if extra:
        x = F.pad(x, (0, extra))
    # torch makes a 3-D input contiguous before its 2-D view (so a permuted [N, L, C] input does
    # not turn the output channels-last) but keeps the weight's strides; do the same, so the
    # output has torch's layout. A no-op for contiguous input.
    x = x.contiguous()
    out = registry.call(conv_op.conv2d, x.unsqueeze(2), weight.unsqueeze(2), bias, [1, stride],
                        [0, pad], [1, dilation], groups)
    out = out.squeeze(2)
    return out if batched else out.squeeze(0)
