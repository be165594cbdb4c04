"""Gradient of conv2d w.r.t. its input (also conv_transpose2d's forward), implicit GEMM whose
operands both arrive by TMA (Hopper tensor descriptors), decomposed by stride phase.

GEMM view per group g, as in conv2d_dgrad_igemm:
    dX[m, c] = sum_{(r, s, k)} dY[m ; r, s, k] * W[k, c, r, s]
with m = (n, h, w) an input pixel, c an input channel of the group, k (fastest) an output
channel of the group. Pixel (h, w) receives from output pixel (p, q) through tap (r, s) when
h + pad_h - r * dil_h = p * stride_h (and likewise for w).

Stride phases. The input pixels h = ph + i * stride_h of phase ph all receive through the same
taps, those with (ph + pad_h - r * dil_h) divisible by stride_h (``phase_taps``), and through
tap r pixel i of the phase reads dY row
    p = i + (ph + pad_h - r * dil_h) / stride_h,
an exact division: consecutive pixels of a phase read consecutive rows of dY. So a box of phase
pixels [BN_IMG images, BH rows i, BW columns j] at (n0, i0, j0) reads, for one tap, one TMA box
[BN_IMG, BH, BW, BLOCK_K] of dY seen as a 4-D [N, P, Q, K] tensor (channels_last) at
    (n0, i0 + (ph + pad_h - r * dil_h) / stride_h, j0 + (pw + pad_w - s * dil_w) / stride_w,
     g * KG + k0),
for every stride: no stride-phase views of dY, one descriptor. The coordinates may be negative
or past P and Q (large paddings, output_padding rows of dX that receive only some taps): TMA
fills every out-of-bounds element with zeros, so there is no mask in the loop. The phase is a
grid axis (with the group), so there is no limit on the stride; a phase without taps (1x1
stride 2: three of four) runs no loop and stores zeros.

The weight is a 2-D descriptor over the launcher's repacked copy Wt [C, R * S * KGP],
Wt[g * CG + c, (r * S + s) * KGP + k] = W[g * KG + k, c, r, s], each tap's KG output channels
padded with zeros to KGP, a whole number of BLOCK_K blocks; its tile is the box
[BLOCK_N, BLOCK_K] at (g * CG + c0, (r * S + s) * KGP + k0). A partial channel block's dY box
runs into the next group's channels (or past K, where TMA fills zeros) and meets those zero
weights. Wt's rows past the group's CG channels belong to the next group: those accumulator
rows are computed and never stored.

As in conv2d_fprop_tma, the reshaped 4-D box is the B operand: Triton feeds wgmma straight from
shared memory only a reshaped operand on the B side, so the kernel accumulates the transpose,
acc^T [BLOCK_N channels, BLOCK_M pixels] += Wt_tile @ dY_box^T, both wgmma operands in shared
memory, and transposes once in the epilogue. The loop over (the phase's taps, channel block)
is one flat loop that Triton software-pipelines (num_stages). With SPLIT_K, grid axis 1 splits
it (ranges past the phase's end are empty) and the partial sums go to a workspace by the
pixel's row in dX, which conv2d_split_reduce_kernel adds.

Narrow groups (CHANNELS_AS_N): a group of fewer than 64 input channels fills few of wgmma's
M rows in that orientation, so the kernel can accumulate acc [BLOCK_M pixels, BLOCK_N
channels] += dY_box @ Wt_tile^T instead, the group's input channels wgmma's N (16 to 64), dy's
reshaped box the A operand (loaded into registers from shared memory), the weight tile the B
operand in shared memory, no transpose in the epilogue (see conv2d_fprop_tma). Split-K is the
same in both orientations.

Descriptors are built on the host (see conv2d_fprop_tma: no global scratch, no allocator,
``__grid_constant__`` parameters).
"""
import triton
import triton.language as tl

from ._common import mma, phase_taps, split_k_range, store_partial, swizzled_tile_ids


