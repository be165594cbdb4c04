"""RoIPool forward and backward, with torchvision's exact semantics (DESIGN.md).

Each output bin is the maximum of the input over an integer window of the RoI; the forward also
stores where it was (``argmax`` = h * W + w, -1 for an empty bin), and the backward routes each
bin's gradient to that element:

* ``roi_pool_bwd_kernel`` (default): one program per (RoI, tile of bins, tile of channels),
  adding with atomics (several bins may share an argmax).
* ``roi_pool_bwd_ordered_kernel`` (deterministic algorithms): one program per (image, tile of
  channels, band of rows) adds its RoIs' gradients in RoI and bin order, the only writer of its
  slice, with plain loads and stores (no atomics).
"""
import triton
import triton.language as tl

from ._common import aligned, aligned_pixel_strides, cast_index
from ._roi_common import div_rn, load_roi, roi_tile_ids

# torchvision starts the maximum of a non-empty bin at -FLT_MAX
FLT_MAX = tl.constexpr(3.4028234663852886e38)
# |coordinate * scale| below 2**29: the rounded coordinates and RoI sizes fit in int32
COORD_LIMIT = tl.constexpr(536870912.0)


@triton.jit
def _rounded(v):
    """round-half-away-from-zero (std::round) of a value below COORD_LIMIT, as int32."""
    return tl.where(v < 0.0, -tl.floor(-v + 0.5), tl.floor(v + 0.5)).to(tl.int32)


@triton.jit
def _bin_range(p, roi_start, roi_size, pooled, size, COMPUTE: tl.constexpr):
    """[start, end) of bin ``p`` along one axis, clamped to [0, size)."""
    bin_size = div_rn(tl.cast(roi_size, COMPUTE), tl.cast(pooled, COMPUTE))
    start = tl.floor(p.to(COMPUTE) * bin_size).to(tl.int32) + roi_start
    end = tl.ceil((p + 1).to(COMPUTE) * bin_size).to(tl.int32) + roi_start
    start = tl.minimum(tl.maximum(start, 0), size)
    end = tl.minimum(tl.maximum(end, 0), size)
    return start, end


