"""1x1 convolution (stride 1, padding 0) as a plain tiled GEMM over pixels.

With a 1x1 kernel and no stride or padding, output pixel m reads input pixel m only: the
convolution is Y[m, k] = sum_c X[m, c] W[k, c] with m = (n, hw) running over N*H*W. When the
spatial axes of a tensor flatten (stride_h == W * stride_w, true of contiguous NCHW and of
channels_last) a pixel is (image, flat index) and the kernel needs no h/w arithmetic, no masks
per tap and no division by P or Q: the inner loop is the matmul tutorial's.

The same kernel computes the input gradient, dX[m, c] = sum_k dY[m, k] W[k, c]: only the
operand strides differ, so the launcher passes them (B is W read as [c, k] for the forward and
as [k, c] for the gradient). With SPLIT_K, grid axis 1 splits the reduction into contiguous
ranges of BLOCK_K blocks whose partial sums ``conv2d_split_reduce_kernel`` adds before running
the same epilogue. The weight gradient is a GEMM reducing over pixels, with split-K partials
like the implicit-GEMM wgrad.
"""
import triton
import triton.language as tl

from ._common import (aligned, cast_index, conv_epilogue, group_tile_ids, mma,
                      split_k_range, store_partial, zeros_acc)


@triton.jit
def conv2d_1x1_gemm_kernel(
    # pointers (res: residual added before the activation; pre: pre-activation, for backward;
    # part: split-K workspace [SPLIT, groups, N*HW, COLS], used only with SPLIT_K)
    a_ptr, b_ptr, bias_ptr, res_ptr, y_ptr, pre_ptr, part_ptr,
    # sizes: A is [N*HW, groups*RED], B per group [RED, COLS], Y [N*HW, groups*COLS];
    # ITERS_PER_SPLIT: BLOCK_K steps of the reduction per split
    N, HW, RED, COLS, ITERS_PER_SPLIT,
    # strides (in elements); stride_bg moves B from one group to the next
    stride_an, stride_ahw, stride_ar,
    stride_br, stride_bc, stride_bg,
    stride_yn, stride_yhw, stride_yc,
    stride_rn, stride_rhw, stride_rc,
    stride_pt, stride_pg, stride_pm,
    # epilogue switches (runtime: see conv_epilogue)
    activation, has_residual, store_preact,
    # meta-parameters
    HAS_BIAS: tl.constexpr, ACC_FP64: tl.constexpr, DOT_IN_FP32: tl.constexpr,
    ALLOW_TF32: tl.constexpr, INDEX_64: tl.constexpr, SPLIT_K: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, VEC: tl.constexpr,
    B_UNIT_RED: tl.constexpr,
):
    # channels_last with a channel count Triton cannot see divisible by 16 (see aligned): the
    # launcher vouches that the channel counts and every stride but the unit ones are
    # multiples of VEC. B_UNIT_RED: B's unit stride is along the reduction (the forward reads
    # W [k, c] as [c, k]), else along its columns (the input gradient).
    RED = aligned(RED, VEC)
    COLS = aligned(COLS, VEC)
    stride_an = aligned(stride_an, VEC)
    stride_ahw = aligned(stride_ahw, VEC)
    stride_bg = aligned(stride_bg, VEC)
    stride_yn = aligned(stride_yn, VEC)
    stride_yhw = aligned(stride_yhw, VEC)
    stride_rn = aligned(stride_rn, VEC)
    stride_rhw = aligned(stride_rhw, VEC)
    if B_UNIT_RED:
        stride_bc = aligned(stride_bc, VEC)
    else:
        stride_br = aligned(stride_br, VEC)
    # one flat grid axis: see group_tile_ids
    M = cast_index(N, INDEX_64) * HW
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(COLS, BLOCK_N)
    g, pid_m, pid_n = group_tile_ids(num_pid_m, num_pid_n, INDEX_64)

    # -- rows: pixels m -> (n, hw)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = offs_m < M
    n = offs_m // HW
    hw = offs_m % HW
    a_row = n * stride_an + hw * stride_ahw + (g * RED) * stride_ar

    # -- columns: channels of group g
    offs_c = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_c = offs_c < COLS
    b_col = g * stride_bg + offs_c * stride_bc

    acc = zeros_acc(BLOCK_M, BLOCK_N, ACC_FP64)

    # -- reduction over the group's channels (this split's range of them)
    split, r_start, r_stop = split_k_range(RED, BLOCK_K, ITERS_PER_SPLIT, SPLIT_K)
    for r0 in range(r_start, r_stop, BLOCK_K):
        offs_r = r0 + tl.arange(0, BLOCK_K)
        mask_r = offs_r < RED
        a = tl.load(a_ptr + a_row[:, None] + offs_r[None, :] * stride_ar,
                    mask=mask_m[:, None] & mask_r[None, :], other=0.0)
        b = tl.load(b_ptr + offs_r[:, None] * stride_br + b_col[None, :],
                    mask=mask_r[:, None] & mask_c[None, :], other=0.0)
        acc = mma(a, b, acc, DOT_IN_FP32, ALLOW_TF32)

    if SPLIT_K:
        store_partial(acc, part_ptr, split, g, offs_m, mask_m, offs_c, mask_c,
                      stride_pt, stride_pg, stride_pm)
    else:
        # -- epilogue: bias, residual, activation (forward); a plain store (input gradient)
        conv_epilogue(acc, g * COLS + offs_c, mask_c, n * stride_yn + hw * stride_yhw,
                      n * stride_rn + hw * stride_rhw, mask_m,
                      bias_ptr, res_ptr, pre_ptr, y_ptr, stride_yc, stride_rc,
                      activation, has_residual, store_preact, HAS_BIAS)


