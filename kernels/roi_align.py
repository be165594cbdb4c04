"""RoIAlign forward and backward, with torchvision's exact semantics (DESIGN.md).

Each output bin averages grid_h x grid_w bilinear samples of the input. The forward runs one
program per (RoI, tile of bins, tile of channels): all bins of one RoI share its sampling grid, so
the loops over samples have scalar bounds and the tile [BLOCK_BINS, BLOCK_C] is gathered once
per sample. The backward scatters each sample's four weighted gradients back:

* ``roi_align_bwd_kernel`` (default): the forward's grid, scattering with atomic adds. Fast, but
  the order in which programs add into one input element varies from run to run.
* ``roi_align_bwd_ordered_kernel`` (deterministic algorithms): one program per (image, tile of
  channels, band of rows) walks every RoI of its image, bin by bin and sample by sample, in a
  fixed order, and adds what falls in its band. A program owns its slice of the gradient, so it
  adds with plain loads and stores (no atomics), in program order, and the sum is the same bit
  for bit on every run, whatever the bands (each element gets its adds in the same order).

The geometry is computed in float32 (float64 for float64 input), as torchvision computes it in
the input type; divisions whose results feed ``ceil`` use round-to-nearest division, because
Triton's default float32 division is approximate and ``ceil`` of a ratio that should be an
exact integer must not move to the next one.
"""
import triton
import triton.language as tl

from ._common import aligned, aligned_pixel_strides, cast_index
from ._roi_common import div_rn, load_roi, roi_split_tile_ids, split_rows


@triton.jit
def _roi_align_grid(x1, y1, x2, y2, scale, pooled_h, pooled_w, sampling_ratio,
                    ALIGNED: tl.constexpr):
    """-> start_h, start_w, bin_h, bin_w, grid_h, grid_w, count (samples averaged)."""
    offset = 0.5 if ALIGNED else 0.0
    start_w = x1 * scale - offset
    start_h = y1 * scale - offset
    roi_w = (x2 * scale - offset) - start_w
    roi_h = (y2 * scale - offset) - start_h
    if not ALIGNED:
        # legacy mode: at least one pixel (a NaN size stays NaN, as in torchvision)
        roi_w = tl.where(roi_w < 1.0, 1.0, roi_w)
        roi_h = tl.where(roi_h < 1.0, 1.0, roi_h)
    # tl.cast, not .to(): an argument equal to 1 arrives as a constexpr on a GPU
    bin_h = div_rn(roi_h, tl.cast(pooled_h, roi_h.dtype))
    bin_w = div_rn(roi_w, tl.cast(pooled_w, roi_w.dtype))
    # adaptive: ceil(roi / pooled); a NaN, infinite or negative ratio samples nothing (count
    # stays 1, the bin is 0) instead of turning into an undefined integer
    ch = tl.ceil(bin_h)
    cw = tl.ceil(bin_w)
    adaptive_h = tl.where((ch > 0.0) & (ch < 1073741824.0), ch, 0.0).to(tl.int32)
    adaptive_w = tl.where((cw > 0.0) & (cw < 1073741824.0), cw, 0.0).to(tl.int32)
    fixed = tl.cast(sampling_ratio, tl.int32)
    grid_h = tl.where(fixed > 0, fixed, adaptive_h)
    grid_w = tl.where(fixed > 0, fixed, adaptive_w)
    count = tl.maximum(grid_h * grid_w, 1)
    return start_h, start_w, bin_h, bin_w, grid_h, grid_w, count


@triton.jit
def _bilinear_axis(y, size):
    """One axis of torchvision's bilinear_interpolate: (low, high, weight of high, of low, ok).

    A sample beyond one pixel outside the image (or NaN) contributes nothing; otherwise it is
    clamped at 0, and at the last pixel both neighbours are that pixel.
    """
    ok = (y >= -1.0) & (y <= size)
    # out-of-range and NaN samples become 0 here so that the integer conversion is defined
    y = tl.maximum(tl.where(ok, y, 0.0), 0.0)
    low = y.to(tl.int32)  # y >= 0: truncation is floor
    at_edge = low >= size - 1
    low = tl.where(at_edge, size - 1, low)
    high = tl.where(at_edge, size - 1, low + 1)
    y = tl.where(at_edge, low.to(y.dtype), y)
    frac = y - low.to(y.dtype)
    return low, high, frac, 1.0 - frac, ok