@triton.jit
def conv2d_dgrad_tma_kernel(
    # tensor descriptors: dy_desc, dy as [N, P, Q, K] with unit channel stride; w_desc, the
    # repacked weight as [C, R * S * KGP]
    dy_desc, w_desc,
    # pointers (part: split-K workspace [SPLIT, groups, N*H*W, CG], used only with SPLIT_K)
    dx_ptr, part_ptr,
    # sizes (KGP: KG padded to whole BLOCK_K blocks; ITERS_PER_SPLIT: reduction-loop
    # iterations per split)
    N, H, W, R, S, CG, KG, KGP, ITERS_PER_SPLIT,
    # convolution parameters
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    # strides (in elements) of dx and of the workspace
    stride_dxn, stride_dxc, stride_dxh, stride_dxw,
    stride_pt, stride_pg, stride_pm,
    # meta-parameters
    DOT_IN_FP32: tl.constexpr, SPLIT_K: tl.constexpr,
    BN_IMG: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    CHANNELS_AS_N: tl.constexpr,
):
    BLOCK_M: tl.constexpr = BN_IMG * BH * BW

    # -- which (group, phase), pixel box and channel block: the largest phase, (0, 0), sizes
    #    every phase's boxes
    phases = stride_h * stride_w
    tiles_j = tl.cdiv(tl.cdiv(W, stride_w), BW)
    tiles_i = tl.cdiv(tl.cdiv(H, stride_h), BH)
    num_pid_m = tl.cdiv(N, BN_IMG) * tiles_i * tiles_j
    num_pid_n = tl.cdiv(CG, BLOCK_N)
    gp, pid_m, pid_n = swizzled_tile_ids(tl.program_id(0), num_pid_m, num_pid_n, GROUP_M)
    g = gp // phases
    ph = (gp % phases) // stride_w
    pw = gp % stride_w
    n0 = pid_m // (tiles_i * tiles_j) * BN_IMG
    i0 = (pid_m // tiles_j) % tiles_i * BH
    j0 = pid_m % tiles_j * BW
    c0 = pid_n * BLOCK_N

    # -- this phase's taps; the dy rows of its first tap and the step between taps (both
    #    exact divisions when the phase has taps)
    r0, step_r, taps_r = phase_taps(ph + pad_h, dil_h, stride_h, R)
    s0, step_s, taps_s = phase_taps(pw + pad_w, dil_w, stride_w, S)
    p_first = (ph + pad_h - r0 * dil_h) // stride_h
    q_first = (pw + pad_w - s0 * dil_w) // stride_w
    p_step = step_r * dil_h // stride_h
    q_step = step_s * dil_w // stride_w
    # a box past its phase's pixels (the phase is smaller than (0, 0), or empty: H < stride_h)
    # has nothing to compute
    box_empty = (i0 >= tl.cdiv(H - ph, stride_h)) | (j0 >= tl.cdiv(W - pw, stride_w))

    if CHANNELS_AS_N:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)  # pixels x channels
    else:
        acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)  # transposed: channels x pixels
    num_kb = tl.cdiv(KG, BLOCK_K)
    total = tl.where(box_empty, 0, taps_r * taps_s * num_kb)
    split, it_start, it_stop = split_k_range(total, 1, ITERS_PER_SPLIT, SPLIT_K)

    # -- reduction over (this phase's taps, output-channel block), one flat loop
    for it in tl.range(it_start, it_stop):
        tap = it // num_kb
        k0 = (it % num_kb) * BLOCK_K
        tr = tap // taps_s
        ts = tap % taps_s
        r = r0 + tr * step_r
        s = s0 + ts * step_s
        dy_tile = dy_desc.load([n0, i0 + p_first - tr * p_step, j0 + q_first - ts * q_step,
                                g * KG + k0]).reshape(BLOCK_M, BLOCK_K)
        w_tile = w_desc.load([g * CG + c0, (r * S + s) * KGP + k0])
        if CHANNELS_AS_N:
            # dX += dY Wt^T: the group's few input channels are wgmma's N (16 to 64); dy's
            # reshaped box, the A operand, goes through registers
            acc = mma(dy_tile, w_tile.T, acc, DOT_IN_FP32, False)
        else:
            # dX^T += Wt dY^T: dy's reshaped box as the B operand stays in shared memory
            acc = mma(w_tile, dy_tile.T, acc, DOT_IN_FP32, False)

    # -- epilogue: the box's pixels back in dX, h = ph + i * stride_h (likewise w)
    offs_m = tl.arange(0, BLOCK_M)
    n = n0 + offs_m // (BH * BW)
    h = ph + (i0 + (offs_m // BW) % BH) * stride_h
    w = pw + (j0 + offs_m % BW) * stride_w
    mask_m = (n < N) & (h < H) & (w < W)  # a box may hang over its phase's edges
    if SPLIT_K:
        row = (n * H + h) * W + w  # the workspace's rows are dX's pixels
    else:
        row = n * stride_dxn + h * stride_dxh + w * stride_dxw
    if CHANNELS_AS_N:
        # already pixels x channels, at most 64 of them: one store, no transpose
        _epilogue(acc, c0, g, CG, row, mask_m, split, dx_ptr, part_ptr, stride_dxc,
                  stride_pt, stride_pg, stride_pm, SPLIT_K, BLOCK_N)
    elif BLOCK_N > 128:
        # two halves of input channels one after the other: a whole 256-channel tile
        # transposed at once, with its store offsets, does not fit in registers
        HALF: tl.constexpr = BLOCK_N // 2
        acc_lo, acc_hi = acc.reshape(2, HALF, BLOCK_M).permute(1, 2, 0).split()
        _epilogue(acc_lo.T, c0, g, CG, row, mask_m, split, dx_ptr, part_ptr, stride_dxc,
                  stride_pt, stride_pg, stride_pm, SPLIT_K, HALF)
        _epilogue(acc_hi.T, c0 + HALF, g, CG, row, mask_m, split, dx_ptr, part_ptr,
                  stride_dxc, stride_pt, stride_pg, stride_pm, SPLIT_K, HALF)
    else:
        _epilogue(acc.T, c0, g, CG, row, mask_m, split, dx_ptr, part_ptr, stride_dxc,
                  stride_pt, stride_pg, stride_pm, SPLIT_K, BLOCK_N)


@triton.jit
def _epilogue(acc, c_first, g, CG, row, mask_m, split, dx_ptr, part_ptr, stride_dxc,
              stride_pt, stride_pg, stride_pm, SPLIT_K: tl.constexpr, COLS: tl.constexpr):
    """Store ``acc`` [pixels, COLS channels], whose channels start at ``c_first`` within
    group g: into dX in its dtype, or unrounded into the split's workspace (``row``: the
    pixels' offsets in dX, or their rows in the workspace)."""
    offs_c = c_first + tl.arange(0, COLS)
    mask_c = offs_c < CG  # the weight box may run into the next group's channels
    if SPLIT_K:
        store_partial(acc, part_ptr, split, g, row, mask_m, offs_c, mask_c,
                      stride_pt, stride_pg, stride_pm)
    else:
        dx_ptrs = dx_ptr + row[:, None] + (g * CG + offs_c)[None, :] * stride_dxc
        tl.store(dx_ptrs, acc.to(dx_ptr.dtype.element_ty),
                 mask=mask_m[:, None] & mask_c[None, :])
