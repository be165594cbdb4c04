"""``fastconv.functional.conv2d``: torch.nn.functional.conv2d's signature on Triton kernels."""
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from fastconv.conv import op as conv_op
from fastconv.conv.op import ACTIVATIONS
from fastconv.ops import registry
from fastconv.ops.launch_cache import LRU
from fastconv.functional._args import (check_bias, check_groups, check_same, check_tensor,
                                       check_weight_channels, check_window_fits, int_tuple,
                                       non_negative, positive)

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


def _check_activation(activation) -> str:
    if activation is None:
        return "none"
    if not isinstance(activation, str):
        raise TypeError(f"{_FN}(): activation must be None or a string, got "
                        f"{type(activation).__name__}")
    if activation == "none" or activation not in ACTIVATIONS:
        names = ", ".join(repr(a) for a in ACTIVATIONS if a != "none")
        raise ValueError(f"{_FN}(): activation must be None or one of {names}, "
                         f"got activation={activation!r}")
    return activation


def _check_residual(residual, input: Tensor, out_shape) -> None:
    if residual is None:
        return
    if not isinstance(residual, Tensor):
        raise TypeError(f"{_FN}(): residual must be a Tensor or None, got "
                        f"{type(residual).__name__}")
    check_same(_FN, "residual", residual, "input", input)
    if tuple(residual.shape) != tuple(out_shape):
        raise ValueError(f"{_FN}(): residual must have the output's shape {list(out_shape)} "
                         f"(no broadcasting), got residual of shape {list(residual.shape)}")


@dataclass(frozen=True)
class Conv2dArgs:
    """conv2d's arguments, validated and normalised."""
    x: Tensor                     # the input as a 4-D batch (unbatched input gets N = 1)
    stride: Tuple[int, int]
    padding: Tuple[int, int]      # symmetric padding
    extra: Tuple[int, int]        # extra bottom/right padding ('same' with an odd total)
    dilation: Tuple[int, int]
    groups: int


def normalize_conv2d(input: Tensor, weight: Tensor, bias: Optional[Tensor], stride, padding,
                     dilation, groups) -> Conv2dArgs:
    """Validate conv2d's arguments as torch does (errors name the argument) and normalise them."""
    check_tensor(_FN, "input", input, (3, 4))
    check_tensor(_FN, "weight", weight, 4)
    check_same(_FN, "weight", weight, "input", input)
    stride = int_tuple(_FN, "stride", stride, 2)
    positive(_FN, "stride", stride)
    dilation = int_tuple(_FN, "dilation", dilation, 2)
    positive(_FN, "dilation", dilation)
    groups = check_groups(_FN, groups)
    out_channels, _, kh, kw = weight.shape
    check_weight_channels(_FN, input, weight, groups)
    if kh < 1 or kw < 1:
        raise ValueError(f"{_FN}(): weight must have a kernel of at least 1x1, got weight of "
                         f"shape {list(weight.shape)}")
    check_bias(_FN, bias, input, out_channels)
    pad, extra = _resolve_padding(padding, weight, stride, dilation)

    x = input if input.dim() == 4 else input.unsqueeze(0)
    check_window_fits(_FN, input, weight, x, pad, extra, dilation, (kh, kw), "HW")
    return Conv2dArgs(x, stride, pad, extra, dilation, groups)


_NORMALISED = LRU()
_UNCACHED = object()


def _arg_key(value):
    """A hashable stand-in for an int, a string or a list/tuple of ints (what the normalised
    arguments are a function of); anything else is normalised on every call."""
    kind = type(value)
    if kind is int or kind is str or value is None:
        return value
    if kind is tuple or kind is list:
        for v in value:
            if type(v) is not int:
                return _UNCACHED
        return tuple(value)
    return _UNCACHED


def _tensor_key(t):
    return None if t is None else (t.shape, t.dtype, t.device)


