"""Direct convolution for thin groups (fewer than 16 channels per group, depthwise included).

tl.dot needs a reduction block of at least 16, so when the reduced channel count per group is
smaller these kernels compute the sliding window with elementwise multiply-adds instead. Each
program owns a [BLOCK_M pixels, BLOCK_N channels] tile; the channel axis is the vector axis, so
channels_last input is read with unit stride. Every channel of the tile may belong to a
different group: one launch covers all groups.
"""
import triton
import triton.language as tl

from ._common import (aligned, aligned_pixel_strides, cast_index, conv_epilogue,
                      dgrad_source_pixel, pixel_coords, zeros_acc)


@triton.jit
def conv2d_fprop_direct_kernel(
    # pointers (res: residual added before the activation; pre: pre-activation, for backward)
    x_ptr, w_ptr, b_ptr, res_ptr, y_ptr, pre_ptr,
    # sizes
    N, H, W, P, Q, R, S, CG, KG, K,
    # convolution parameters
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    # strides (in elements)
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_wk, stride_wc, stride_wr, stride_ws,
    stride_yn, stride_yk, stride_yp, stride_yq,
    stride_rn, stride_rk, stride_rp, stride_rq,
    # epilogue switches (runtime: see conv_epilogue)
    activation, has_residual, store_preact,
    # meta-parameters
    HAS_BIAS: tl.constexpr, ACC_FP64: tl.constexpr, INDEX_64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, VEC: tl.constexpr,
):
    # channels_last with a channel count Triton cannot see divisible by 16 (see aligned): the
    # launcher vouches that K and the pixel strides of x, y and res are multiples of VEC
    K = aligned(K, VEC)
    stride_xn, stride_xh, stride_xw = aligned_pixel_strides(stride_xn, stride_xh, stride_xw, VEC)
    stride_yn, stride_yp, stride_yq = aligned_pixel_strides(stride_yn, stride_yp, stride_yq, VEC)
    stride_rn, stride_rp, stride_rq = aligned_pixel_strides(stride_rn, stride_rp, stride_rq, VEC)
    # one flat grid axis: pid -> (pid_m, pid_n), n fastest
    M = cast_index(N, INDEX_64) * P * Q
    num_pid_n = tl.cdiv(K, BLOCK_N)
    pid = cast_index(tl.program_id(0), INDEX_64)
    pid_n = pid % num_pid_n
    pid_m = pid // num_pid_n

    # -- output pixels m -> (n, p, q)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = offs_m < M
    n, p, q = pixel_coords(offs_m, P, Q)
    h0 = p * stride_h - pad_h
    w0 = q * stride_w - pad_w

    # -- output channels (all groups); each reads input channels of its own group
    offs_k = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_k = offs_k < K
    x_chan = x_ptr + ((offs_k // KG) * CG) * stride_xc
    w_chan = w_ptr + offs_k * stride_wk
    x_img = n * stride_xn

    acc = zeros_acc(BLOCK_M, BLOCK_N, ACC_FP64)

    # -- sliding window over (c, r, s). The channel loop is a loop of its own so that, when
    # Triton specialises CG == 1 (depthwise), c folds to the constant 0 and the channels_last
    # addresses keep the alignment that lets the loads vectorise: an unknown c added to them
    # would not.
    for c in range(0, CG):
        for rs in range(0, R * S):
            r = rs // S
            s = rs % S
            h = h0 + r * dil_h
            w = w0 + s * dil_w
            row_ok = mask_m & (h >= 0) & (h < H) & (w >= 0) & (w < W)
            x_ptrs = (x_img + h * stride_xh + w * stride_xw)[:, None] \
                + (x_chan + c * stride_xc)[None, :]
            xv = tl.load(x_ptrs, mask=row_ok[:, None] & mask_k[None, :], other=0.0)
            wv = tl.load(w_chan + c * stride_wc + r * stride_wr + s * stride_ws, mask=mask_k,
                         other=0.0)
            acc += xv.to(acc.dtype) * wv.to(acc.dtype)[None, :]

    # -- epilogue: bias, residual, activation
    conv_epilogue(acc, offs_k, mask_k, n * stride_yn + p * stride_yp + q * stride_yq,
                  n * stride_rn + p * stride_rp + q * stride_rq, mask_m,
                  b_ptr, res_ptr, pre_ptr, y_ptr, stride_yk, stride_rk,
                  activation, has_residual, store_preact, HAS_BIAS)


@triton.jit
def conv2d_dgrad_direct_kernel(
    # pointers
    dy_ptr, w_ptr, dx_ptr,
    # sizes
    N, H, W, P, Q, R, S, CG, KG, C,
    # convolution parameters
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    # strides (in elements)
    stride_dyn, stride_dyk, stride_dyp, stride_dyq,
    stride_wk, stride_wc, stride_wr, stride_ws,
    stride_dxn, stride_dxc, stride_dxh, stride_dxw,
    # meta-parameters
    ACC_FP64: tl.constexpr, INDEX_64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, VEC: tl.constexpr,
):
    # channels_last alignment the launcher vouches for (see the forward)
    C = aligned(C, VEC)
    stride_dyn, stride_dyp, stride_dyq = \
        aligned_pixel_strides(stride_dyn, stride_dyp, stride_dyq, VEC)
    stride_dxn, stride_dxh, stride_dxw = \
        aligned_pixel_strides(stride_dxn, stride_dxh, stride_dxw, VEC)
    # one flat grid axis: pid -> (pid_m, pid_n), n fastest
    M = cast_index(N, INDEX_64) * H * W
    num_pid_n = tl.cdiv(C, BLOCK_N)
    pid = cast_index(tl.program_id(0), INDEX_64)
    pid_n = pid % num_pid_n
    pid_m = pid // num_pid_n

    # -- input pixels m -> (n, h, w)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = offs_m < M
    n, h, w = pixel_coords(offs_m, H, W)
    hp = h + pad_h
    wp = w + pad_w

    # -- input channels (all groups); each gathers from the output channels of its group
    offs_c = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_c = offs_c < C
    chan_k0 = (offs_c // CG) * KG
    w_chan = w_ptr + chan_k0 * stride_wk + (offs_c % CG) * stride_wc
    dy_chan = dy_ptr + chan_k0 * stride_dyk
    dy_img = n * stride_dyn

    acc = zeros_acc(BLOCK_M, BLOCK_N, ACC_FP64)

    # -- every (k, r, s) that reaches (h, w): h + pad_h - r*dil_h = p*stride_h, 0 <= p < P.
    # k has a loop of its own: KG == 1 (depthwise) folds it to 0 (see the forward).
    for k in range(0, KG):
        for rs in range(0, R * S):
            r = rs // S
            s = rs % S
            p, q, row_ok = dgrad_source_pixel(hp, wp, r, s, dil_h, dil_w, stride_h, stride_w,
                                              P, Q, mask_m)
            dy_ptrs = (dy_img + p * stride_dyp + q * stride_dyq)[:, None] \
                + (dy_chan + k * stride_dyk)[None, :]
            dyv = tl.load(dy_ptrs, mask=row_ok[:, None] & mask_c[None, :], other=0.0)
            wv = tl.load(w_chan + k * stride_wk + r * stride_wr + s * stride_ws, mask=mask_c,
                         other=0.0)
            acc += dyv.to(acc.dtype) * wv.to(acc.dtype)[None, :]

    # -- epilogue
    dx_ptrs = (dx_ptr + n * stride_dxn + h * stride_dxh + w * stride_dxw)[:, None] \
        + offs_c[None, :] * stride_dxc
    tl.store(dx_ptrs, acc.to(dx_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_c[None, :])


@triton.jit
def conv2d_wgrad_direct_kernel(
    # pointers
    x_ptr, dy_ptr, part_ptr,
    # sizes
    N, H, W, P, Q, R, S, CG, KG, K, M_PER_SPLIT,
    # convolution parameters
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    # strides (in elements)
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_dyn, stride_dyk, stride_dyp, stride_dyq,
    stride_pt, stride_pk, stride_pc, stride_pr, stride_ps,
    # meta-parameters
    ACC_FP64: tl.constexpr, INDEX_64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, VEC: tl.constexpr,
):
    # channels_last alignment the launcher vouches for (see the forward)
    K = aligned(K, VEC)
    stride_xn, stride_xh, stride_xw = aligned_pixel_strides(stride_xn, stride_xh, stride_xw, VEC)
    stride_dyn, stride_dyp, stride_dyq = \
        aligned_pixel_strides(stride_dyn, stride_dyp, stride_dyq, VEC)
    # grid: axis 0 -> (tap crs, pid_n), n fastest; axis 1 -> split of the reduction
    num_pid_n = tl.cdiv(K, BLOCK_N)
    pid = cast_index(tl.program_id(0), INDEX_64)
    split = cast_index(tl.program_id(1), INDEX_64)
    pid_n = pid % num_pid_n
    crs = pid // num_pid_n

    # -- one tap (c, r, s) for a block of output channels (all groups)
    # crs < CG*R*S, so "% CG" changes nothing, but with CG == 1 (depthwise) specialised it
    # folds c to the constant 0, which keeps the channels_last loads' alignment (see forward)
    c = crs // (R * S) % CG
    r = (crs // S) % R
    s = crs % S
    offs_k = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_k = offs_k < K
    x_chan = x_ptr + ((offs_k // KG) * CG + c) * stride_xc
    dy_chan = dy_ptr + offs_k * stride_dyk

    acc = zeros_acc(BLOCK_M, BLOCK_N, ACC_FP64)

    # -- reduction over this split's range of output pixels m -> (n, p, q)
    m_total = cast_index(N, INDEX_64) * P * Q
    m_start = split * M_PER_SPLIT
    m_stop = tl.minimum(m_start + M_PER_SPLIT, m_total)
    for m0 in range(m_start, m_stop, BLOCK_M):
        offs_m = m0 + tl.arange(0, BLOCK_M)
        mask_m = offs_m < m_stop
        n, p, q = pixel_coords(offs_m, P, Q)
        h = p * stride_h + r * dil_h - pad_h
        w = q * stride_w + s * dil_w - pad_w
        row_ok = mask_m & (h >= 0) & (h < H) & (w >= 0) & (w < W)
        dy_ptrs = (n * stride_dyn + p * stride_dyp + q * stride_dyq)[:, None] + dy_chan[None, :]
        dyv = tl.load(dy_ptrs, mask=mask_m[:, None] & mask_k[None, :], other=0.0)
        x_ptrs = (n * stride_xn + h * stride_xh + w * stride_xw)[:, None] + x_chan[None, :]
        xv = tl.load(x_ptrs, mask=row_ok[:, None] & mask_k[None, :], other=0.0)
        acc += dyv.to(acc.dtype) * xv.to(acc.dtype)

    # -- epilogue: this split's partial sum for the tap
    part = tl.sum(acc, axis=0)
    part_ptrs = part_ptr + split * stride_pt + offs_k * stride_pk \
        + c * stride_pc + r * stride_pr + s * stride_ps
    tl.store(part_ptrs, part, mask=mask_k)
