"""Shape and layout rules shared by the real and the fake (meta) implementations of the ops."""
from typing import Sequence

import torch


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def conv2d_output_shape(input_shape: Sequence[int], weight_shape: Sequence[int],
                        stride: Sequence[int], padding: Sequence[int],
                        dilation: Sequence[int]) -> list:
    n, _, h, w = input_shape
    k, _, r, s = weight_shape
    return [n, k,
            conv_output_size(h, r, stride[0], padding[0], dilation[0]),
            conv_output_size(w, s, stride[1], padding[1], dilation[1])]


def memory_format_of(t: torch.Tensor) -> torch.memory_format:
    """The layout an output derived from ``t`` should have: channels_last only when ``t`` is
    unambiguously channels_last (a tensor that is both, e.g. with C == 1, counts as NCHW)."""
    if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    if t.dim() == 4 and not t.is_contiguous() and t.stride(1) == 1 and t.size(1) > 1:
        # a strided channels_last view (e.g. a spatial slice): keep channels innermost
        return torch.channels_last
    return torch.contiguous_format


def conv_memory_format(input: torch.Tensor, weight: torch.Tensor) -> torch.memory_format:
    """torch's rule for a convolution's output: channels_last if input or weight is."""
    if torch.channels_last in (memory_format_of(input), memory_format_of(weight)):
        return torch.channels_last
    return torch.contiguous_format
