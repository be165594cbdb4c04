"""``fastconv.Conv2d``: a ``torch.nn.Conv2d`` whose forward runs fastconv's kernels."""
import torch.nn as nn
import torch.nn.functional as F

from fastconv import functional as FC


class Conv2d(nn.Conv2d):
    """Drop-in :class:`torch.nn.Conv2d` (same constructor, same ``state_dict`` keys, every
    ``padding_mode``) computed by :func:`fastconv.functional.conv2d`."""

    def _conv_forward(self, input, weight, bias):
        if self.padding_mode != "zeros":
            input = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return FC.conv2d(input, weight, bias, self.stride, 0, self.dilation, self.groups)
        return FC.conv2d(input, weight, bias, self.stride, self.padding, self.dilation,
                         self.groups)


class Conv1d(nn.Conv1d):
    """Drop-in :class:`torch.nn.Conv1d` (same constructor, same ``state_dict`` keys, every
    ``padding_mode``) computed by :func:`fastconv.functional.conv1d`."""

    def _conv_forward(self, input, weight, bias):
        if self.padding_mode != "zeros":
            input = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return FC.conv1d(input, weight, bias, self.stride, 0, self.dilation, self.groups)
        return FC.conv1d(input, weight, bias, self.stride, self.padding, self.dilation,
                         self.groups)
