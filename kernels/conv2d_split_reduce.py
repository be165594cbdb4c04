"""The second pass of split-K: add the partial sums of a split GEMM and run its epilogue.

The split fprop and dgrad GEMMs (implicit GEMM and 1x1, ``SPLIT_K``) leave SPLIT partial sums
in a workspace [SPLIT, groups, rows, cols], rows = (n, p, q) output pixels, cols = channels of
a group, in the accumulator dtype. This kernel adds them in split order, always the same, so a
result is bitwise reproducible (no atomics), then applies the unsplit kernels' epilogue
(``conv_epilogue``: bias, residual, activation, pre-activation) and stores in the output's own
layout. The input gradient calls it with every epilogue switch off: a plain store.
"""
import triton
import triton.language as tl

from ._common import cast_index, conv_epilogue, group_tile_ids, pixel_coords


@triton.jit
def conv2d_split_reduce_kernel(
    # pointers (part: the workspace; b, res, pre, y as in conv_epilogue)
    part_ptr, b_ptr, res_ptr, y_ptr, pre_ptr,
    # sizes: rows are N*P*Q pixels, COLS channels per group, SPLIT partial sums
    N, P, Q, COLS, SPLIT,
    # strides (in elements); the workspace's columns are contiguous
    stride_pt, stride_pg, stride_pm,
    stride_yn, stride_yc, stride_yp, stride_yq,
    stride_rn, stride_rc, stride_rp, stride_rq,
    # epilogue switches (runtime: see conv_epilogue)
    activation, has_residual, store_preact,
    # meta-parameters
    HAS_BIAS: tl.constexpr, INDEX_64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    # one flat grid axis: see group_tile_ids
    M = cast_index(N, INDEX_64) * P * Q
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(COLS, BLOCK_N)
    g, pid_m, pid_n = group_tile_ids(num_pid_m, num_pid_n, INDEX_64)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = offs_m < M
    n, p, q = pixel_coords(offs_m, P, Q)
    offs_c = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_c = offs_c < COLS
    mask = mask_m[:, None] & mask_c[None, :]

    # -- the sum, in the workspace's dtype (float32, float64 for float64), split 0 first
    part_ptrs = part_ptr + g * stride_pg + offs_m[:, None] * stride_pm + offs_c[None, :]
    acc = tl.load(part_ptrs, mask=mask, other=0.0)
    for split in range(1, SPLIT):
        acc += tl.load(part_ptrs + split * stride_pt, mask=mask, other=0.0)

    # -- epilogue: as the unsplit kernel's, in the output's own layout
    conv_epilogue(acc, g * COLS + offs_c, mask_c, n * stride_yn + p * stride_yp + q * stride_yq,
                  n * stride_rn + p * stride_rp + q * stride_rq, mask_m,
                  b_ptr, res_ptr, pre_ptr, y_ptr, stride_yc, stride_rc,
                  activation, has_residual, store_preact, HAS_BIAS)