@triton.jit
def _roi_pool_windows(x1, y1, x2, y2, scale, ph, pw, pooled_h, pooled_w, H, W,
                      COMPUTE: tl.constexpr):
    """-> hstart, hend, wstart, wend of the bins (ph, pw), whether the RoI is usable, and the
    most rows and columns a window of it can span (ceil(roi / pooled) + 1, at most the image).

    A coordinate that is NaN, infinite or beyond +-2**29 pixels makes every bin empty: it has
    no int32 value, and torchvision's conversion of such a coordinate (INT_MIN on x86) clamps
    every window to [0, 0).
    """
    x1 = x1 * scale
    y1 = y1 * scale
    x2 = x2 * scale
    y2 = y2 * scale
    usable = ((tl.abs(x1) < COORD_LIMIT) & (tl.abs(y1) < COORD_LIMIT)
              & (tl.abs(x2) < COORD_LIMIT) & (tl.abs(y2) < COORD_LIMIT))
    roi_start_w = _rounded(tl.where(usable, x1, 0.0))
    roi_start_h = _rounded(tl.where(usable, y1, 0.0))
    roi_w = tl.maximum(_rounded(tl.where(usable, x2, 0.0)) - roi_start_w + 1, 1)
    roi_h = tl.maximum(_rounded(tl.where(usable, y2, 0.0)) - roi_start_h + 1, 1)
    hstart, hend = _bin_range(ph, roi_start_h, roi_h, pooled_h, H, COMPUTE)
    wstart, wend = _bin_range(pw, roi_start_w, roi_w, pooled_w, W, COMPUTE)
    span_h = tl.minimum(roi_h // pooled_h + 2, H)
    span_w = tl.minimum(roi_w // pooled_w + 2, W)
    return hstart, hend, wstart, wend, usable, span_h, span_w


@triton.jit
def roi_pool_fwd_kernel(
    # pointers
    x_ptr, rois_ptr, scale_ptr, y_ptr, argmax_ptr,
    # sizes
    N, C, H, W, pooled_h, pooled_w,
    # strides
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_rk, stride_rc,
    stride_yk, stride_yc,
    # meta-parameters
    COMPUTE_FP64: tl.constexpr, INDEX_64: tl.constexpr,
    VEC: tl.constexpr, BLOCK_BINS: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """y[k, c, ph, pw] = max of x[n_k, c] over the bin's window; argmax alongside.

    y and argmax are contiguous per RoI and channel, with the same strides. In channels_last
    each window element is a vector of channels, VEC elements a load (the launcher vouches).
    """
    COMPUTE: tl.constexpr = tl.float64 if COMPUTE_FP64 else tl.float32
    C = aligned(C, VEC)  # a channel mask constant over VEC channels: vector loads
    # ---- which RoI, bins and channels
    k, offs_bin, offs_c, mask_bin, mask_c = roi_tile_ids(C, pooled_h, pooled_w, BLOCK_BINS,
                                                         BLOCK_C)

    # ---- the bins' windows
    scale = tl.load(scale_ptr)
    n, in_range, x1, y1, x2, y2 = load_roi(rois_ptr, k, stride_rk, stride_rc, N,
                                            COMPUTE, INDEX_64)
    hstart, hend, wstart, wend, usable, span_h, span_w = _roi_pool_windows(
        x1, y1, x2, y2, scale, offs_bin // pooled_w, offs_bin % pooled_w, pooled_h, pooled_w,
        H, W, COMPUTE)
    live = tl.where(in_range & usable, mask_bin, False)
    empty = (hend <= hstart) | (wend <= wstart) | ~live
    # scalar loop bounds (no reduction over the tile): an unusable RoI scans nothing
    max_h = tl.where(in_range & usable, span_h, 0)
    max_w = tl.where(in_range & usable, span_w, 0)

    # ---- scan each window row by row, keeping the first strict maximum
    stride_xn, stride_xh, stride_xw = aligned_pixel_strides(stride_xn, stride_xh, stride_xw, VEC)
    x_img = x_ptr + cast_index(n, INDEX_64) * stride_xn
    c_offs = cast_index(offs_c, INDEX_64)[None, :] * stride_xc
    best = tl.where(empty, 0.0, -FLT_MAX).to(COMPUTE)[:, None] + tl.zeros([BLOCK_BINS, BLOCK_C],
                                                                            COMPUTE)
    where = tl.full([BLOCK_BINS, BLOCK_C], -1, tl.int32)
    for dh in range(0, max_h):
        h = hstart + dh
        row = cast_index(h, INDEX_64) * stride_xh
        for dw in range(0, max_w):
            w = wstart + dw
            inside = live & (h < hend) & (w < wend)
            m = inside[:, None] & mask_c[None, :]
            v = tl.load(x_img + (row + cast_index(w, INDEX_64) * stride_xw)[:, None] + c_offs,
                        mask=m, other=0.0).to(COMPUTE)
            better = m & (v > best)  # NaN is never better, as in torchvision
            best = tl.where(better, v, best)
            where = tl.where(better, (h * W + w).to(tl.int32)[:, None], where)

    # ---- store
    y_offs = (cast_index(k, INDEX_64) * stride_yk + offs_bin[:, None]
              + cast_index(offs_c, INDEX_64)[None, :] * stride_yc)
    mask = mask_bin[:, None] & mask_c[None, :]
    tl.store(y_ptr + y_offs, best.to(y_ptr.dtype.element_ty), mask=mask)
    tl.store(argmax_ptr + y_offs, where, mask=mask)


@triton.jit
def roi_pool_bwd_kernel(
    # pointers
    dy_ptr, rois_ptr, argmax_ptr, dx_ptr,
    # sizes
    N, C, W, pooled_h, pooled_w,
    # strides
    stride_dyk, stride_dyc, stride_dyh, stride_dyw,
    stride_rk, stride_rc,
    stride_ak, stride_ac,
    stride_dxn, stride_dxc, stride_dxh, stride_dxw,
    # meta-parameters
    COMPUTE_FP64: tl.constexpr, INDEX_64: tl.constexpr,
    BLOCK_BINS: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """dx[n_k, c, argmax] += dy[k, c, ph, pw], with atomic adds into the float32 (float64)
    buffer dx. argmax is contiguous per RoI and channel."""
    COMPUTE: tl.constexpr = tl.float64 if COMPUTE_FP64 else tl.float32
    k, offs_bin, offs_c, mask_bin, mask_c = roi_tile_ids(C, pooled_h, pooled_w, BLOCK_BINS,
                                                         BLOCK_C)

    n, in_range, x1, y1, x2, y2 = load_roi(rois_ptr, k, stride_rk, stride_rc, N,
                                            COMPUTE, INDEX_64)
    k64 = cast_index(k, INDEX_64)
    c64 = cast_index(offs_c, INDEX_64)[None, :]
    mask = tl.where(in_range, mask_bin, False)[:, None] & mask_c[None, :]
    am = tl.load(argmax_ptr + k64 * stride_ak + offs_bin[:, None] + c64 * stride_ac, mask=mask,
                 other=-1)
    ph = cast_index(offs_bin // pooled_w, INDEX_64)[:, None]
    pw = cast_index(offs_bin % pooled_w, INDEX_64)[:, None]
    g = tl.load(dy_ptr + k64 * stride_dyk + ph * stride_dyh + pw * stride_dyw + c64 * stride_dyc,
                mask=mask, other=0.0).to(COMPUTE)
    hit = am >= 0
    am = tl.maximum(am, 0)  # masked below where it was -1
    dx_offs = (cast_index(n, INDEX_64) * stride_dxn + c64 * stride_dxc
               + cast_index(am // W, INDEX_64) * stride_dxh
               + cast_index(am % W, INDEX_64) * stride_dxw)
    tl.atomic_add(dx_ptr + dx_offs, g, mask=mask & hit, sem="relaxed")


@triton.jit
def roi_pool_bwd_ordered_kernel(
    # pointers
    dy_ptr, rois_ptr, argmax_ptr, dx_ptr,
    # sizes
    N, C, W, K, pooled_h, pooled_w, band_rows, num_bands,
    # strides
    stride_dyk, stride_dyc, stride_dyh, stride_dyw,
    stride_rk, stride_rc,
    stride_ak, stride_ac,
    stride_dxn, stride_dxc, stride_dxh, stride_dxw,
    # meta-parameters
    COMPUTE_FP64: tl.constexpr, INDEX_64: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """The deterministic backward: program (image, channel tile, band of ``band_rows`` rows)
    adds the gradients of its image's RoIs in RoI and bin order where their argmax falls in its
    rows; nothing else writes its slice of dx."""
    COMPUTE: tl.constexpr = tl.float64 if COMPUTE_FP64 else tl.float32
    pid = tl.program_id(0)
    num_c = tl.cdiv(C, BLOCK_C)
    band = pid % num_bands
    img = pid // num_bands // num_c
    offs_c = (pid // num_bands % num_c) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    # argmax = h * W + w: the band's rows are one range of argmax values
    band_lo = band * band_rows * W
    band_hi = band_lo + band_rows * W
    c64 = cast_index(offs_c, INDEX_64)
    dx_c = dx_ptr + cast_index(img, INDEX_64) * stride_dxn + c64 * stride_dxc
    for k in range(0, K):
        n, in_range, x1, y1, x2, y2 = load_roi(rois_ptr, k, stride_rk, stride_rc, N,
                                                COMPUTE, INDEX_64)
        if in_range & (n == img):
            k64 = cast_index(k, INDEX_64)
            for ph in range(0, pooled_h):
                for pw in range(0, pooled_w):
                    b = ph * pooled_w + pw
                    am = tl.load(argmax_ptr + k64 * stride_ak + b + c64 * stride_ac, mask=mask_c,
                                 other=-1)
                    g = tl.load(dy_ptr + k64 * stride_dyk + ph * stride_dyh + pw * stride_dyw
                                + c64 * stride_dyc, mask=mask_c, other=0.0).to(COMPUTE)
                    # an empty bin's -1 is below every band (band_lo >= 0)
                    hit = (am >= band_lo) & (am < band_hi)
                    am = tl.maximum(am, 0)
                    # the only writer of these elements, one per channel: a plain add
                    dx_ptrs = (dx_c + cast_index(am // W, INDEX_64) * stride_dxh
                               + cast_index(am % W, INDEX_64) * stride_dxw)
                    m = mask_c & hit
                    tl.store(dx_ptrs, tl.load(dx_ptrs, mask=m, other=0.0) + g, mask=m)