@triton.jit
def _tile_samples(rois_ptr, scale_ptr, k, stride_rk, stride_rc, N, ph, pw, pooled_h, pooled_w,
                  sampling_ratio, ALIGNED: tl.constexpr, COMPUTE: tl.constexpr,
                  INDEX_64: tl.constexpr):
    """RoI ``k``'s batch index (and whether it is in range), the first sample of each bin
    (ph, pw), the step between samples, the grid and the sample count: what the forward and
    the atomic backward both walk."""
    scale = tl.load(scale_ptr)
    n, in_range, x1, y1, x2, y2 = load_roi(rois_ptr, k, stride_rk, stride_rc, N,
                                            COMPUTE, INDEX_64)
    start_h, start_w, bin_h, bin_w, grid_h, grid_w, count = _roi_align_grid(
        x1, y1, x2, y2, scale, pooled_h, pooled_w, sampling_ratio, ALIGNED)
    # an RoI outside the batch samples nothing: the zeros it stores cost no loads, so callers
    # may pass RoIs to skip (MultiScaleRoIAlign gives each level every box, the others' as -1)
    grid_h = tl.where(in_range, grid_h, 0)
    grid_w = tl.where(in_range, grid_w, 0)
    y_base = start_h + ph.to(COMPUTE) * bin_h
    x_base = start_w + pw.to(COMPUTE) * bin_w
    step_h = bin_h / tl.maximum(grid_h, 1).to(COMPUTE)
    step_w = bin_w / tl.maximum(grid_w, 1).to(COMPUTE)
    return n, in_range, y_base, x_base, step_h, step_w, grid_h, grid_w, count


