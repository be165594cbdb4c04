"""Direct convolution for thin groups (fewer than 16 channels per group, depthwise included).

tl.dot needs a reduction block of at least 16, so when the reduced channel count per group is
smaller these kernels compute the sliding window with elementwise multiply-adds instead. They
are memory-bound (a 3x3 depthwise layer does 9 multiply-adds per element it reads), so they are
shaped for bandwidth in channels_last:

* The forward and the input gradient: each program owns a spatial tile of one image - BLOCK_H
  rows by BLOCK_W columns of the pixels it writes, BLOCK_M = BLOCK_H * BLOCK_W, held as one flat
  [BLOCK_M, BLOCK_N] register tile whose row index splits into (row, column) by a shift and a
  mask (BLOCK_W is a power of two) - by a vector of BLOCK_N channels. The channel axis is the
  vector axis: channels_last rows load VEC elements (up to 16 bytes) a thread. Every tap loads
  its shifted [BLOCK_M, BLOCK_N] block from the same (BLOCK_H + R - 1) input rows of the tile's
  halo, so each input element comes from DRAM/L2 once per channel vector and the other taps
  that read it hit L1; the accumulator is float32 (float64 for float64) and is written once.
  Why not load the halo block once into registers and form each tap's view from it: Triton has
  no register-level shift or slice of a tensor, so a shifted view of a loaded block goes through
  tl.gather or a reshape that the compiler lowers via shared memory (a layout conversion per
  tap), and stride 2 would need a de-interleave as well; L1 already holds the halo (a 6x6x64
  halo of 16-bit elements is 4.5 KB), and the per-tap loads keep the code one masked
  ``ld.global.v4`` per thread and tap, which compiles to few registers and no spills.
  A tile spans one image only, unlike the flat pixel blocks of the GEMM families: a flat block
  of 16 pixels is one row segment, whose 3x3 window reads 3 input rows for 1 output row (3x the
  bytes, from L2); a 4x4 tile reads 6x6 for 16 (2.25x), an 8x8 tile 10x10 for 64 (1.6x).
* The weight gradient reduces over output pixels in two fixed-order stages and no atomics.
  Each program owns a channel vector and a range of spatial tiles (the forward's tiles, in
  tile order) and loads each tile's grad_output block once and its input halo once for ALL
  its taps (up to TAPS of them, the weight's R * S taps in one chunk up to 7x7): every tap
  multiplies the tile's dy by its shifted x block (from L1 after the first tap) and sums the
  product over the tile's pixels into the tap's row of a [TAPS, BLOCK_N] float32
  accumulator. Per-tap [BLOCK_M, BLOCK_N] accumulators would need R * S register tiles,
  which a runtime R, S cannot index; one row per tap costs a cross-thread sum per tap and
  tile instead, and reads dy once rather than once per tap. The range's sums go to the
  workspace [split, CG, R, S, K] (channel vectors, as loaded); the split-K reduction kernel
  adds the splits in split order (bitwise reproducible) and writes the gradient in its
  dtype. Unsplit, the program writes the gradient itself.
* The input gradient is a depthwise (thin-group) convolution of its own: each input pixel
  gathers from the output pixels that read it; no atomics.

NCHW is read through the same kernels with its strides (VEC = 1: channels are not the
contiguous axis there, so loads are one element wide). Every channel of the tile may belong to a
different group: one launch covers all groups.
"""
import triton
import triton.language as tl

from ._common import (aligned, aligned_pixel_strides, cast_index, conv_epilogue,
                      dgrad_source_pixel, zeros_acc)


