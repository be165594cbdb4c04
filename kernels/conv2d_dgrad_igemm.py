"""Gradient of conv2d w.r.t. its input (also the forward of conv_transpose2d), implicit GEMM.

GEMM view per group g:  dX[m, c] = sum_{(r, s, k)} dY[m ; r, s, k] * W[k, c, r, s]
  m = (n, h, w) input pixel            (M = N*H*W rows)
  c = input channel in the group       (CG columns)
  reduction over (r, s, k), k = output channel in the group (KG), k fastest
Input pixel (h, w) receives from output pixel (p, q) through tap (r, s) when
h + pad_h - r*dil_h = p*stride_h with 0 <= p < P (and likewise for w).

Strided convolutions run by stride phase: the input pixels h = ph + i*stride_h of one phase
ph all receive through the same taps, those r with r*dil_h = ph + pad_h (mod stride_h) - every
stride_h / gcd(stride_h, dil_h)-th tap from the first (``phase_taps``). Each program owns rows
of one phase (grid: phases x groups x row tiles x column tiles) and loops over its phase's
taps only, so a stride-2 3x3 layer runs 1, 2 or 4 taps per pixel instead of 9 masked ones, and
a stride-2 1x1 layer's three tapless phases just store zeros. Rows whose output pixel falls
outside dY are masked; every dX element is written once, with no zero-dilated buffer.
With SPLIT_K, grid axis 1 splits the flat reduction loop as in the forward kernel (ranges past
a phase's end are empty); the partial sums go to a workspace, by the pixel's row in dX, that
``conv2d_split_reduce_kernel`` adds and stores into dX.
"""
import triton
import triton.language as tl

from ._common import (cast_index, group_tile_ids, mma, phase_taps, pixel_coords, split_k_range,
                      store_partial, zeros_acc)


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
    # one flat grid axis: see group_tile_ids; its "group" is (group, stride phase), phase fastest
    phases = stride_h * stride_w
    # rows of the largest phase, (0, 0), size every phase's row tiles
    M = cast_index(N, INDEX_64) * tl.cdiv(H, stride_h) * tl.cdiv(W, stride_w)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(CG, BLOCK_N)
    gp, pid_m, pid_n = group_tile_ids(num_pid_m, num_pid_n, INDEX_64)
    g = gp // phases
    ph = (gp % phases) // stride_w
    pw = gp % stride_w

    # -- input pixels handled by this program: m -> (n, i, j), h = ph + i*stride_h (likewise w);
    #    a phase past the image's edge (H < stride_h) has no rows
    Hp = tl.cdiv(H - ph, stride_h)
    Wp = tl.cdiv(W - pw, stride_w)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = offs_m < cast_index(N, INDEX_64) * Hp * Wp
    n, i, j = pixel_coords(offs_m, tl.maximum(Hp, 1), tl.maximum(Wp, 1))
    h = ph + i * stride_h
    w = pw + j * stride_w

    # -- input channels of group g handled by this program
    offs_c = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_c = offs_c < CG

    dy_img = dy_ptr + n * stride_dyn + (g * KG) * stride_dyk
    w_chan = w_ptr + (g * KG) * stride_wk + offs_c * stride_wc

    acc = zeros_acc(BLOCK_M, BLOCK_N, ACC_FP64)

    # -- reduction over (this phase's taps, output-channel block), one flat loop (this split's
    #    range of it)
    r0, step_r, taps_r = phase_taps(ph + pad_h, dil_h, stride_h, R)
    s0, step_s, taps_s = phase_taps(pw + pad_w, dil_w, stride_w, S)
    num_kb = tl.cdiv(KG, BLOCK_K)
    split, it_start, it_stop = split_k_range(taps_r * taps_s * num_kb, 1, ITERS_PER_SPLIT,
                                             SPLIT_K)
    for it in range(it_start, it_stop):
        rs = it // num_kb
        k0 = (it % num_kb) * BLOCK_K
        r = r0 + (rs // taps_s) * step_r
        s = s0 + (rs % taps_s) * step_s
        # ph + pad_h - r*dil_h is a multiple of stride_h: the division is exact, whatever sign
        p = i + (ph + pad_h - r * dil_h) // stride_h
        q = j + (pw + pad_w - s * dil_w) // stride_w
        row_ok = mask_m & (p >= 0) & (p < P) & (q >= 0) & (q < Q)
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < KG
        a_ptrs = (dy_img + p * stride_dyp + q * stride_dyq)[:, None] + offs_k[None, :] * stride_dyk
        a = tl.load(a_ptrs, mask=row_ok[:, None] & mask_k[None, :], other=0.0)
        b_ptrs = (w_chan + r * stride_wr + s * stride_ws)[None, :] + offs_k[:, None] * stride_wk
        b = tl.load(b_ptrs, mask=mask_k[:, None] & mask_c[None, :], other=0.0)
        acc = mma(a, b, acc, DOT_IN_FP32, ALLOW_TF32)

    if SPLIT_K:  # the workspace's rows are dX's pixels (n, h, w)
        rows = (n * H + h) * W + w
        store_partial(acc, part_ptr, split, g, rows, mask_m, offs_c, mask_c,
                      stride_pt, stride_pg, stride_pm)
    else:
        # -- epilogue
        dx_ptrs = (dx_ptr + n * stride_dxn + h * stride_dxh + w * stride_dxw)[:, None] \
            + (g * CG + offs_c)[None, :] * stride_dxc
        tl.store(dx_ptrs, acc.to(dx_ptr.dtype.element_ty),
                 mask=mask_m[:, None] & mask_c[None, :])
