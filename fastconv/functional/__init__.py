"""fastconv's functions: torch.nn.functional's convolution API on fastconv's kernels."""
from fastconv.functional.conv1d import conv1d
from fastconv.functional.conv2d import conv2d
from fastconv.functional.conv_transpose2d import conv_transpose2d
from fastconv.functional.explain import ConvExplanation, explain

__all__ = ["conv1d", "conv2d", "conv_transpose2d", "explain", "ConvExplanation"]