@triton.jit
def roi_align_fwd_kernel(
    # pointers
    x_ptr, rois_ptr, scale_ptr, y_ptr,
    # sizes
    N, C, H, W, pooled_h, pooled_w, sampling_ratio, num_splits,
    # strides
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_rk, stride_rc,
    stride_ys, stride_yk, stride_yc, stride_yb,
    # meta-parameters
    ALIGNED: tl.constexpr, COMPUTE_FP64: tl.constexpr, INDEX_64: tl.constexpr,
    VEC: tl.constexpr, BLOCK_BINS: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """y[k, c, ph, pw] = mean over the bin's samples of bilinear(x[n_k, c], y, x).

    Bin b = ph * pooled_w + pw of RoI k, channel c, split s sits at y_ptr + s * stride_ys +
    k * stride_yk + c * stride_yc + b * stride_yb: the output [K, C, bins] (one split), or the
    split workspace [splits, K * bins, C] of partial means.
    """
    COMPUTE: tl.constexpr = tl.float64 if COMPUTE_FP64 else tl.float32
    C = aligned(C, VEC)  # a channel mask constant over VEC channels: vector loads
    # ---- which RoI, bins, channels and share of the sample rows
    k, split, offs_bin, offs_c, mask_bin, mask_c = roi_split_tile_ids(
        C, pooled_h, pooled_w, num_splits, BLOCK_BINS, BLOCK_C)
    ph = offs_bin // pooled_w
    pw = offs_bin % pooled_w

    # ---- the RoI's sampling grid
    n, in_range, y_base, x_base, step_h, step_w, grid_h, grid_w, count = _tile_samples(
        rois_ptr, scale_ptr, k, stride_rk, stride_rc, N, ph, pw, pooled_h, pooled_w,
        sampling_ratio, ALIGNED, COMPUTE, INDEX_64)
    if INDEX_64:
        # 64-bit offsets fill the registers already: the launcher does not split these
        row_begin = 0
        row_end = grid_h
    else:
        row_begin, row_end = split_rows(grid_h, split, num_splits)

    # channels_last: unit channel stride and pixel strides VEC-aligned (the launcher's word)
    stride_xn, stride_xh, stride_xw = aligned_pixel_strides(stride_xn, stride_xh, stride_xw, VEC)
    x_img = x_ptr + cast_index(n, INDEX_64) * stride_xn
    c_offs = cast_index(offs_c, INDEX_64)[None, :] * stride_xc
    mask = tl.where(in_range, mask_bin, False)[:, None] & mask_c[None, :]

    # ---- accumulate the samples
    acc = tl.zeros([BLOCK_BINS, BLOCK_C], dtype=COMPUTE)
    for iy in range(row_begin, row_end):
        ys = y_base + (iy + 0.5) * step_h
        y_lo, y_hi, ly, hy, ok_y = _bilinear_axis(ys, H)
        row_lo = cast_index(y_lo, INDEX_64) * stride_xh
        row_hi = cast_index(y_hi, INDEX_64) * stride_xh
        for ix in range(0, grid_w):
            xs = x_base + (ix + 0.5) * step_w
            x_lo, x_hi, lx, hx, ok_x = _bilinear_axis(xs, W)
            col_lo = cast_index(x_lo, INDEX_64) * stride_xw
            col_hi = cast_index(x_hi, INDEX_64) * stride_xw
            m = mask & (ok_y & ok_x)[:, None]
            v1 = tl.load(x_img + (row_lo + col_lo)[:, None] + c_offs, mask=m, other=0.0)
            v2 = tl.load(x_img + (row_lo + col_hi)[:, None] + c_offs, mask=m, other=0.0)
            v3 = tl.load(x_img + (row_hi + col_lo)[:, None] + c_offs, mask=m, other=0.0)
            v4 = tl.load(x_img + (row_hi + col_hi)[:, None] + c_offs, mask=m, other=0.0)
            acc += ((hy * hx)[:, None] * v1.to(COMPUTE) + (hy * lx)[:, None] * v2.to(COMPUTE)
                    + (ly * hx)[:, None] * v3.to(COMPUTE) + (ly * lx)[:, None] * v4.to(COMPUTE))
    acc = acc / count.to(COMPUTE)

    # ---- store (every bin of the tile, zeros for an RoI outside the batch)
    if INDEX_64:  # never split: the output itself, bins contiguous
        y_offs = (cast_index(k, INDEX_64) * stride_yk + offs_bin[:, None]
                  + cast_index(offs_c, INDEX_64)[None, :] * stride_yc)
    else:
        y_offs = (split * stride_ys + k * stride_yk + offs_bin[:, None] * stride_yb
                  + offs_c[None, :] * stride_yc)
    tl.store(y_ptr + y_offs, acc.to(y_ptr.dtype.element_ty),
             mask=mask_bin[:, None] & mask_c[None, :])


@triton.jit
def _merge_tap(ia, wa, va, ib, wb, vb):
    """Tap b joins tap a where both exist on the same pixel row (column): a's weight takes b's
    and b is dropped."""
    same = va & vb & (ia == ib)
    return tl.where(same, wa + wb, wa), vb & ~same


@triton.jit
def _pair_taps(base, step, i, has_second, size):
    """The taps along one axis of samples ``i`` and ``i + 1`` (the second only where
    ``has_second``): four (pixel, weight, exists) with coinciding pixels merged into the first
    of them, so no two existing taps share a pixel."""
    a_lo, a_hi, a_fh, a_fl, a_ok = _bilinear_axis(base + (i + 0.5) * step, size)
    b_lo, b_hi, b_fh, b_fl, b_ok = _bilinear_axis(base + (i + 1.5) * step, size)
    b_ok = b_ok & has_second
    w0 = a_fl
    w1 = a_fh
    w2 = b_fl
    w3 = b_fh
    v0 = a_ok
    v1 = a_ok
    v2 = b_ok
    v3 = b_ok
    # at the last pixel both taps of a sample are that pixel (the second weighs 0)
    w0, v1 = _merge_tap(a_lo, w0, v0, a_hi, w1, v1)
    w2, v3 = _merge_tap(b_lo, w2, v2, b_hi, w3, v3)
    # the second sample's taps on the first's pixels (a bin under two pixels)
    w0, v2 = _merge_tap(a_lo, w0, v0, b_lo, w2, v2)
    w1, v2 = _merge_tap(a_hi, w1, v1, b_lo, w2, v2)
    w0, v3 = _merge_tap(a_lo, w0, v0, b_hi, w3, v3)
    w1, v3 = _merge_tap(a_hi, w1, v1, b_hi, w3, v3)
    return a_lo, a_hi, b_lo, b_hi, w0, w1, w2, w3, v0, v1, v2, v3


@triton.jit
def roi_align_bwd_kernel(
    # pointers
    dy_ptr, rois_ptr, scale_ptr, dx_ptr,
    # sizes
    N, C, H, W, pooled_h, pooled_w, sampling_ratio, num_splits,
    # strides
    stride_dyk, stride_dyc, stride_dyh, stride_dyw,
    stride_rk, stride_rc,
    stride_dxn, stride_dxc, stride_dxh, stride_dxw,
    # meta-parameters
    ALIGNED: tl.constexpr, COMPUTE_FP64: tl.constexpr, INDEX_64: tl.constexpr,
    VEC: tl.constexpr, BLOCK_BINS: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """dx[n_k, c] += dy[k, c, ph, pw] / count * bilinear weights, with atomic adds, one per
    distinct pixel of each 2x2 block of a bin's samples.

    dx is the float32 (float64) accumulation buffer, zero-filled by the launcher.
    """
    COMPUTE: tl.constexpr = tl.float64 if COMPUTE_FP64 else tl.float32
    C = aligned(C, VEC)  # a channel mask constant over VEC channels: vector loads
    # ---- which RoI, bins, channels and share of the sample rows
    k, split, offs_bin, offs_c, mask_bin, mask_c = roi_split_tile_ids(
        C, pooled_h, pooled_w, num_splits, BLOCK_BINS, BLOCK_C)
    ph = offs_bin // pooled_w
    pw = offs_bin % pooled_w

    # ---- the RoI's sampling grid
    n, in_range, y_base, x_base, step_h, step_w, grid_h, grid_w, count = _tile_samples(
        rois_ptr, scale_ptr, k, stride_rk, stride_rc, N, ph, pw, pooled_h, pooled_w,
        sampling_ratio, ALIGNED, COMPUTE, INDEX_64)
    if INDEX_64:
        # 64-bit offsets fill the registers already: the launcher does not split these
        row_begin = 0
        row_end = grid_h
    else:
        row_begin, row_end = split_rows(grid_h, split, num_splits)

    # ---- this tile's output gradient, already divided by the sample count
    mask = tl.where(in_range, mask_bin, False)[:, None] & mask_c[None, :]
    dy_offs = (cast_index(k, INDEX_64) * stride_dyk
               + cast_index(ph, INDEX_64)[:, None] * stride_dyh
               + cast_index(pw, INDEX_64)[:, None] * stride_dyw
               + cast_index(offs_c, INDEX_64)[None, :] * stride_dyc)
    g = tl.load(dy_ptr + dy_offs, mask=mask, other=0.0).to(COMPUTE) / count.to(COMPUTE)

    # channels_last: unit channel stride and pixel strides VEC-aligned (the launcher's word)
    stride_dxn, stride_dxh, stride_dxw = aligned_pixel_strides(stride_dxn, stride_dxh,
                                                               stride_dxw, VEC)
    dx_c = (dx_ptr + cast_index(n, INDEX_64) * stride_dxn
            + cast_index(offs_c, INDEX_64)[None, :] * stride_dxc)

    if COMPUTE_FP64 or INDEX_64:
        # the merged taps' weights (float64) and offsets (64-bit) spilled there: each sample
        # adds its four taps (float64 is a reference type, 64-bit offsets a rare size)
        for iy in range(row_begin, row_end):
            y_lo, y_hi, ly, hy, ok_y = _bilinear_axis(y_base + (iy + 0.5) * step_h, H)
            row_lo = cast_index(y_lo, INDEX_64) * stride_dxh
            row_hi = cast_index(y_hi, INDEX_64) * stride_dxh
            for ix in range(0, grid_w):
                x_lo, x_hi, lx, hx, ok_x = _bilinear_axis(x_base + (ix + 0.5) * step_w, W)
                col_lo = cast_index(x_lo, INDEX_64) * stride_dxw
                col_hi = cast_index(x_hi, INDEX_64) * stride_dxw
                m = mask & (ok_y & ok_x)[:, None]
                tl.atomic_add(dx_c + (row_lo + col_lo)[:, None], g * (hy * hx)[:, None],
                              mask=m, sem="relaxed")
                tl.atomic_add(dx_c + (row_lo + col_hi)[:, None], g * (hy * lx)[:, None],
                              mask=m, sem="relaxed")
                tl.atomic_add(dx_c + (row_hi + col_lo)[:, None], g * (ly * hx)[:, None],
                              mask=m, sem="relaxed")
                tl.atomic_add(dx_c + (row_hi + col_hi)[:, None], g * (ly * lx)[:, None],
                              mask=m, sem="relaxed")
        return

    # ---- scatter, a 2x2 block of samples at a time
    for iy in range(row_begin, row_end, 2):
        has_second = iy + 1 < row_end
        r0, r1, r2, r3, wr0, wr1, wr2, wr3, vr0, vr1, vr2, vr3 = _pair_taps(
            y_base, step_h, iy, has_second, H)
        # tap rows of the block: two samples' four, or one's two
        tap_rows = tl.where(has_second, 4, 2)
        for ix in range(0, grid_w, 2):
            c0, c1, c2, c3, wc0, wc1, wc2, wc3, vc0, vc1, vc2, vc3 = _pair_taps(
                x_base, step_w, ix, ix + 1 < grid_w, W)
            c0 = cast_index(c0, INDEX_64) * stride_dxw
            c1 = cast_index(c1, INDEX_64) * stride_dxw
            c2 = cast_index(c2, INDEX_64) * stride_dxw
            c3 = cast_index(c3, INDEX_64) * stride_dxw
            # a loop, not four unrolled rows: 16 atomics in flight at once held every address
            # in registers and spilled
            for t in range(0, tap_rows):
                r = tl.where(t == 0, r0, tl.where(t == 1, r1, tl.where(t == 2, r2, r3)))
                wr = tl.where(t == 0, wr0, tl.where(t == 1, wr1, tl.where(t == 2, wr2, wr3)))
                vr = tl.where(t == 0, vr0, tl.where(t == 1, vr1, tl.where(t == 2, vr2, vr3)))
                row = cast_index(r, INDEX_64) * stride_dxh
                m = mask & vr[:, None]
                tl.atomic_add(dx_c + (row + c0)[:, None], g * (wr * wc0)[:, None],
                              mask=m & vc0[:, None], sem="relaxed")
                tl.atomic_add(dx_c + (row + c1)[:, None], g * (wr * wc1)[:, None],
                              mask=m & vc1[:, None], sem="relaxed")
                tl.atomic_add(dx_c + (row + c2)[:, None], g * (wr * wc2)[:, None],
                              mask=m & vc2[:, None], sem="relaxed")
                tl.atomic_add(dx_c + (row + c3)[:, None], g * (wr * wc3)[:, None],
                              mask=m & vc3[:, None], sem="relaxed")


@triton.jit
def roi_align_bwd_ordered_kernel(
    # pointers
    dy_ptr, rois_ptr, scale_ptr, dx_ptr,
    # sizes
    N, C, H, W, K, pooled_h, pooled_w, sampling_ratio, band_rows, num_bands,
    # strides
    stride_dyk, stride_dyc, stride_dyh, stride_dyw,
    stride_rk, stride_rc,
    stride_dxn, stride_dxc, stride_dxh, stride_dxw,
    # meta-parameters
    ALIGNED: tl.constexpr, COMPUTE_FP64: tl.constexpr, INDEX_64: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """The deterministic backward: program (image, channel tile, band of ``band_rows`` rows)
    adds, in RoI, bin and sample order, everything its RoIs scatter into its slice of dx. No
    other program writes there, so each add is a plain load and store (no atomics), in program
    order. The bands only divide the work: a program skips RoIs and sample rows that cannot
    reach its rows, and masks the taps that fall outside them."""
    COMPUTE: tl.constexpr = tl.float64 if COMPUTE_FP64 else tl.float32
    pid = tl.program_id(0)
    num_c = tl.cdiv(C, BLOCK_C)
    band = pid % num_bands
    img = pid // num_bands // num_c
    offs_c = (pid // num_bands % num_c) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    band_lo = band * band_rows
    band_hi = band_lo + band_rows
    scale = tl.load(scale_ptr)
    dx_img = dx_ptr + cast_index(img, INDEX_64) * stride_dxn
    dx_c = dx_img + cast_index(offs_c, INDEX_64) * stride_dxc
    for k in range(0, K):
        n, in_range, x1, y1, x2, y2 = load_roi(rois_ptr, k, stride_rk, stride_rc, N,
                                                COMPUTE, INDEX_64)
        start_h, start_w, bin_h, bin_w, grid_h, grid_w, count = _roi_align_grid(
            x1, y1, x2, y2, scale, pooled_h, pooled_w, sampling_ratio, ALIGNED)
        # the rows its samples can touch lie within a row of the samples' span, from start_h
        # to start_h + roi height (downwards for an inverted box, whose height is negative;
        # taps are floor(y) and floor(y) + 1, clamped); a NaN bound skips nothing
        end_h = start_h + pooled_h * bin_h
        above = tl.maximum(start_h, end_h) + 1.0 < band_lo.to(COMPUTE)
        below = tl.minimum(start_h, end_h) - 1.0 >= band_hi.to(COMPUTE)
        if in_range & (n == img) & ~(above | below):
            step_h = bin_h / tl.maximum(grid_h, 1).to(COMPUTE)
            step_w = bin_w / tl.maximum(grid_w, 1).to(COMPUTE)
            # one division per RoI: a float64 division is long enough in registers that one
            # per bin spilled on sm_80
            inv_count = 1.0 / count.to(COMPUTE)
            dy_k = (dy_ptr + cast_index(k, INDEX_64) * stride_dyk
                    + cast_index(offs_c, INDEX_64) * stride_dyc)
            for ph in range(0, pooled_h):
                for pw in range(0, pooled_w):
                    g = tl.load(dy_k + ph * stride_dyh + pw * stride_dyw, mask=mask_c,
                                other=0.0).to(COMPUTE) * inv_count
                    for iy in range(0, grid_h):
                        ys = start_h + ph * bin_h + (iy + 0.5) * step_h
                        y_lo, y_hi, ly, hy, ok_y = _bilinear_axis(ys, H)
                        # one sample's taps are the same for every channel: scalar offsets
                        row_lo = cast_index(y_lo, INDEX_64) * stride_dxh
                        row_hi = cast_index(y_hi, INDEX_64) * stride_dxh
                        in_lo = (y_lo >= band_lo) & (y_lo < band_hi)
                        in_hi = (y_hi >= band_lo) & (y_hi < band_hi)
                        for ix in range(0, tl.where(in_lo | in_hi, grid_w, 0)):
                            xs = start_w + pw * bin_w + (ix + 0.5) * step_w
                            x_lo, x_hi, lx, hx, ok_x = _bilinear_axis(xs, W)
                            col_lo = cast_index(x_lo, INDEX_64) * stride_dxw
                            col_hi = cast_index(x_hi, INDEX_64) * stride_dxw
                            w1 = g * (hy * hx)
                            w2 = g * (hy * lx)
                            w3 = g * (ly * hx)
                            w4 = g * (ly * lx)
                            # at the last row (column) both taps are that row and the second
                            # weighs 0: its share (0, or NaN for a non-finite gradient, as in
                            # torchvision) joins the first, so the four elements differ
                            same_x = x_hi == x_lo
                            same_y = y_hi == y_lo
                            w1 = tl.where(same_x, w1 + w2, w1)
                            w3 = tl.where(same_x, w3 + w4, w3)
                            w1 = tl.where(same_y, w1 + w3, w1)
                            w2 = tl.where(same_y, w2 + w4, w2)
                            m = tl.where(ok_y & ok_x, mask_c, False)
                            m_x = tl.where(same_x, False, m)
                            m_y = tl.where(same_y, False, m)
                            m_xy = tl.where(same_x, False, m_y)
                            # the taps in this program's band of rows
                            m = tl.where(in_lo, m, False)
                            m_x = tl.where(in_lo, m_x, False)
                            m_y = tl.where(in_hi, m_y, False)
                            m_xy = tl.where(in_hi, m_xy, False)
                            p1 = dx_c + (row_lo + col_lo)
                            p2 = dx_c + (row_lo + col_hi)
                            p3 = dx_c + (row_hi + col_lo)
                            p4 = dx_c + (row_hi + col_hi)
                            v1 = tl.load(p1, mask=m, other=0.0)
                            v2 = tl.load(p2, mask=m_x, other=0.0)
                            v3 = tl.load(p3, mask=m_y, other=0.0)
                            v4 = tl.load(p4, mask=m_xy, other=0.0)
                            tl.store(p1, v1 + w1, mask=m)
                            tl.store(p2, v2 + w2, mask=m_x)
                            tl.store(p3, v3 + w3, mask=m_y)
                            tl.store(p4, v4 + w4, mask=m_xy)
