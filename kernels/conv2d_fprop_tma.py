"""Forward conv2d as an implicit GEMM whose operands arrive by TMA (Hopper tensor descriptors).

GEMM view per group g, as in conv2d_fprop_igemm:
    Y[m, k] = sum_{(r, s, c)} X[m ; r, s, c] * W[k, c, r, s]
with m = (n, p, q) an output pixel, k an output channel of the group, c fastest in the reduction.

Tiles. A program owns a box of output pixels [BN_IMG images, BH rows, BW columns] (BLOCK_M =
BN_IMG * BH * BW rows of the GEMM; several images per box for 7x7 maps) and BLOCK_N output
channels. For tap (r, s) and channel block c0 its x tile is one TMA box [BN_IMG, BH, BW, BLOCK_K]
of x seen as a 4-D [N, H, W, C] tensor (channels_last), at
    (n0, p0 * stride - pad_h + r * dil_h, q0 * stride - pad_w + s * dil_w, g * CG + c0),
reshaped to [BLOCK_M, BLOCK_K]: the box's rows are in (n, p, q) order, as the GEMM's are. TMA
fills every out-of-bounds element of a box with zeros, negative coordinates included: that fill
is the convolution's zero padding, with no mask in the loop.

The weight is a 2-D descriptor [K, R * S * CGP], a channels_last weight's memory order with each
tap's channels padded with zeros to CGP, a whole number of BLOCK_K blocks (the launcher's copy);
its tile is the box [BLOCK_N, BLOCK_K] at (g * KG + k0, (r * S + s) * CGP + c0). The zeros past CG
make a partial channel block contribute nothing: the x box then runs into the next group's
channels (or past C, where TMA fills zeros), and those columns meet zero weights (an inf or NaN
there would still turn 0 * x into NaN, as a dense GEMM over padding would). Why not a 4-D
[K, R, S, CG] weight box [BLOCK_N, 1, 1, BLOCK_K], whose own fill would do the same without a
padded copy: a box of rank > 2 reaches tl.dot through a reshape, and Triton (3.6 and 3.8) feeds
wgmma straight from shared memory only the operand it reshapes as a B (memdesc_reshape, then
memdesc_trans); an A operand behind a reshape is loaded into registers first (local_load, a
layout conversion, then wgmma from registers, split in K). x's box cannot avoid the reshape, so
it is the B operand: the kernel computes Y^T = W @ X^T (acc [BLOCK_N, BLOCK_M]), A = the 2-D
weight tile, both wgmma operands in shared memory, and transposes once, in the epilogue.

Narrow groups (CHANNELS_AS_N). A group of fewer than 64 output channels (ResNeXt's 32 groups
of 8, 16, 32) fills few of the transposed tile's 128 or 256 rows of wgmma's M, at least 64 a
warpgroup: a group of 8 wastes 15 of every 16 products. With CHANNELS_AS_N the kernel
accumulates the other way round, acc [BLOCK_M pixels, BLOCK_N channels] += X_box @ W_tile^T,
so that the group's channels are wgmma's N (16 to 64; BLOCK_N their count to a power of two)
and the pixels its M. x's reshaped box is then the A operand, which Triton loads from shared
memory into registers before each wgmma (the weight tile, transposed in place, stays the B
operand in shared memory); the accumulator needs no transpose in the epilogue. Split-K and
the persistent grid are the same in both orientations; with the switch off the kernel is the
transposed one above, unchanged.

float32 (ALLOW_TF32). wgmma multiplies float32 only as TF32 (m64nNk8), and takes 32-bit
operands from shared memory only K-major: the weight tile [BLOCK_N, BLOCK_K] and x's box
transposed, [BLOCK_K, BLOCK_M] with K contiguous, both are, so the transposed orientation keeps
both operands in shared memory. With ALLOW_TF32 off the dot is exact float32, which wgmma
cannot run (the plan does not launch that).

Stride. A box steps one pixel at a time, so for stride > 1 x is read through stride-phase
views: phase (ph, pw) holds the pixels h = STRIDE_H * i + ph, w = STRIDE_W * j + pw (base
offset ph * stride_xh + pw * stride_xw, strides multiplied by the stride). Tap row
h = STRIDE_H * p + t, t = r * dil_h - pad_h, lies in phase t mod STRIDE_H at phase row
p + floor(t / STRIDE_H): again a box, with its own zero fill at the phase's edges. The reduction
visits the phases one after the other (a loop each; stride 1 has one), and within a phase runs
one flat loop over (its taps, channel block) that Triton software-pipelines (num_stages).

Descriptors are built on the host (triton.tools.tensor_descriptor.TensorDescriptor), one per
phase plus the weight's. Host descriptors need no global scratch and no
``triton.set_allocator`` (a process-wide setting a library should not own), reach the kernel as
``__grid_constant__`` parameters (no tensormap written and fenced by every program), run in
triton 3.8's interpreter, and compile to ``cp.async.bulk.tensor`` for sm_90 with triton 3.6 and
3.8. The phases are four separate parameters, not a tuple: triton 3.8 launches descriptors
inside a tuple, but triton 3.6's launcher only unpacks top-level ones. So strides are 1 or 2
here (the unused phase parameters repeat phase 00); larger strides take the pointer kernel.

Program order: one grid axis over (group, m tile, n tile), grouped by GROUP_M m tiles as in
Triton's matmul tutorial, so that programs running together share x and weight tiles in L2.

Split-K (SPLIT_K): where the output tiles are too few to give every SM a program (batch 1,
ResNet-50's 7x7 layers: 56 tiles of 128x128 at batch 32 for 132 SMs), grid axis 1 cuts the
flat reduction (every phase's loop, in the order above) into ranges of ITERS_PER_SPLIT steps;
each program stores its float32 partial sum by output pixel row (n * P + p) * Q + q into the
workspace [SPLIT, groups, N*P*Q, KG], and ``conv2d_split_reduce_kernel`` adds the ranges and
applies bias, residual, activation and pre-activation. Unsplit, none of that is compiled.

Persistent (PERSISTENT): a grid of about one program per SM, each looping over the tiles a grid
apart (the split index stays its own). The tile loop is flattened with the reduction where the
reduction is one loop (stride 1), so that the next tile's first loads are issued before this
tile's epilogue. Warp specialisation is not used: Triton's Hopper pass for it (3.6 and 3.8)
leaves a kernel of 8 warps, or one with an ``else`` branch (the epilogue's activations), as
it is, and with 4 warps and a split it fails to compile (3.8: TMA copies of half a box after
splitting the tile between consumer warp groups; 3.6: at stride 2, whose four phase loops it
cannot partition).
"""
import triton
import triton.language as tl