@triton.jit
def conv2d_1x1_wgrad_kernel(
    # pointers
    x_ptr, dy_ptr, part_ptr,
    # sizes
    N, HW, CG, KG, M_PER_SPLIT,
    # strides (in elements)
    stride_xn, stride_xhw, stride_xc,
    stride_dyn, stride_dyhw, stride_dyk,
    stride_pt, stride_pk, stride_pc,
    # meta-parameters
    ACC_FP64: tl.constexpr, DOT_IN_FP32: tl.constexpr,
    ALLOW_TF32: tl.constexpr, INDEX_64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, VEC: tl.constexpr,
):
    """dW[k, c] = sum_m dY[m, k] X[m, c] per group; this split's share of the pixels."""
    # channels_last channel counts not divisible by 16: see conv2d_1x1_gemm_kernel
    CG = aligned(CG, VEC)
    KG = aligned(KG, VEC)
    stride_xn = aligned(stride_xn, VEC)
    stride_xhw = aligned(stride_xhw, VEC)
    stride_dyn = aligned(stride_dyn, VEC)
    stride_dyhw = aligned(stride_dyhw, VEC)
    stride_pk = aligned(stride_pk, VEC)
    # grid: axis 0 -> (g, pid_m, pid_n) as in group_tile_ids; axis 1 -> split of the reduction
    num_pid_m = tl.cdiv(KG, BLOCK_M)
    num_pid_n = tl.cdiv(CG, BLOCK_N)
    split = cast_index(tl.program_id(1), INDEX_64)
    g, pid_m, pid_n = group_tile_ids(num_pid_m, num_pid_n, INDEX_64)

    offs_k = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_k = offs_k < KG
    offs_c = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_c = offs_c < CG
    dy_chan = (g * KG + offs_k) * stride_dyk
    x_chan = (g * CG + offs_c) * stride_xc

    acc = zeros_acc(BLOCK_M, BLOCK_N, ACC_FP64)

    m_total = cast_index(N, INDEX_64) * HW
    m_start = split * M_PER_SPLIT
    m_stop = tl.minimum(m_start + M_PER_SPLIT, m_total)
    for m0 in range(m_start, m_stop, BLOCK_K):
        offs_m = m0 + tl.arange(0, BLOCK_K)
        mask_m = offs_m < m_stop
        n = offs_m // HW
        hw = offs_m % HW
        a = tl.load(dy_ptr + dy_chan[:, None] + (n * stride_dyn + hw * stride_dyhw)[None, :],
                    mask=mask_k[:, None] & mask_m[None, :], other=0.0)
        b = tl.load(x_ptr + (n * stride_xn + hw * stride_xhw)[:, None] + x_chan[None, :],
                    mask=mask_m[:, None] & mask_c[None, :], other=0.0)
        acc = mma(a, b, acc, DOT_IN_FP32, ALLOW_TF32)

    part_ptrs = part_ptr + split * stride_pt + (g * KG + offs_k)[:, None] * stride_pk \
        + offs_c[None, :] * stride_pc
    tl.store(part_ptrs, acc, mask=mask_k[:, None] & mask_c[None, :])
