"""``fastconv.Conv2d``: a ``torch.nn.Conv2d`` whose forward runs fastconv's kernels."""
import torch.nn as nn
import torch.nn.functional as F

from fastconv import functional as FC


def _pad(module, input):
    """F.pad in the module's padding_mode, with an error naming padding where torch's
    constructor let a negative padding through that crops the input away."""
    pads = module._reversed_padding_repeated_twice
    if hasattr(input, "dim") and input.dim() >= len(module.kernel_size):
        spatial = input.shape[input.dim() - len(module.kernel_size):]
        for size, before, after in zip(reversed(spatial), pads[::2], pads[1::2]):
            if size + before + after < 1:
                raise ValueError(
                    f"{type(module).__name__}: padding={module.padding} with "
                    f"padding_mode={module.padding_mode!r} leaves nothing of input of shape "
                    f"{list(input.shape)}")
    return F.pad(input, pads, mode=module.padding_mode)


def _qualified_name(module, cls) -> str:
    """``fastconv.Conv2d`` in ``print(model)``, so that a converted model shows what it runs;
    a user's subclass keeps its own name."""
    return f"fastconv.{cls.__name__}" if type(module) is cls else type(module).__name__


class Conv2d(nn.Conv2d):
    """Drop-in :class:`torch.nn.Conv2d` (same constructor, same ``state_dict`` keys, every
    ``padding_mode``) computed by :func:`fastconv.functional.conv2d`."""

    def _get_name(self):
        return _qualified_name(self, Conv2d)

    def _conv_forward(self, input, weight, bias):
        if self.padding_mode != "zeros":
            input = _pad(self, input)
            return FC.conv2d(input, weight, bias, self.stride, 0, self.dilation, self.groups)
        return FC.conv2d(input, weight, bias, self.stride, self.padding, self.dilation,
                         self.groups)


class Conv1d(nn.Conv1d):
    """Drop-in :class:`torch.nn.Conv1d` (same constructor, same ``state_dict`` keys, every
    ``padding_mode``) computed by :func:`fastconv.functional.conv1d`."""

    def _get_name(self):
        return _qualified_name(self, Conv1d)

    def _conv_forward(self, input, weight, bias):
        if self.padding_mode != "zeros":
            input = _pad(self, input)
            return FC.conv1d(input, weight, bias, self.stride, 0, self.dilation, self.groups)
        return FC.conv1d(input, weight, bias, self.stride, self.padding, self.dilation,
                         self.groups)