from ._common import conv_epilogue, mma, store_partial, swizzled_tile_ids


@triton.jit
def _phase_taps(phase, R, pad, dil, STRIDE: tl.constexpr):
    """(first tap, tap step, taps) of the taps r along one axis whose offset t = r * dil - pad
    lies in stride phase ``phase`` (t mod STRIDE == phase).

    t mod STRIDE repeats with period STRIDE / gcd(dil, STRIDE), so the first such tap is below
    STRIDE and the others follow at that period. Every operand of ``%`` is kept non-negative
    (t + STRIDE * pad has t's residue) so that it means the same in the interpreter (floor)
    and on a GPU (truncation)."""
    if STRIDE == 1:
        r0 = 0
        r_step = 1
        taps = R
    else:
        r0 = R  # none
        r_step = STRIDE
        for j in tl.static_range(STRIDE - 1, -1, -1):  # downwards: the smallest j wins
            r0 = tl.where((j * dil + (STRIDE - 1) * pad) % STRIDE == phase, j, r0)
            if j > 0:
                r_step = tl.where((j * dil) % STRIDE == 0, j, r_step)
        taps = tl.maximum(R - r0 + r_step - 1, 0) // r_step
    return r0, r_step, taps


@triton.jit
def conv2d_fprop_tma_kernel(
    # tensor descriptors: x_desc<ph><pw>, x's stride phase (ph, pw) as [N, H', W', C] with unit
    # channel stride (a phase the stride lacks repeats phase 00, never read); w_desc, the
    # weight as [K, R * S * CGP]
    x_desc00, x_desc01, x_desc10, x_desc11, w_desc,
    # pointers (res: residual added before the activation; pre: pre-activation, for backward;
    # part: split-K workspace [SPLIT, groups, N*P*Q, KG] in float32, used only with SPLIT_K)
    b_ptr, res_ptr, y_ptr, pre_ptr, part_ptr,
    # sizes (CGP: CG padded to whole BLOCK_K blocks, the weight's channels per tap;
    # ITERS_PER_SPLIT: reduction steps per split, counted over all phases)
    N, H, W, P, Q, R, S, CG, CGP, KG, groups, ITERS_PER_SPLIT,
    # convolution parameters
    pad_h, pad_w, dil_h, dil_w,
    # strides (in elements) of y, the residual and the workspace
    stride_yn, stride_yk, stride_yp, stride_yq,
    stride_rn, stride_rk, stride_rp, stride_rq,
    stride_pt, stride_pg, stride_pm,
    # epilogue switches (runtime: see conv_epilogue)
    activation, has_residual, store_preact,
    # meta-parameters
    HAS_BIAS: tl.constexpr, DOT_IN_FP32: tl.constexpr, ALLOW_TF32: tl.constexpr,
    STRIDE_H: tl.constexpr, STRIDE_W: tl.constexpr,
    BN_IMG: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    SPLIT_K: tl.constexpr, PERSISTENT: tl.constexpr, CHANNELS_AS_N: tl.constexpr,
):
    tiles_q = tl.cdiv(Q, BW)
    tiles_p = tl.cdiv(P, BH)
    num_pid_m = tl.cdiv(N, BN_IMG) * tiles_p * tiles_q
    num_pid_n = tl.cdiv(KG, BLOCK_N)
    if PERSISTENT:
        # a grid of about one program per SM, each walking the tiles a grid apart in the same
        # grouped order: no program starts or ends per tile, and (flattened) the next tile's
        # first loads can be issued before this tile's epilogue
        num_tiles = groups * num_pid_m * num_pid_n
        for tile in tl.range(tl.program_id(0), num_tiles, tl.num_programs(0), flatten=True):
            _conv_tile(tile, num_pid_m, num_pid_n, tiles_p, tiles_q,
                       x_desc00, x_desc01, x_desc10, x_desc11, w_desc,
                       b_ptr, res_ptr, y_ptr, pre_ptr, part_ptr,
                       N, H, W, P, Q, R, S, CG, CGP, KG, ITERS_PER_SPLIT,
                       pad_h, pad_w, dil_h, dil_w,
                       stride_yn, stride_yk, stride_yp, stride_yq,
                       stride_rn, stride_rk, stride_rp, stride_rq,
                       stride_pt, stride_pg, stride_pm,
                       activation, has_residual, store_preact,
                       HAS_BIAS, DOT_IN_FP32, ALLOW_TF32, STRIDE_H, STRIDE_W, BN_IMG, BH, BW,
                       BLOCK_N, BLOCK_K, GROUP_M, SPLIT_K, CHANNELS_AS_N)
    else:
        _conv_tile(tl.program_id(0), num_pid_m, num_pid_n, tiles_p, tiles_q,
                   x_desc00, x_desc01, x_desc10, x_desc11, w_desc,
                   b_ptr, res_ptr, y_ptr, pre_ptr, part_ptr,
                   N, H, W, P, Q, R, S, CG, CGP, KG, ITERS_PER_SPLIT,
                   pad_h, pad_w, dil_h, dil_w,
                   stride_yn, stride_yk, stride_yp, stride_yq,
                   stride_rn, stride_rk, stride_rp, stride_rq,
                   stride_pt, stride_pg, stride_pm,
                   activation, has_residual, store_preact,
                   HAS_BIAS, DOT_IN_FP32, ALLOW_TF32, STRIDE_H, STRIDE_W, BN_IMG, BH, BW,
                   BLOCK_N, BLOCK_K, GROUP_M, SPLIT_K, CHANNELS_AS_N)


