"""fastconv's modules: subclasses of torch.nn's, computed by fastconv's kernels."""
from fastconv.nn.conv import Conv2d
from fastconv.nn.convert import convert

__all__ = ["Conv2d", "convert"]
