"""Gradient of conv2d w.r.t. its weight, an implicit GEMM whose operands both arrive by TMA.

GEMM view per group g and tap (r, s):
    dW[k, c, r, s] = sum_m dY[m, k] * X[m ; r, s, c]
with m = (n, p, q) an output pixel, k an output channel and c an input channel of the group, and
X[m ; r, s, c] = x[n, p * stride_h - pad_h + r * dil_h, q * stride_w - pad_w + s * dil_w, g*CG + c].

Tiles. A program owns BLOCK_M input channels c x BLOCK_N output channels k of one tap (r, s) of
one group, and reduces over output-pixel boxes [BN_IMG images, BH rows, BW columns]: BLOCK_K =
BN_IMG * BH * BW pixels a step. Per step it reads two TMA boxes, both of rank 4:
  dY: dy as [N, P, Q, K], box [BN_IMG, BH, BW, BLOCK_N] at (n0, p0, q0, g * KG + k0);
  X:  x's stride phase of tap (r, s) as [N, H', W', C], box [BN_IMG, BH, BW, BLOCK_M] at
      (n0, p0 + floor(t_h / STRIDE_H), q0 + floor(t_w / STRIDE_W), g * CG + c0), t = r*dil - pad;
each reshaped to [BLOCK_K, channels], rows in the same (n, p, q) order. TMA fills every
out-of-bounds element with zeros: x's fill is the convolution's padding; a dY box past N, P or Q
reads zeros there, so those pixels add nothing (the X pixels they meet may be real). Channel
boxes that run past the group (KG or CG not a multiple of the block) read the next group's
channels, or zeros past K and C: those rows and columns of the accumulator are not written.

Orientation. Both boxes reach tl.dot through a reshape, and Triton keeps a reshaped operand in
shared memory for wgmma only as the B operand (see conv2d_fprop_tma): A is copied into
registers first (a local_load, ldmatrix.trans for these channel-contiguous boxes; wgmma then
reads A from registers). So one operand goes through registers whichever way round. Compiled for
sm_90, acc[k, c] = dY^T X and acc[c, k] = X^T dY give the same main loop (B from shared
memory, A through registers, no spills, the same TMA copies); they differ in which channels
make wgmma's N. The kernel takes acc[c, k]: A = X^T (BLOCK_M input channels), B = dY (BLOCK_N
output channels, wgmma's N, up to 256). A layer with few input channels and many output channels (ResNet-50's 64 -> 256
1x1) then runs m64n256 rather than m64n64 instructions, the wide shape wgmma is fastest at.
The price is the epilogue's: the gradient [K, CG, R, S] is stored along k, CG*R*S elements
apart; it is a weight-sized tile written once per program after a reduction over every pixel.

Stride. A box steps one pixel at a time, so for stride > 1 x is read through stride-phase views
(as in conv2d_fprop_tma): tap row h = STRIDE_H * p + t lies in phase t mod STRIDE_H at phase
row p + floor(t / STRIDE_H). A program's tap is fixed, so it reads one phase; the descriptor is
picked by constexpr branches over the phases, one pipelined loop each, of which the program's
own phase runs its steps and the others none.

Split-K: grid axis 1 is the split index; range ``split`` sums ITERS_PER_SPLIT pixel steps from
step split * ITERS_PER_SPLIT (clipped at the last; a range past the end sums nothing and stores
zeros). Unsplit (SPLIT_K False) the program stores the gradient itself in the weight's dtype;
split, its float32 partial sum into slice ``split`` of the workspace [SPLIT, K, CG, R, S],
which the caller adds along its first axis in a fixed order (bitwise reproducible, no atomics).

Program order (grid axis 0): c tiles fastest, then k tiles, then taps, then groups: programs
running together read the same dY boxes (every c tile of a k tile) and X boxes of neighbouring
taps, which overlap, while they are in L2.
"""
import triton
import triton.language as tl

from ._common import mma


