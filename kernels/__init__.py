"""Triton kernels of fastconv (installed as ``fastconv.kernels``).

Only ``@triton.jit`` code lives here: no autograd, no argument checking. The launchers, the
dispatch plan and the config lists are in :mod:`fastconv.ops`.
"""
from .conv2d_fprop_igemm import conv2d_fprop_igemm_kernel
from .conv2d_fprop_stem import conv2d_fprop_stem_kernel
# Importable, but not yet in __all__: __all__ lists the kernels the dispatcher launches, which
# the compile report and the 64-bit-offset tests must each cover; the plan does not launch the
# TMA forward yet (fastconv.conv.tma_launch; checked by tests/test_conv2d_tma.py), nor the TMA
# weight gradient (fastconv.conv.tma_wgrad_launch; tests/test_wgrad_tma.py).
from .conv2d_fprop_tma import conv2d_fprop_tma_kernel  # noqa: F401
from .conv2d_wgrad_tma import conv2d_wgrad_tma_kernel  # noqa: F401
# likewise the TMA input gradient (fastconv.conv.tma_dgrad_launch; tests/test_dgrad_tma.py)
from .conv2d_dgrad_tma import conv2d_dgrad_tma_kernel  # noqa: F401
from .conv2d_dgrad_igemm import conv2d_dgrad_igemm_kernel
from .conv2d_wgrad_igemm import conv2d_wgrad_igemm_kernel
from .conv2d_1x1_gemm import conv2d_1x1_gemm_kernel, conv2d_1x1_wgrad_kernel
from .conv2d_split_reduce import conv2d_split_reduce_kernel
from .conv2d_direct import (
    conv2d_fprop_direct_kernel,
    conv2d_dgrad_direct_kernel,
    conv2d_wgrad_direct_kernel,
)
from .roi_align import (
    roi_align_fwd_kernel,
    roi_align_bwd_kernel,
    roi_align_bwd_ordered_kernel,
)
from .roi_pool import roi_pool_fwd_kernel, roi_pool_bwd_kernel, roi_pool_bwd_ordered_kernel

__all__ = [
    "conv2d_fprop_igemm_kernel",
    "conv2d_fprop_stem_kernel",
    "conv2d_dgrad_igemm_kernel",
    "conv2d_wgrad_igemm_kernel",
    "conv2d_1x1_gemm_kernel",
    "conv2d_1x1_wgrad_kernel",
    "conv2d_split_reduce_kernel",
    "conv2d_fprop_direct_kernel",
    "conv2d_dgrad_direct_kernel",
    "conv2d_wgrad_direct_kernel",
    "roi_align_fwd_kernel",
    "roi_align_bwd_kernel",
    "roi_align_bwd_ordered_kernel",
    "roi_pool_fwd_kernel",
    "roi_pool_bwd_kernel",
    "roi_pool_bwd_ordered_kernel",
]
