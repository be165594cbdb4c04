"""``fastconv.ConvTranspose2d``: a ``torch.nn.ConvTranspose2d`` whose forward runs fastconv's
kernels."""
from typing import List, Optional

import torch.nn as nn
from torch import Tensor

from fastconv import functional as FC
from fastconv.nn.conv import _qualified_name


class ConvTranspose2d(nn.ConvTranspose2d):
    """Drop-in :class:`torch.nn.ConvTranspose2d` (same constructor, same ``state_dict`` keys,
    the ``output_size`` argument of ``forward``) computed by
    :func:`fastconv.functional.conv_transpose2d`."""

    def _get_name(self):
        return _qualified_name(self, ConvTranspose2d)

    def forward(self, input: Tensor, output_size: Optional[List[int]] = None) -> Tensor:
        if self.padding_mode != "zeros":
            raise ValueError("Only `zeros` padding mode is supported for ConvTranspose2d")
        if any(isinstance(p, str) for p in self.padding):
            # torch's constructor stores padding='same' as ('same', 'same') and its forward then
            # fails inside the output-size arithmetic; say what is wrong instead
            raise ValueError(f"ConvTranspose2d: padding must be an int or a tuple of 2 ints, "
                             f"got padding={self.padding!r}")
        # the inherited rule turns a requested output_size into the output_padding that gives it
        output_padding = self._output_padding(input, output_size, self.stride, self.padding,
                                              self.kernel_size, 2, self.dilation)
        return FC.conv_transpose2d(input, self.weight, self.bias, self.stride, self.padding,
                                   output_padding, self.groups, self.dilation)
