"""Argument normalisation and validation shared by fastconv's functions.

Every check raises before any kernel launch, with a message that names the argument and says what
was expected. The rules follow what torch itself accepts.
"""
from numbers import Integral
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_DTYPE_NAMES = "float16, bfloat16, float32 or float64"


def is_int(v) -> bool:
    """An int-like value torch would accept (bools are not ints here, as in torch)."""
    return isinstance(v, (Integral, torch.SymInt)) and not isinstance(v, bool)


def int_tuple(fn: str, name: str, value, n: int) -> Tuple[int, ...]:
    """An int or a sequence of 1 or n ints -> a tuple of n ints."""
    if is_int(value):
        return (int(value),) * n if not isinstance(value, torch.SymInt) else (value,) * n
    if isinstance(value, (list, tuple, torch.Size)) and all(is_int(v) for v in value):
        if len(value) == 1:
            return tuple(value) * n
        if len(value) == n:
            return tuple(value)
        raise ValueError(f"{fn}(): expected {name} to be a single integer value or a list of "
                         f"{n} values, but got {name}={list(value)}")
    raise TypeError(f"{fn}(): {name} must be an int or a tuple of {n} ints, "
                    f"got {type(value).__name__} {value!r}")


def positive(fn: str, name: str, values: Sequence[int]) -> None:
    if any(v <= 0 for v in values):
        raise ValueError(f"{fn}(): {name} must be positive, got {name}={tuple(values)}")


def non_negative(fn: str, name: str, values: Sequence[int]) -> None:
    if any(v < 0 for v in values):
        raise ValueError(f"{fn}(): {name} must be non-negative, got {name}={tuple(values)}")


def check_groups(fn: str, groups) -> int:
    if not is_int(groups):
        raise TypeError(f"{fn}(): groups must be an int, got {type(groups).__name__} {groups!r}")
    if groups <= 0:
        raise ValueError(f"{fn}(): groups must be positive, got groups={groups}")
    return int(groups)


def check_tensor(fn: str, name: str, t, dims: Union[int, Tuple[int, ...]]) -> None:
    """A floating-point tensor of the given rank(s)."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{fn}(): {name} must be a Tensor, got {type(t).__name__}")
    if t.dtype not in KERNEL_DTYPES:
        raise TypeError(f"{fn}(): {name} must have dtype {_DTYPE_NAMES}, got {t.dtype}")
    dims = (dims,) if isinstance(dims, int) else dims
    if t.dim() not in dims:
        want = " or ".join(f"{d}-D" for d in dims)
        raise ValueError(f"{fn}(): expected {name} to be a {want} tensor, "
                         f"got {name} of shape {list(t.shape)}")


def _autocast_unifies(t: Tensor, ref: Tensor) -> bool:
    """Whether autocast, on for ``ref``'s device type, casts both tensors to one dtype before
    the op runs (floating point other than float64, as ATen's autocast decides): torch accepts
    such a pair, e.g. a bfloat16 activation with a float32 weight under autocast-bf16."""
    if not all(x.is_floating_point() and x.dtype != torch.float64 for x in (t, ref)):
        return False
    try:
        return torch.is_autocast_enabled(ref.device.type)
    except RuntimeError:  # a device type autocast has no state for (meta)
        return False


def check_same(fn: str, name: str, t: Tensor, ref_name: str, ref: Tensor) -> None:
    """``t`` must share ``ref``'s dtype (unless autocast will unify them) and device."""
    if t.dtype != ref.dtype and not _autocast_unifies(t, ref):
        raise TypeError(f"{fn}(): {name} has dtype {t.dtype} but {ref_name} has dtype {ref.dtype}; "
                        "they must be the same")
    if t.device != ref.device:
        raise RuntimeError(f"{fn}(): {name} is on device {t.device} but {ref_name} is on "
                           f"device {ref.device}; they must be on the same device")


def check_bias(fn: str, bias: Optional[Tensor], input: Tensor, out_channels: int) -> None:
    if bias is None:
        return
    if not isinstance(bias, Tensor):
        raise TypeError(f"{fn}(): bias must be a Tensor or None, got {type(bias).__name__}")
    check_same(fn, "bias", bias, "input", input)
    if bias.dim() != 1 or bias.shape[0] != out_channels:
        raise ValueError(f"{fn}(): expected bias to be 1-D with {out_channels} elements "
                         f"(out_channels), got bias of shape {list(bias.shape)}")


def check_window_fits(fn: str, input: Tensor, weight: Tensor, x: Tensor, pad, extra, dilation,
                      kernel, axes: str) -> None:
    """The (dilated) kernel fits the padded input along every spatial axis (``axes`` names them,
    e.g. "HW" or "L"), and the input is not empty there: torch convolves an empty batch or zero
    channels, never an empty image, padded or not. ``x`` is the batched input."""
    for axis, size, p, e, d, k in zip(axes, x.shape[2:], pad, extra, dilation, kernel):
        padded, span = size + 2 * p + e, d * (k - 1) + 1
        if padded < span:
            raise ValueError(
                f"{fn}(): the padded input is {padded} along {axis} but the (dilated) kernel "
                f"spans {span}: the kernel can't be larger than the padded input (input shape "
                f"{list(input.shape)}, weight shape {list(weight.shape)}, padding={tuple(pad)}, "
                f"dilation={tuple(dilation)})")
    if x.numel() == 0 and x.shape[0] and x.shape[1]:
        empty = " or ".join(f"{axis}=0" for axis in axes)
        raise ValueError(f"{fn}(): only an empty batch or zero channels are supported, got "
                         f"input of shape {list(input.shape)} with {empty}")


def check_weight_channels(fn: str, input: Tensor, weight: Tensor, groups: int) -> None:
    """groups splits weight.shape[0] (out_channels) evenly, and the input's channel axis (the
    one before the spatial axes) matches weight.shape[1] * groups."""
    out_channels, in_per_group = weight.shape[:2]
    if out_channels < groups or out_channels % groups:
        raise ValueError(f"{fn}(): groups={groups} must divide out_channels (weight.shape[0]="
                         f"{out_channels}) into groups of at least one channel")
    in_channels = input.shape[-weight.dim() + 1]
    if in_channels != in_per_group * groups:
        raise ValueError(
            f"{fn}(): input has {in_channels} channels, but weight of shape "
            f"{list(weight.shape)} with groups={groups} expects {in_per_group * groups} "
            f"(weight.shape[1] * groups)")
