"""fastconv: Triton kernels for convolution, as autograd-aware torch.library ops.

    import fastconv
    y = fastconv.functional.conv2d(x, w, stride=2, padding=1)
    layer = fastconv.Conv2d(64, 128, 3, padding=1)
    model = fastconv.convert(torchvision.models.resnet18())
"""
from fastconv import functional, ops
from fastconv.nn import Conv2d, convert
from fastconv.ops import INTERPRETING

__version__ = "0.1.0"
__all__ = ["Conv2d", "convert", "functional", "ops", "INTERPRETING", "__version__"]
