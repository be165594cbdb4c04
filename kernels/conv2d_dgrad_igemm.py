"""Gradient of conv2d w.r.t. its input (also the forward of conv_transpose2d), implicit GEMM.

GEMM view per group g:  dX[m, c] = sum_{(r, s, k)} dY[m ; r, s, k] * W[k, c, r, s]
  m = (n, h, w) input pixel            (M = N*H*W rows)
  c = input channel in the group       (CG columns)
  reduction over (r, s, k), k = output channel in the group (KG), k fastest
Input pixel (h, w) receives from output pixel (p, q) through tap (r, s) when
h + pad_h - r*dil_h = p*stride_h with 0 <= p < P (and likewise for w). Rows for which a tap has
no such p are masked, so there is no zero-dilated buffer and every dX element is written once.
With SPLIT_K, grid axis 1 splits the flat reduction loop as in the forward kernel; the partial
sums go to a workspace that ``conv2d_split_reduce_kernel`` adds and stores into dX.
"""
import triton
import triton.language as tl

from ._common import (cast_index, dgrad_source_pixel, group_tile_ids, mma, pixel_coords,
                      split_k_range, store_partial, zeros_acc)


@triton.jit
def conv2d_dgrad_igemm_kernel(
    # pointers (part: split-K workspace [SPLIT, groups, N*H*W, CG], used only with SPLIT_K)
    dy_ptr, w_ptr, dx_ptr, part_ptr,
    # sizes (ITERS_PER_SPLIT: reduction-loop iterations per split)
    N, H, W, P, Q, R, S, CG, KG, ITERS_PER_SPLIT,
    # convolution parameters
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    # strides (in elements)
    stride_dyn, stride_dyk, stride_dyp, stride_dyq,
    stride_wk, stride_wc, stride_wr, stride_ws,
    stride_dxn, stride_dxc, stride_dxh, stride_dxw,
    stride_pt, stride_pg, stride_pm,
    # meta-parameters
    ACC_FP64: tl.constexpr, DOT_IN_FP32: tl.constexpr,
    ALLOW_TF32: tl.constexpr, INDEX_64: tl.constexpr, SPLIT_K: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # one flat grid axis: see group_tile_ids
    M = cast_index(N, INDEX_64) * H * W
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(CG, BLOCK_N)
    g, pid_m, pid_n = group_tile_ids(num_pid_m, num_pid_n, INDEX_64)

    # -- input pixels handled by this program: m -> (n, h, w)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = offs_m < M
    n, h, w = pixel_coords(offs_m, H, W)
    hp = h + pad_h
    wp = w + pad_w

    # -- input channels of group g handled by this program
    offs_c = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_c = offs_c < CG

    dy_img = dy_ptr + n * stride_dyn + (g * KG) * stride_dyk
    w_chan = w_ptr + (g * KG) * stride_wk + offs_c * stride_wc

    acc = zeros_acc(BLOCK_M, BLOCK_N, ACC_FP64)

    # -- reduction over (r, s, output-channel block), one flat loop (this split's range of it)
    num_kb = tl.cdiv(KG, BLOCK_K)
    split, it_start, it_stop = split_k_range(R * S * num_kb, 1, ITERS_PER_SPLIT, SPLIT_K)
    for it in range(it_start, it_stop):
        rs = it // num_kb
        k0 = (it % num_kb) * BLOCK_K
        r = rs // S
        s = rs % S
        p, q, row_ok = dgrad_source_pixel(hp, wp, r, s, dil_h, dil_w, stride_h, stride_w, P, Q,
                                          mask_m)
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < KG
        a_ptrs = (dy_img + p * stride_dyp + q * stride_dyq)[:, None] + offs_k[None, :] * stride_dyk
        a = tl.load(a_ptrs, mask=row_ok[:, None] & mask_k[None, :], other=0.0)
        b_ptrs = (w_chan + r * stride_wr + s * stride_ws)[None, :] + offs_k[:, None] * stride_wk
        b = tl.load(b_ptrs, mask=mask_k[:, None] & mask_c[None, :], other=0.0)
        acc = mma(a, b, acc, DOT_IN_FP32, ALLOW_TF32)

    if SPLIT_K:
        store_partial(acc, part_ptr, split, g, offs_m, mask_m, offs_c, mask_c,
                      stride_pt, stride_pg, stride_pm)
    else:
        # -- epilogue
        dx_ptrs = (dx_ptr + n * stride_dxn + h * stride_dxh + w * stride_dxw)[:, None] \
            + (g * CG + offs_c)[None, :] * stride_dxc
        tl.store(dx_ptrs, acc.to(dx_ptr.dtype.element_ty),
                 mask=mask_m[:, None] & mask_c[None, :])
