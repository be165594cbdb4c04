"""fastconv's functions: torch.nn.functional's convolution API and torchvision.ops' RoI
functions on fastconv's kernels."""
from fastconv.functional.conv1d import conv1d
from fastconv.functional.conv2d import conv2d
from fastconv.functional.conv_transpose2d import conv_transpose2d
from fastconv.functional.explain import ConvExplanation, explain
from fastconv.functional.roi import multi_level_roi_align, roi_align, roi_pool

__all__ = ["conv1d", "conv2d", "conv_transpose2d", "roi_align", "roi_pool",
           "multi_level_roi_align", "explain", "ConvExplanation"]
