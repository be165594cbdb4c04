"""Triton kernels of fastconv (installed as ``fastconv.kernels``).

Only ``@triton.jit`` code lives here: no autograd, no argument checking. The launchers, the
dispatch plan and the config lists are in :mod:`fastconv.ops`.
"""
from .conv2d_fprop_igemm import conv2d_fprop_igemm_kernel
from .conv2d_fprop_stem import conv2d_fprop_stem_kernel
# The TMA kernels (the plan's TMA family on sm_90) are importable but not in __all__, which
# lists the kernels of plan.CONFIG_TABLES that the generic compile report and the 64-bit-offset
# tests must each cover: TMA launches never take 64-bit offsets, and their tiles are compiled
# by their own tests (test_conv2d_tma, test_dgrad_tma, test_wgrad_tma) and, as the benchmark's
# layers launch them, by tests/test_hopper_gemms.py.
from .conv2d_fprop_tma import conv2d_fprop_tma_kernel  # noqa: F401
from .conv2d_wgrad_tma import conv2d_wgrad_tma_kernel  # noqa: F401
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
