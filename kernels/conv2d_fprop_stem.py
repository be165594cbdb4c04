"""Forward conv2d over few input channels (the stem: 3-channel images) as an implicit GEMM
whose reduction runs over the flattened taps and channels.

GEMM view per group g:  Y[m, k] = sum_j X[m ; r(j), s(j), c(j)] * W[k, c(j), r(j), s(j)]
  m = (n, p, q) output pixel        (M = N*P*Q rows)
  k = output channel in the group   (KG columns)
  j = (r * S + s) * CG + c          (R*S*CG, c fastest), tiled by BLOCK_K, the tail masked
The implicit-GEMM kernel (conv2d_fprop_igemm) steps tap by tap over blocks of at least 16
channels, which for a 3-channel image multiplies 13 zeros for every 3 useful products; here a
step of BLOCK_K covers several taps, so a 7x7x3 reduction (147) is 5 steps of 32 with 13 of 160
products masked. Each step decodes its BLOCK_K (r, s, c) triples from j; the A address splits
into a part per output pixel and a part per j, added as an outer sum, and the window's padding
and the tail are masked to zero.

Split-K (SPLIT_K) as in the implicit GEMM: grid axis 1 takes a contiguous range of the steps,
stores its partial sum, and ``conv2d_split_reduce_kernel`` adds them and runs the epilogue.
"""
import triton
import triton.language as tl

from ._common import (cast_index, conv_epilogue, group_tile_ids, mma, pixel_coords,
                      split_k_range, store_partial, zeros_acc)


@triton.jit
def conv2d_fprop_stem_kernel(
    # pointers (as conv2d_fprop_igemm_kernel's)
    x_ptr, w_ptr, b_ptr, res_ptr, y_ptr, pre_ptr, part_ptr,
    # sizes (ITERS_PER_SPLIT: reduction steps of BLOCK_K per split)
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
    # -2**28: far enough below 0 that a coordinate plus it stays negative, far enough above
    # -2**31 that the sum of two of them does not wrap
    OUTSIDE: tl.constexpr = -(1 << 28)
    UINDEX: tl.constexpr = tl.uint64 if INDEX_64 else tl.uint32
    # one flat grid axis: see group_tile_ids
    M = cast_index(N, INDEX_64) * P * Q
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(KG, BLOCK_N)
    g, pid_m, pid_n = group_tile_ids(num_pid_m, num_pid_n, INDEX_64)

    # -- output pixels handled by this program: m -> (n, p, q), and the window's corner
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = offs_m < M
    n, p, q = pixel_coords(offs_m, P, Q)
    h0 = p * stride_h - pad_h
    w0 = q * stride_w - pad_w
    # the part of every A offset that depends on the pixel only
    a_row = n * stride_xn + (g * CG) * stride_xc + h0 * stride_xh + w0 * stride_xw
    # a row past M starts far above the image, so the window test below masks it too
    h0 = tl.where(mask_m, h0, OUTSIDE)

    # -- output channels of group g handled by this program
    offs_k = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_k = offs_k < KG
    chan_k = g * KG + offs_k
    w_chan = w_ptr + chan_k * stride_wk

    acc = zeros_acc(BLOCK_M, BLOCK_N, ACC_FP64)

    # -- reduction over the flat (r, s, c) index in steps of BLOCK_K (this split's range)
    RED = R * S * CG
    split, j_start, j_stop = split_k_range(RED, BLOCK_K, ITERS_PER_SPLIT, SPLIT_K)
    for j0 in range(j_start, j_stop, BLOCK_K):
        offs_j = cast_index(j0, INDEX_64) + tl.arange(0, BLOCK_K)
        mask_j = offs_j < RED
        # decode j = (r * S + s) * CG + c: a BLOCK_K vector per step, not a tile
        c = offs_j % CG
        rs = offs_j // CG
        r = rs // S
        s = rs % S
        dh = r * dil_h
        dw = s * dil_w
        # in the window where 0 <= h < H and 0 <= w < W, one unsigned compare each (a negative
        # coordinate wraps above the bound); the tail past R*S*C counts as outside. The A tile's
        # registers are what limits its size, and these are [BLOCK_M, BLOCK_K] tiles.
        h = h0[:, None] + tl.where(mask_j, dh, OUTSIDE)[None, :]
        w = w0[:, None] + dw[None, :]
        a_ok = (h.to(UINDEX) < tl.cast(H, UINDEX)) & (w.to(UINDEX) < tl.cast(W, UINDEX))
        a_col = dh * stride_xh + dw * stride_xw + c * stride_xc
        a = tl.load(x_ptr + (a_row[:, None] + a_col[None, :]), mask=a_ok, other=0.0)
        b_ptrs = w_chan[None, :] + (c * stride_wc + r * stride_wr + s * stride_ws)[:, None]
        b = tl.load(b_ptrs, mask=mask_j[:, None] & mask_k[None, :], other=0.0)
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
