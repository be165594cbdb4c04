"""Small ``@triton.jit`` helpers shared by the convolution kernels."""
import os
import re

import triton
import triton.language as tl


def _fma_float64() -> bool:
    """Whether float64 products use multiply-adds rather than ``tl.dot``: with triton < 3.7,
    whose ``tl.dot`` on float64 operands fails to compile for sm_90, or when
    FASTCONV_FMA_FLOAT64=1 asks for it (how the tests run that path in the interpreter)."""
    flag = os.environ.get("FASTCONV_FMA_FLOAT64")
    if flag is not None:
        return flag == "1"
    version = tuple(int(p) for p in re.findall(r"\d+", triton.__version__)[:2])
    return version < (3, 7)


# read when the kernels compile (Triton takes constexpr globals into its cache key)
FMA_FLOAT64 = tl.constexpr(_fma_float64())


@triton.jit
def mma(a, b, acc, DOT_IN_FP32: tl.constexpr, ALLOW_TF32: tl.constexpr):
    """acc += a @ b on the tensor cores.

    DOT_IN_FP32 upcasts 16-bit operands first: the launcher sets it only under the Triton
    interpreter, whose ``tl.dot`` multiplies raw bfloat16 bit patterns. On a GPU the 16-bit
    operands go to the tensor cores as they are.

    float64 with :data:`FMA_FLOAT64` (triton < 3.7): a broadcast product summed over K, i.e.
    FMAs, since those versions' ``tl.dot`` on float64 fails to compile for sm_90. Triton 3.8
    keeps ``tl.dot`` (DMMA on sm_80 and sm_90, spill-free in the compile report; the FMA form
    holds a BLOCK_M x BLOCK_K x BLOCK_N product and spills in the 64x32x16 float64 tiles).
    """
    if FMA_FLOAT64 and a.dtype == tl.float64:
        acc += tl.sum(a[:, :, None] * b[None, :, :], axis=1)
    else:
        if DOT_IN_FP32:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        if ALLOW_TF32:
            acc = tl.dot(a, b, acc, input_precision="tf32")
        else:
            acc = tl.dot(a, b, acc, input_precision="ieee")
    return acc


@triton.jit
def cast_index(x, INDEX_64: tl.constexpr):
    """Widen an index vector to int64 when some tensor has >= 2**31 elements.

    tl.cast, not ``x.to``: a size Triton specialised to a constant (N == 1) or a loop counter
    the interpreter keeps as a Python int has no ``.to``."""
    if INDEX_64:
        x = tl.cast(x, tl.int64)
    return x


@triton.jit
def aligned(x, VEC: tl.constexpr):
    """``x``, known to the compiler as a multiple of ``VEC``; the launcher passes VEC > 1 only
    when it is one (``conv2d_launch.channel_vector``).

    Triton marks an integer argument divisible only by 16, so a channels_last tensor of 24,
    116 or 232 channels has pixel strides it knows nothing of, and every load along its
    channels stays one element wide. ``x // VEC * VEC`` equals ``x`` for such an x and proves
    the divisibility to the compiler's alignment analysis, which then vectorises those loads
    VEC elements at a time (at most 16 bytes). With VEC == 1 the code is unchanged."""
    if VEC > 1:
        x = x // VEC * VEC
    return x


@triton.jit
def aligned_pixel_strides(stride_n, stride_h, stride_w, VEC: tl.constexpr):
    """A tensor's (image, row, column) strides through ``aligned``: with unit channel stride,
    the three strides that step from pixel to pixel."""
    return aligned(stride_n, VEC), aligned(stride_h, VEC), aligned(stride_w, VEC)


# activation codes shared with fastconv.ops (ACTIVATIONS there maps names to these)
ACT_NONE = 0
ACT_RELU = 1
ACT_RELU6 = 2
ACT_SILU = 3
ACT_GELU = 4