def _signature(input, weight, bias, residual, stride, padding, dilation, groups, activation):
    """The key under which conv2d's checks and normalisation are remembered, or None where
    they depend on more than shapes, dtypes, devices and plain arguments (tensors or numpy
    numbers as arguments; mixed dtypes, which autocast may unify)."""
    if torch.compiler.is_compiling():  # a traced call: hashing its shapes would pin them
        return None
    if not (isinstance(input, Tensor) and isinstance(weight, Tensor)) or \
            (bias is not None and not isinstance(bias, Tensor)) or \
            (residual is not None and not isinstance(residual, Tensor)):
        return None
    dtype = input.dtype
    if weight.dtype != dtype or (bias is not None and bias.dtype != dtype) or \
            (residual is not None and residual.dtype != dtype):
        return None
    key = (_tensor_key(input), _tensor_key(weight), _tensor_key(bias), _tensor_key(residual),
           _arg_key(stride), _arg_key(padding), _arg_key(dilation), _arg_key(groups),
           _arg_key(activation))
    return None if _UNCACHED in key else key


def _normalise(input, weight, bias, residual, stride, padding, dilation, groups, activation):
    """(stride, padding, extra padding, dilation, groups, activation name), checked."""
    args = normalize_conv2d(input, weight, bias, stride, padding, dilation, groups)
    x, stride, pad, extra, dilation, groups = (args.x, args.stride, args.padding, args.extra,
                                               args.dilation, args.groups)
    out_channels, _, kh, kw = weight.shape
    act = _check_activation(activation)
    if residual is not None:
        out_shape = [out_channels] + [
            (size + 2 * p + e - d * (k - 1) - 1) // s + 1
            for size, p, e, d, k, s in zip(x.shape[2:], pad, extra, dilation, (kh, kw), stride)]
        _check_residual(residual, input, ([x.shape[0]] if input.dim() == 4 else []) + out_shape)
    return list(stride), list(pad), extra, list(dilation), groups, act


def conv2d(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
           stride: IntOrPair = 1, padding: Union[str, IntOrPair] = 0,
           dilation: IntOrPair = 1, groups: int = 1, *, activation: Optional[str] = None,
           residual: Optional[Tensor] = None) -> Tensor:
    """2-D convolution, as :func:`torch.nn.functional.conv2d`, computed by fastconv's kernels.

    With ``activation`` and/or ``residual`` it computes ``act(conv2d(...) + bias + residual)``
    in the kernel's epilogue: one pass over the output instead of three.

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
        activation (str, optional): 'relu', 'relu6', 'silu' or 'gelu' (exact, erf form),
            applied after bias and residual. Default: None.
        residual (Tensor, optional): a tensor of the output's shape, added before the
            activation (a ResNet shortcut). Gradients flow to it. Default: None.

    Returns:
        Tensor[N, C_out, H_out, W_out] (or Tensor[C_out, H_out, W_out] for unbatched input), in
        channels_last when input or weight is channels_last, else contiguous.
    """
    key = _signature(input, weight, bias, residual, stride, padding, dilation, groups,
                     activation)
    norm = _NORMALISED.get(key) if key is not None else None
    if norm is None:
        norm = _normalise(input, weight, bias, residual, stride, padding, dilation, groups,
                          activation)
        if key is not None:
            _NORMALISED.put(key, norm)
    stride, pad, extra, dilation, groups, act = norm
    batched = input.dim() == 4
    x = input if batched else input.unsqueeze(0)
    if extra[0] or extra[1]:
        x = F.pad(x, (0, extra[1], 0, extra[0]))
    if act == "none" and residual is None:
        out = registry.call(conv_op.conv2d, x, weight, bias, stride, pad, dilation, groups)
    else:
        res = residual if residual is None or batched else residual.unsqueeze(0)
        wants_grad = torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in (input, weight, bias, residual))
        out, _ = registry.call(
            conv_op.conv2d_activation, x, weight, bias, res, stride, pad, dilation, groups, act,
            wants_grad and act in ("silu", "gelu"))
    return out if batched else out.squeeze(0)
