"""Forward conv2d as an implicit GEMM.

GEMM view per group g:  Y[m, k] = sum_{(r, s, c)} X[m ; r, s, c] * W[k, c, r, s]
  m = (n, p, q) output pixel        (M = N*P*Q rows)
  k = output channel in the group   (KG columns)
  reduction over (r, s, c)          (R*S*CG, c fastest)
No im2col buffer: each A tile is gathered from the input on the fly. The reduction loop is one
flat loop over (r, s, channel-block) so that the compiler can software-pipeline it. The
dispatcher sends groups with fewer than 16 channels to the direct kernel instead (tl.dot needs
a reduction block of at least 16).

Split-K (SPLIT_K): when the output tiles are too few to occupy the GPU (batch 1, late 7x7
stages), grid axis 1 splits that flat loop into contiguous ranges; each program then stores its
partial sum to a workspace and ``conv2d_split_reduce_kernel`` adds them and runs the epilogue.
"""
import triton
import triton.language as tl

from ._common import (cast_index, conv_epilogue, group_tile_ids, mma, pixel_coords,
                      split_k_range, store_partial, zeros_acc)


@triton.jit
def conv2d_fprop_igemm_kernel(
    # pointers (res: residual added before the activation; pre: pre-activation, for backward;
    # part: split-K workspace [SPLIT, groups, N*P*Q, KG], used only with SPLIT_K)
    x_ptr, w_ptr, b_ptr, res_ptr, y_ptr, pre_ptr, part_ptr,
    # sizes (ITERS_PER_SPLIT: reduction-loop iterations per split)
    N, H, W, P, Q, R, S, CG, KG, ITERS_PER_SPLIT,
    # convolution parameters
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    # strides (in elements)
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_wk, stride_wc, stride_wr, stride_ws,
    stride_yn, stride_yk, stride_yp, stride_yq,
    stride_rn, stride_rk, stride_rp, stride_rq,
    stride_pt, stride_pg, stride_pm,
    # epilogue switches (runtime: see conv_epilogue)
    activation, has_residual, store_preact,
    # meta-parameters
    HAS_BIAS: tl.constexpr, ACC_FP64: tl.constexpr, DOT_IN_FP32: tl.constexpr,
    ALLOW_TF32: tl.constexpr, INDEX_64: tl.constexpr, SPLIT_K: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # one flat grid axis: see group_tile_ids
    M = cast_index(N, INDEX_64) * P * Q
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(KG, BLOCK_N)
    g, pid_m, pid_n = group_tile_ids(num_pid_m, num_pid_n, INDEX_64)

    # -- output pixels handled by this program: m -> (n, p, q)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = offs_m < M
    n, p, q = pixel_coords(offs_m, P, Q)
    h0 = p * stride_h - pad_h
    w0 = q * stride_w - pad_w

    # -- output channels of group g handled by this program
    offs_k = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_k = offs_k < KG
    chan_k = g * KG + offs_k

    x_img = x_ptr + n * stride_xn + (g * CG) * stride_xc
    w_chan = w_ptr + chan_k * stride_wk

    acc = zeros_acc(BLOCK_M, BLOCK_N, ACC_FP64)

    # -- reduction over (r, s, channel block), one flat loop (this split's range of it)
    num_cb = tl.cdiv(CG, BLOCK_K)
    split, it_start, it_stop = split_k_range(R * S * num_cb, 1, ITERS_PER_SPLIT, SPLIT_K)
    for it in range(it_start, it_stop):
        rs = it // num_cb
        c0 = (it % num_cb) * BLOCK_K
        r = rs // S
        s = rs % S
        h = h0 + r * dil_h
        w = w0 + s * dil_w
        row_ok = mask_m & (h >= 0) & (h < H) & (w >= 0) & (w < W)
        offs_c = c0 + tl.arange(0, BLOCK_K)
        mask_c = offs_c < CG
        a_ptrs = (x_img + h * stride_xh + w * stride_xw)[:, None] + offs_c[None, :] * stride_xc
        a = tl.load(a_ptrs, mask=row_ok[:, None] & mask_c[None, :], other=0.0)
        b_ptrs = (w_chan + r * stride_wr + s * stride_ws)[None, :] + offs_c[:, None] * stride_wc
        b = tl.load(b_ptrs, mask=mask_c[:, None] & mask_k[None, :], other=0.0)
        acc = mma(a, b, acc, DOT_IN_FP32, ALLOW_TF32)

    if SPLIT_K:
        store_partial(acc, part_ptr, split, g, offs_m, mask_m, offs_k, mask_k,
                      stride_pt, stride_pg, stride_pm)
    else:
        # -- epilogue: bias, residual, activation, store in the output's own layout
        conv_epilogue(acc, chan_k, mask_k, n * stride_yn + p * stride_yp + q * stride_yq,
                      n * stride_rn + p * stride_rp + q * stride_rq, mask_m,
                      b_ptr, res_ptr, pre_ptr, y_ptr, stride_yk, stride_rk,
                      activation, has_residual, store_preact, HAS_BIAS)