@triton.jit
def conv_epilogue(acc, offs_k, mask_k, y_row, r_row, mask_m,
                  b_ptr, res_ptr, pre_ptr, y_ptr, stride_yk, stride_rk,
                  activation, has_residual, store_preact, HAS_BIAS: tl.constexpr):
    """y = act(acc + bias + residual), stored in y's layout.

    ``activation``, ``has_residual`` and ``store_preact`` are runtime values, not constexprs:
    the epilogue runs once per tile, so its branches cost nothing measurable, and one compiled
    kernel covers every combination (the compile check then sees the worst case of them all).
    The pre-activation z is stored (``store_preact``) when the backward of silu/gelu needs it.
    """
    if HAS_BIAS:
        bias = tl.load(b_ptr + offs_k, mask=mask_k, other=0.0)
        acc += bias.to(acc.dtype)[None, :]
    mask = mask_m[:, None] & mask_k[None, :]
    if has_residual != 0:
        res = tl.load(res_ptr + r_row[:, None] + offs_k[None, :] * stride_rk, mask=mask, other=0.0)
        acc += res.to(acc.dtype)
    y_offs = y_row[:, None] + offs_k[None, :] * stride_yk
    if store_preact != 0:
        tl.store(pre_ptr + y_offs, acc.to(pre_ptr.dtype.element_ty), mask=mask)
    if activation == 1:    # relu
        acc = tl.where(acc < 0.0, 0.0, acc)  # not tl.maximum: a NaN stays NaN, as in torch
    elif activation == 2:  # relu6
        acc = tl.where(acc < 0.0, 0.0, tl.where(acc > 6.0, 6.0, acc))
    # silu and gelu in the accumulator's dtype: float64 problems keep float64 (a float32
    # sigmoid or erf would cost them half their digits)
    elif activation == 3:  # silu
        acc = acc * tl.sigmoid(acc)
    elif activation == 4:  # gelu, exact (erf) form as torch's default
        acc = 0.5 * acc * (1.0 + tl.erf(acc * 0.7071067811865476))
    tl.store(y_ptr + y_offs, acc.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def pixel_coords(offs_m, H, W):
    """(n, h, w) of flat pixel indices m = (n * H + h) * W + w: the GEMMs' rows."""
    w = offs_m % W
    h = (offs_m // W) % H
    n = offs_m // (H * W)
    return n, h, w


@triton.jit
def dgrad_source_pixel(hp, wp, r, s, dil_h, dil_w, stride_h, stride_w, P, Q, mask_m):
    """(p, q, ok): the output pixel whose tap (r, s) reads input pixel (h, w), given hp, wp =
    h + pad_h, w + pad_w: hp - r*dil_h = p*stride_h, 0 <= p < P (likewise q); ok is False where
    none does, or where ``mask_m`` is."""
    ph = hp - r * dil_h
    pw = wp - s * dil_w
    # ph, pw may be negative: test the sign before trusting // (it truncates)
    p = ph // stride_h
    q = pw // stride_w
    ok = mask_m & (ph >= 0) & (pw >= 0) & (p * stride_h == ph) & (q * stride_w == pw) \
        & (p < P) & (q < Q)
    return p, q, ok


@triton.jit
def phase_taps(offset, dil, stride, R):
    """(first, step, count): the taps r in [0, R) with (offset - r*dil) divisible by ``stride``
    are first, first + step, ... (count of them; none: count 0). With offset = ph + pad, the
    taps through which input pixels of stride phase ph receive (the input gradient)."""
    first = R
    for r in range(0, stride):
        hit = ((offset - r * dil) % stride == 0) & (first == R) & (r < R)
        first = tl.where(hit, r, first)
    # stride / gcd(stride, dil): the smallest t >= 1 with t*dil divisible by stride
    step = stride
    for t in range(1, stride):
        step = tl.where(((t * dil) % stride == 0) & (step == stride), t, step)
    count = tl.where(first < R, tl.cdiv(R - first, step), 0)
    return first, step, count


@triton.jit
def group_tile_ids(num_pid_m, num_pid_n, INDEX_64: tl.constexpr):
    """Flat program id -> (group, row tile, column tile), column tiles fastest.

    One grid axis holds everything because axes 1 and 2 are capped at 65535; column tiles
    fastest so that neighbouring programs share their A tile in L2.
    """
    pid = cast_index(tl.program_id(0), INDEX_64)
    pid_n = pid % num_pid_n
    pid_m = (pid // num_pid_n) % num_pid_m
    g = pid // (num_pid_n * num_pid_m)
    return g, pid_m, pid_n


@triton.jit
def swizzled_tile_ids(pid, num_pid_m, num_pid_n, GROUP_M: tl.constexpr):
    """Flat tile id -> (conv group, m tile, n tile), the TMA kernels' program order. Within a
    conv group, programs walk GROUP_M m tiles down one n-tile column before the next column
    (Triton's matmul tutorial): the tiles of a column and of the GROUP_M rows stay in L2 while
    they are reused. (``group_tile_ids`` above is the pointer kernels' plain order.)"""
    tiles = num_pid_m * num_pid_n
    g = pid // tiles
    pid = pid % tiles
    in_group = GROUP_M * num_pid_n
    first_m = (pid // in_group) * GROUP_M
    group_size = tl.minimum(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % in_group) % group_size
    pid_n = (pid % in_group) // group_size
    return g, pid_m, pid_n


@triton.jit
def split_k_range(total, STEP: tl.constexpr, ITERS_PER_SPLIT, SPLIT_K: tl.constexpr):
    """(split, start, stop): the bounds of ``range(start, stop, STEP)`` over a reduction loop of
    ``range(0, total, STEP)`` that this program runs.

    Without SPLIT_K, all of it (split 0): the loop is the unsplit kernel's. With it, grid axis 1
    picks split s, which runs ITERS_PER_SPLIT steps from step s * ITERS_PER_SPLIT, clipped at
    ``total``; a range past the end is empty and leaves a zero partial sum, which the
    reduction adds like any other.
    """
    if SPLIT_K:
        split = tl.program_id(1)
        start = split * (ITERS_PER_SPLIT * STEP)
        stop = tl.minimum(start + ITERS_PER_SPLIT * STEP, total)
    else:
        split = 0
        start = 0
        stop = total
    return split, start, stop


@triton.jit
def store_partial(acc, part_ptr, split, g, offs_m, mask_m, offs_n, mask_n,
                  stride_pt, stride_pg, stride_pm):
    """Store one split's accumulator tile, unrounded, into the workspace [SPLIT, groups, rows,
    cols] (columns contiguous); the split-K reduction applies the epilogue to the sum."""
    part_ptrs = part_ptr + split * stride_pt + g * stride_pg + offs_m[:, None] * stride_pm \
        + offs_n[None, :]
    tl.store(part_ptrs, acc, mask=mask_m[:, None] & mask_n[None, :])


@triton.jit
def zeros_acc(BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, ACC_FP64: tl.constexpr):
    """The accumulator tile: float64 for float64 problems, float32 otherwise."""
    if ACC_FP64:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float64)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    return acc