@triton.jit
def _conv_tile(tile, num_pid_m, num_pid_n, tiles_p, tiles_q,
               x_desc00, x_desc01, x_desc10, x_desc11, w_desc,
               b_ptr, res_ptr, y_ptr, pre_ptr, part_ptr,
               N, H, W, P, Q, R, S, CG, CGP, KG, ITERS_PER_SPLIT,
               pad_h, pad_w, dil_h, dil_w,
               stride_yn, stride_yk, stride_yp, stride_yq,
               stride_rn, stride_rk, stride_rp, stride_rq,
               stride_pt, stride_pg, stride_pm,
               activation, has_residual, store_preact,
               HAS_BIAS: tl.constexpr, DOT_IN_FP32: tl.constexpr, ALLOW_TF32: tl.constexpr,
               STRIDE_H: tl.constexpr, STRIDE_W: tl.constexpr,
               BN_IMG: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr,
               BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
               SPLIT_K: tl.constexpr, CHANNELS_AS_N: tl.constexpr):
    """One output tile (flat id ``tile``): its reduction, or this split's range of it, then
    the epilogue (unsplit) or its partial sum's store (SPLIT_K)."""
    BLOCK_M: tl.constexpr = BN_IMG * BH * BW

    # -- which output box and channel block: m tiles are (image, row, column) boxes
    g, pid_m, pid_n = swizzled_tile_ids(tile, num_pid_m, num_pid_n, GROUP_M)
    n0 = pid_m // (tiles_p * tiles_q) * BN_IMG
    p0 = (pid_m // tiles_q) % tiles_p * BH
    q0 = pid_m % tiles_q * BW
    k0 = g * KG + pid_n * BLOCK_N
    c_base = g * CG

    if CHANNELS_AS_N:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)  # pixels x channels
    else:
        acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)  # transposed: channels x pixels
    num_cb = tl.cdiv(CG, BLOCK_K)
    if SPLIT_K:
        # this split's steps [first, last) of the flat reduction: all phases' loops one after
        # the other, each clipped to the part of it that falls in the range (``done``: the
        # steps of the phases before)
        split = tl.program_id(1)
        first = split * ITERS_PER_SPLIT
        last = first + ITERS_PER_SPLIT
        done = 0

    # -- reduction: the taps of each stride phase, then over channel blocks within a tap
    for ph in tl.static_range(STRIDE_H):
        r0, r_step, taps_r = _phase_taps(ph, R, pad_h, dil_h, STRIDE_H)
        if ph > 0:  # a phase without pixels (H <= ph) reads only zeros: skip its taps
            taps_r = tl.where(H > ph, taps_r, 0)
        for pw in tl.static_range(STRIDE_W):
            s0, s_step, taps_s = _phase_taps(pw, S, pad_w, dil_w, STRIDE_W)
            if pw > 0:
                taps_s = tl.where(W > pw, taps_s, 0)
            if ph == 0 and pw == 0:  # constexpr conditions: one descriptor per loop
                x_desc = x_desc00
            elif ph == 0:
                x_desc = x_desc01
            elif pw == 0:
                x_desc = x_desc10
            else:
                x_desc = x_desc11
            steps = taps_r * taps_s * num_cb
            if SPLIT_K:
                lo = tl.minimum(tl.maximum(first - done, 0), steps)
                hi = tl.maximum(tl.minimum(last - done, steps), lo)
                done += steps
            else:
                lo = 0
                hi = steps
            for it in tl.range(lo, hi):
                tap = it // num_cb
                c0 = (it % num_cb) * BLOCK_K
                r = r0 + (tap // taps_s) * r_step
                s = s0 + (tap % taps_s) * s_step
                # tap offset t = r * dil - pad lies in this phase: (t - ph) / STRIDE is exact
                h = p0 + (r * dil_h - pad_h - ph) // STRIDE_H
                w = q0 + (s * dil_w - pad_w - pw) // STRIDE_W
                x_tile = x_desc.load([n0, h, w, c_base + c0]).reshape(BLOCK_M, BLOCK_K)
                w_tile = w_desc.load([k0, (r * S + s) * CGP + c0])
                if CHANNELS_AS_N:
                    # Y += X W^T: the group's few channels are wgmma's N (16 to 64); x's
                    # reshaped box, the A operand, goes through registers
                    acc = mma(x_tile, w_tile.T, acc, DOT_IN_FP32, ALLOW_TF32)
                else:
                    # Y^T += W X^T: x's reshaped box as the B operand stays in shared memory
                    acc = mma(w_tile, x_tile.T, acc, DOT_IN_FP32, ALLOW_TF32)

    # -- epilogue: bias, residual, activation, pointer stores in y's own layout; or, split,
    # the partial sum by output pixel row (n * P + p) * Q + q, for the split-K reduction
    offs_m = tl.arange(0, BLOCK_M)
    n = n0 + offs_m // (BH * BW)
    p = p0 + (offs_m // BW) % BH
    q = q0 + offs_m % BW
    mask_m = (n < N) & (p < P) & (q < Q)  # a box may hang over the map's edges
    if SPLIT_K:
        y_row = (n * P + p) * Q + q  # the workspace's pixel rows
        r_row = y_row
    else:
        y_row = n * stride_yn + p * stride_yp + q * stride_yq
        r_row = n * stride_rn + p * stride_rp + q * stride_rq
    if CHANNELS_AS_N:
        # already pixels x channels, at most 64 of them: one epilogue, no transpose
        if SPLIT_K:
            _store_partial_cols(acc, pid_n * BLOCK_N, split, g, KG, y_row, mask_m, part_ptr,
                                stride_pt, stride_pg, stride_pm, BLOCK_N)
        else:
            _epilogue(acc, pid_n * BLOCK_N, g, KG, y_row, r_row, mask_m, b_ptr, res_ptr,
                      pre_ptr, y_ptr, stride_yk, stride_rk, activation, has_residual,
                      store_preact, HAS_BIAS, BLOCK_N)
    elif BLOCK_N > 128:
        # two halves of output channels one after the other: a whole 128x256 tile transposed
        # at once, with its residual and store offsets, does not fit in registers
        HALF: tl.constexpr = BLOCK_N // 2
        acc_lo, acc_hi = acc.reshape(2, HALF, BLOCK_M).permute(1, 2, 0).split()
        if SPLIT_K:
            _store_partial_cols(acc_lo.T, pid_n * BLOCK_N, split, g, KG, y_row, mask_m,
                                part_ptr, stride_pt, stride_pg, stride_pm, HALF)
            _store_partial_cols(acc_hi.T, pid_n * BLOCK_N + HALF, split, g, KG, y_row, mask_m,
                                part_ptr, stride_pt, stride_pg, stride_pm, HALF)
        else:
            _epilogue(acc_lo.T, pid_n * BLOCK_N, g, KG, y_row, r_row, mask_m, b_ptr, res_ptr,
                      pre_ptr, y_ptr, stride_yk, stride_rk, activation, has_residual,
                      store_preact, HAS_BIAS, HALF)
            _epilogue(acc_hi.T, pid_n * BLOCK_N + HALF, g, KG, y_row, r_row, mask_m, b_ptr,
                      res_ptr, pre_ptr, y_ptr, stride_yk, stride_rk, activation, has_residual,
                      store_preact, HAS_BIAS, HALF)
    else:
        if SPLIT_K:
            _store_partial_cols(acc.T, pid_n * BLOCK_N, split, g, KG, y_row, mask_m, part_ptr,
                                stride_pt, stride_pg, stride_pm, BLOCK_N)
        else:
            _epilogue(acc.T, pid_n * BLOCK_N, g, KG, y_row, r_row, mask_m, b_ptr, res_ptr,
                      pre_ptr, y_ptr, stride_yk, stride_rk, activation, has_residual,
                      store_preact, HAS_BIAS, BLOCK_N)


@triton.jit
def _store_partial_cols(acc, k_first, split, g, KG, rows, mask_m, part_ptr,
                        stride_pt, stride_pg, stride_pm, COLS: tl.constexpr):
    """store_partial of ``acc`` [pixels, COLS channels] whose channels start at ``k_first``
    within group g, pixels at workspace rows ``rows``."""
    offs_k = k_first + tl.arange(0, COLS)
    store_partial(acc, part_ptr, split, g, rows, mask_m, offs_k, offs_k < KG,
                  stride_pt, stride_pg, stride_pm)


@triton.jit
def _epilogue(acc, k_first, g, KG, y_row, r_row, mask_m, b_ptr, res_ptr, pre_ptr, y_ptr,
              stride_yk, stride_rk, activation, has_residual, store_preact,
              HAS_BIAS: tl.constexpr, COLS: tl.constexpr):
    """conv_epilogue of ``acc`` [pixels, COLS channels], whose channels start at ``k_first``
    within group g."""
    offs_k = k_first + tl.arange(0, COLS)
    mask_k = offs_k < KG  # the weight box may run into the next group's filters
    conv_epilogue(acc, g * KG + offs_k, mask_k, y_row, r_row, mask_m,
                  b_ptr, res_ptr, pre_ptr, y_ptr, stride_yk, stride_rk,
                  activation, has_residual, store_preact, HAS_BIAS)
