"""fastconv: Triton kernels for convolution and RoIAlign/RoIPool, as autograd-aware
torch.library ops.

    import fastconv
    y = fastconv.functional.conv2d(x, w, stride=2, padding=1, activation="relu")
    layer = fastconv.Conv2d(64, 128, 3, padding=1)
    model = fastconv.convert(torchvision.models.resnet18())
    print(fastconv.explain(x, w, stride=2, padding=1))
"""
from fastconv.conv import op as _conv_op, transpose_op as _transpose_op  # noqa: F401
from fastconv.roi import align_op as _align_op, pool_op as _pool_op  # noqa: F401  (the ops)
from fastconv import functional, ops
from fastconv.functional import explain
from fastconv.nn import (Conv1d, Conv2d, ConvTranspose2d, MultiScaleRoIAlign, RoIAlign, RoIPool,
                         convert, unconvert)
from fastconv.ops import INTERPRETING

__version__ = "0.1.0"
__all__ = ["Conv1d", "Conv2d", "ConvTranspose2d", "RoIAlign", "RoIPool", "MultiScaleRoIAlign",
           "convert", "unconvert", "explain", "functional", "ops", "INTERPRETING", "__version__"]