@triton.jit
def spatial_tile(tile, P, Q, BLOCK_M: tl.constexpr, BLOCK_W: tl.constexpr):
    """(n, p, q, mask) of spatial tile ``tile`` (flat over image, tile row, tile column; tile
    column fastest): BLOCK_M // BLOCK_W rows by BLOCK_W columns of a P x Q image, as one
    flat vector of BLOCK_M pixels, row-major; ``mask`` is False past the image's edge."""
    tiles_q = tl.cdiv(Q, BLOCK_W)
    tiles_p = tl.cdiv(P, BLOCK_M // BLOCK_W)
    tq = tile % tiles_q
    tp = (tile // tiles_q) % tiles_p
    n = tile // tiles_q // tiles_p
    offs = tl.arange(0, BLOCK_M)
    p = tp * (BLOCK_M // BLOCK_W) + offs // BLOCK_W
    q = tq * BLOCK_W + offs % BLOCK_W
    return n, p, q, (p < P) & (q < Q)


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
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, VEC: tl.constexpr, BLOCK_W: tl.constexpr,
):
    # channels_last with a channel count Triton cannot see divisible by 16 (see aligned): the
    # launcher vouches that K and the pixel strides of x, y and res are multiples of VEC
    K = aligned(K, VEC)
    stride_xn, stride_xh, stride_xw = aligned_pixel_strides(stride_xn, stride_xh, stride_xw, VEC)
    stride_yn, stride_yp, stride_yq = aligned_pixel_strides(stride_yn, stride_yp, stride_yq, VEC)
    stride_rn, stride_rp, stride_rq = aligned_pixel_strides(stride_rn, stride_rp, stride_rq, VEC)
    # -- one flat grid axis: pid -> (image n, tile row, tile column, channel block), channels
    # fastest; the tile's output pixels (p, q)
    num_pid_n = tl.cdiv(K, BLOCK_N)
    pid = cast_index(tl.program_id(0), INDEX_64)
    pid_n = pid % num_pid_n
    n, p, q, mask_m = spatial_tile(pid // num_pid_n, P, Q, BLOCK_M, BLOCK_W)
    h0 = p * stride_h - pad_h
    w0 = q * stride_w - pad_w

    # -- output channels (all groups); each reads input channels of its own group
    offs_k = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_k = offs_k < K
    x_chan = x_ptr + ((offs_k // KG) * CG) * stride_xc
    w_chan = w_ptr + offs_k * stride_wk
    x_img = n * stride_xn

    acc = zeros_acc(BLOCK_M, BLOCK_N, ACC_FP64)

    # -- sliding window over (c, r, s): each tap's block comes from the rows the tile's halo
    # spans, so taps after the first hit L1 (see the module docstring). The channel loop is a loop of its own so that, when
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
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, VEC: tl.constexpr, BLOCK_W: tl.constexpr,
):
    # channels_last alignment the launcher vouches for (see the forward)
    C = aligned(C, VEC)
    stride_dyn, stride_dyp, stride_dyq = \
        aligned_pixel_strides(stride_dyn, stride_dyp, stride_dyq, VEC)
    stride_dxn, stride_dxh, stride_dxw = \
        aligned_pixel_strides(stride_dxn, stride_dxh, stride_dxw, VEC)
    # -- one flat grid axis: pid -> (image n, tile row, tile column, channel block), channels
    # fastest; the tile's input pixels (h, w), as in the forward
    num_pid_n = tl.cdiv(C, BLOCK_N)
    pid = cast_index(tl.program_id(0), INDEX_64)
    pid_n = pid % num_pid_n
    n, h, w, mask_m = spatial_tile(pid // num_pid_n, H, W, BLOCK_M, BLOCK_W)
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
    # pointers (part: the partial sums [SPLIT, CG, R, S, K]; unsplit, the weight gradient)
    x_ptr, dy_ptr, part_ptr,
    # sizes (TILES_PER_SPLIT: spatial tiles each split sums over)
    N, H, W, P, Q, R, S, CG, KG, K, TILES_PER_SPLIT,
    # convolution parameters
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    # strides (in elements)
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_dyn, stride_dyk, stride_dyp, stride_dyq,
    stride_pt, stride_pk, stride_pc, stride_pr, stride_ps,
    # meta-parameters (TAPS: taps a program accumulates, a power of two)
    ACC_FP64: tl.constexpr, INDEX_64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, VEC: tl.constexpr, BLOCK_W: tl.constexpr,
    TAPS: tl.constexpr,
):
    # channels_last alignment the launcher vouches for (see the forward)
    K = aligned(K, VEC)
    stride_xn, stride_xh, stride_xw = aligned_pixel_strides(stride_xn, stride_xh, stride_xw, VEC)
    stride_dyn, stride_dyp, stride_dyq = \
        aligned_pixel_strides(stride_dyn, stride_dyp, stride_dyq, VEC)
    # grid: axis 0 -> (input channel c of the group, chunk of TAPS taps, channel block), the
    # channel block fastest; axis 1 -> split: a range of TILES_PER_SPLIT spatial tiles
    num_pid_n = tl.cdiv(K, BLOCK_N)
    num_chunks = tl.cdiv(R * S, TAPS)
    pid = cast_index(tl.program_id(0), INDEX_64)
    split = cast_index(tl.program_id(1), INDEX_64)
    pid_n = pid % num_pid_n
    chunk = (pid // num_pid_n) % num_chunks
    # c < CG, so "% CG" changes nothing, but with CG == 1 (depthwise) specialised it folds c
    # to the constant 0, which keeps the channels_last loads' alignment (see the forward)
    c = pid // num_pid_n // num_chunks % CG
    rs_start = chunk * TAPS
    rs_stop = tl.minimum(rs_start + TAPS, R * S)

    # -- output channels (all groups); each reads input channel c of its own group
    offs_k = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_k = offs_k < K
    x_chan = x_ptr + ((offs_k // KG) * CG + c) * stride_xc
    dy_chan = dy_ptr + offs_k * stride_dyk

    # one row of sums per tap: a tap's products over a tile are summed across its pixels and
    # added to its own row, so that the tile's dy and x are loaded once for all of its taps
    offs_t = tl.arange(0, TAPS)
    acc = zeros_acc(TAPS, BLOCK_N, ACC_FP64)

    # -- reduction over this split's spatial tiles, in tile order (always the same order)
    tiles = N * tl.cdiv(P, BLOCK_M // BLOCK_W) * tl.cdiv(Q, BLOCK_W)
    t_start = split * TILES_PER_SPLIT
    t_stop = tl.minimum(t_start + TILES_PER_SPLIT, tiles)
    for tile in range(t_start, t_stop):
        n, p, q, mask_m = spatial_tile(tile, P, Q, BLOCK_M, BLOCK_W)
        # the tile's output gradient, once for every tap
        dy_ptrs = (n * stride_dyn + p * stride_dyp + q * stride_dyq)[:, None] + dy_chan[None, :]
        dyv = tl.load(dy_ptrs, mask=mask_m[:, None] & mask_k[None, :], other=0.0).to(acc.dtype)
        h0 = p * stride_h - pad_h
        w0 = q * stride_w - pad_w
        x_img = n * stride_xn
        # each tap's shifted block of the tile's input halo: the first tap brings the halo's
        # rows into L1, the others hit it (as in the forward)
        for rs in range(rs_start, rs_stop):
            r = rs // S
            s = rs % S
            h = h0 + r * dil_h
            w = w0 + s * dil_w
            row_ok = mask_m & (h >= 0) & (h < H) & (w >= 0) & (w < W)
            x_ptrs = (x_img + h * stride_xh + w * stride_xw)[:, None] + x_chan[None, :]
            xv = tl.load(x_ptrs, mask=row_ok[:, None] & mask_k[None, :], other=0.0)
            tap = tl.sum(dyv * xv.to(acc.dtype), axis=0)
            acc += tl.where(offs_t[:, None] == rs - rs_start, tap[None, :], 0.0)

    # -- epilogue: this split's partial sums for the chunk's taps (unsplit: the gradient itself,
    # in its dtype)
    chunk_rs = rs_start + offs_t
    part_ptrs = part_ptr + split * stride_pt + c * stride_pc \
        + ((chunk_rs // S) * stride_pr + (chunk_rs % S) * stride_ps)[:, None] \
        + (offs_k * stride_pk)[None, :]
    tl.store(part_ptrs, acc.to(part_ptr.dtype.element_ty),
             mask=(chunk_rs < rs_stop)[:, None] & mask_k[None, :])
