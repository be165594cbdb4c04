"""Gradient of conv2d w.r.t. its weight, implicit GEMM with split-K.

GEMM view per group g:  dW[k, j] = sum_m dY[m, k] * X[m ; j]
  k = output channel in the group          (KG rows)
  j = flattened tap (r, s, c), c fastest   (R*S*CG columns: small CG still fills a tile)
  reduction over m = (n, p, q)             (N*P*Q, long)
The reduction is split into SPLIT contiguous ranges (grid axis 2) so that enough programs run
when the weight is small and the batch large. Each split writes its own partial sum to a
workspace of shape [SPLIT, C_out, CG, R, S]; the launcher adds the partials in a fixed order, so
the result is bitwise reproducible (no atomics).
"""
import triton
import triton.language as tl

from ._common import cast_index, group_tile_ids, mma, pixel_coords, zeros_acc


@triton.jit
def conv2d_wgrad_igemm_kernel(
    # pointers
    x_ptr, dy_ptr, part_ptr,
    # sizes
    N, H, W, P, Q, R, S, CG, KG, M_PER_SPLIT,
    # convolution parameters
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    # strides (in elements)
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_dyn, stride_dyk, stride_dyp, stride_dyq,
    stride_pt, stride_pk, stride_pc, stride_pr, stride_ps,
    # meta-parameters
    ACC_FP64: tl.constexpr, DOT_IN_FP32: tl.constexpr,
    ALLOW_TF32: tl.constexpr, INDEX_64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # grid: axis 0 -> (g, pid_m, pid_n) as in group_tile_ids; axis 1 -> split of the reduction
    num_pid_m = tl.cdiv(KG, BLOCK_M)
    num_pid_n = tl.cdiv(R * S * CG, BLOCK_N)
    split = cast_index(tl.program_id(1), INDEX_64)
    g, pid_m, pid_n = group_tile_ids(num_pid_m, num_pid_n, INDEX_64)

    # -- rows: output channels of group g
    offs_k = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_k = offs_k < KG
    chan_k = g * KG + offs_k

    # -- columns: taps j -> (r, s, c)
    offs_j = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_j = offs_j < R * S * CG
    c = offs_j % CG
    s = (offs_j // CG) % S
    r = offs_j // (CG * S)
    dh = r * dil_h - pad_h
    dw = s * dil_w - pad_w
    x_chan = x_ptr + (g * CG + c) * stride_xc

    acc = zeros_acc(BLOCK_M, BLOCK_N, ACC_FP64)

    # -- reduction over this split's range of output pixels m -> (n, p, q)
    m_total = cast_index(N, INDEX_64) * P * Q
    m_start = split * M_PER_SPLIT
    m_stop = tl.minimum(m_start + M_PER_SPLIT, m_total)
    for m0 in range(m_start, m_stop, BLOCK_K):
        offs_m = m0 + tl.arange(0, BLOCK_K)
        mask_m = offs_m < m_stop
        n, p, q = pixel_coords(offs_m, P, Q)
        a_ptrs = (dy_ptr + chan_k * stride_dyk)[:, None] \
            + (n * stride_dyn + p * stride_dyp + q * stride_dyq)[None, :]
        a = tl.load(a_ptrs, mask=mask_k[:, None] & mask_m[None, :], other=0.0)
        h = (p * stride_h)[:, None] + dh[None, :]
        w = (q * stride_w)[:, None] + dw[None, :]
        b_ok = mask_m[:, None] & mask_j[None, :] & (h >= 0) & (h < H) & (w >= 0) & (w < W)
        b_ptrs = x_chan[None, :] + (n * stride_xn)[:, None] + h * stride_xh + w * stride_xw
        b = tl.load(b_ptrs, mask=b_ok, other=0.0)
        acc = mma(a, b, acc, DOT_IN_FP32, ALLOW_TF32)

    # -- epilogue: this split's partial sum
    part_ptrs = part_ptr + split * stride_pt + chan_k[:, None] * stride_pk \
        + (c * stride_pc + r * stride_pr + s * stride_ps)[None, :]
    tl.store(part_ptrs, acc, mask=mask_k[:, None] & mask_j[None, :])