@triton.jit
def conv2d_wgrad_tma_kernel(
    # tensor descriptors: x_desc<ph><pw>, x's stride phase (ph, pw) as [N, H', W', C] with unit
    # channel stride (a phase the stride lacks repeats phase 00, never read); dy_desc, dy as
    # [N, P, Q, K] with unit channel stride
    x_desc00, x_desc01, x_desc10, x_desc11, dy_desc,
    # pointer: the gradient [K, CG, R, S] (unsplit) or the float32 workspace [SPLIT, K, CG, R, S]
    part_ptr,
    # sizes (ITERS_PER_SPLIT: pixel steps of BLOCK_K pixels per split range)
    N, H, W, P, Q, R, S, CG, KG, ITERS_PER_SPLIT,
    # convolution parameters
    pad_h, pad_w, dil_h, dil_w,
    # strides (in elements) of part_ptr's tensor: split (0 unsplit), k, c, r, s
    stride_pt, stride_pk, stride_pc, stride_pr, stride_ps,
    # meta-parameters
    SPLIT_K: tl.constexpr, DOT_IN_FP32: tl.constexpr,
    STRIDE_H: tl.constexpr, STRIDE_W: tl.constexpr,
    BN_IMG: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    BLOCK_K: tl.constexpr = BN_IMG * BH * BW

    # -- which tile: grid axis 0 -> (group, tap, k tile, c tile), c tiles fastest
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(CG, BLOCK_M)
    num_pid_n = tl.cdiv(KG, BLOCK_N)
    pid_m = pid % num_pid_m
    pid_n = (pid // num_pid_m) % num_pid_n
    tap = (pid // (num_pid_n * num_pid_m)) % (R * S)
    g = pid // (num_pid_n * num_pid_m * R * S)
    r = tap // S
    s = tap % S
    c_first = g * CG + pid_m * BLOCK_M
    k_first = g * KG + pid_n * BLOCK_N

    # -- the tap's stride phase and its row / column offset within that phase; every operand
    # of % is non-negative (t + STRIDE * pad has t's residue), so that it means the same in
    # the interpreter (floor) and on a GPU (truncation); (t - phase) / STRIDE is exact
    t_h = r * dil_h - pad_h
    t_w = s * dil_w - pad_w
    phase_h = (t_h + STRIDE_H * pad_h) % STRIDE_H
    phase_w = (t_w + STRIDE_W * pad_w) % STRIDE_W
    dh = (t_h - phase_h) // STRIDE_H
    dw = (t_w - phase_w) // STRIDE_W

    # -- this split's range of pixel steps: steps walk (image box, row box, column box),
    # columns fastest, so that a range covers neighbouring pixels
    tiles_q = tl.cdiv(Q, BW)
    tiles_p = tl.cdiv(P, BH)
    steps = tl.cdiv(N, BN_IMG) * tiles_p * tiles_q
    if SPLIT_K:
        split = tl.program_id(1)
        first = split * ITERS_PER_SPLIT
        count = tl.maximum(tl.minimum(steps - first, ITERS_PER_SPLIT), 0)
    else:
        split = 0
        first = 0
        count = steps

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)

    # -- reduction: only the tap's own phase runs its steps (constexpr descriptor per loop)
    for ph in tl.static_range(STRIDE_H):
        for pw in tl.static_range(STRIDE_W):
            if ph == 0 and pw == 0:
                x_desc = x_desc00
            elif ph == 0:
                x_desc = x_desc01
            elif pw == 0:
                x_desc = x_desc10
            else:
                x_desc = x_desc11
            mine = (phase_h == ph) & (phase_w == pw)
            if ph > 0:  # a phase without pixels (H <= ph) has a stand-in descriptor: read none
                mine = mine & (H > ph)
            if pw > 0:
                mine = mine & (W > pw)
            for it in tl.range(0, tl.where(mine, count, 0)):
                step = first + it
                n0 = step // (tiles_p * tiles_q) * BN_IMG
                p0 = (step // tiles_q) % tiles_p * BH
                q0 = step % tiles_q * BW
                dy_tile = dy_desc.load([n0, p0, q0, k_first]).reshape(BLOCK_K, BLOCK_N)
                x_tile = x_desc.load([n0, p0 + dh, q0 + dw, c_first]).reshape(BLOCK_K, BLOCK_M)
                # dW^T[c, k] += X^T dY: dY's reshaped box as the B operand stays in shared memory
                acc = mma(x_tile.T, dy_tile, acc, DOT_IN_FP32, False)

    # -- epilogue: the tile's channels within the group, the gradient's dtype or float32
    offs_c = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_k = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (offs_c < CG)[:, None] & (offs_k < KG)[None, :]
    part_ptrs = part_ptr + split * stride_pt + r * stride_pr + s * stride_ps \
        + (offs_c * stride_pc)[:, None] + ((g * KG + offs_k) * stride_pk)[None, :]
    tl.store(part_ptrs, acc.to(part_ptr.dtype.element_ty), mask=mask)
