"""Where the kernels run: a CUDA device, or the CPU through Triton's interpreter."""
from typing import Optional

import torch
from triton.runtime.interpreter import InterpretedFunction

from fastconv.kernels import conv2d_fprop_igemm_kernel

# @triton.jit decides at import time whether it builds GPU code or an interpreted function, so
# the kernels themselves tell which mode this process is in.
INTERPRETING = isinstance(conv2d_fprop_igemm_kernel, InterpretedFunction)



def check_device(name: str, t: torch.Tensor) -> None:
    """Refuse tensors the kernels cannot run on, instead of quietly handing them to ATen."""
    if t.device.type == "cuda" or (INTERPRETING and t.device.type == "cpu"):
        return
    if t.device.type == "cpu":
        raise RuntimeError(
            f"fastconv: {name} is a CPU tensor, but fastconv's Triton kernels run on CPU tensors "
            "only under Triton's interpreter. Set TRITON_INTERPRET=1 in the environment before "
            "fastconv (or triton) is imported, or move the tensors to a CUDA device."
        )
    raise RuntimeError(
        f"fastconv: {name} is on device '{t.device}', but fastconv's kernels run on CUDA devices "
        "(or on the CPU with TRITON_INTERPRET=1)."
    )


def check_devices(**tensors) -> None:
    """check_device for each named tensor (None skipped)."""
    for name, t in tensors.items():
        if t is not None:
            check_device(name, t)


def fake_output(shape, like: torch.Tensor, memory_format) -> torch.Tensor:
    """The fake (meta) twin of ``new_output``: allocated the same way, so the strides agree even
    where a layout is ambiguous (with one channel, .contiguous(memory_format=...) keeps NCHW)."""
    return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=memory_format)


def allocate(shape, stride, dtype: torch.dtype, device) -> torch.Tensor:
    """The memory of a tensor a call writes, on its first call (``new_output``) and on every
    replay (``launch_cache.Allocation``) alike: the one place the tests hook to fill outputs
    with NaN, so that an element a kernel forgets to write shows up as a mismatch."""
    return torch.empty_strided(shape, stride, dtype=dtype, device=device)


def new_output(shape, like: torch.Tensor, memory_format=torch.contiguous_format, dtype=None,
               fill=None):
    """Allocate (``allocate``) a tensor a call writes, or one filled with ``fill``. While a
    call is being recorded (``launch_cache.record``) the allocation is noted, so that a replay
    of the call allocates the same."""
    from fastconv.ops.launch_cache import RECORDER
    # the strides torch gives the memory format (with one channel, channels_last is NCHW's)
    stride = torch.empty(shape, device="meta", memory_format=memory_format).stride()
    out = allocate(shape, stride, dtype or like.dtype, like.device)
    if fill is not None:
        out.fill_(fill)
    if RECORDER.allocations is not None:
        RECORDER.allocations.append((out, fill))
    return out


def needs_int64(*tensors: Optional[torch.Tensor]) -> bool:
    """Whether an element offset of some tensor (a strided view included) can reach 2**31."""
    for t in tensors:
        if t is None:
            continue
        reach = sum((size - 1) * abs(st) for size, st in zip(t.shape, t.stride()) if size > 0)
        if t.numel() >= 2**31 or reach >= 2**31:
            return True
    return False
