"""fastconv's functions: torch.nn.functional's convolution API on fastconv's kernels."""
from fastconv.functional.conv2d import conv2d

__all__ = ["conv2d"]
