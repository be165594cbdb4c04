"""fastconv's modules: subclasses of torch.nn's, computed by fastconv's kernels."""
from fastconv.nn.conv import Conv1d, Conv2d
from fastconv.nn.conv_transpose import ConvTranspose2d
from fastconv.nn.convert import convert, unconvert
from fastconv.nn.roi import MultiScaleRoIAlign, RoIAlign, RoIPool

__all__ = ["Conv1d", "Conv2d", "ConvTranspose2d", "RoIAlign", "RoIPool", "MultiScaleRoIAlign",
           "convert", "unconvert"]
