"""``@triton.jit`` helpers shared by the RoIAlign and RoIPool kernels."""
import triton
import triton.language as tl

from ._common import cast_index


@triton.jit
def load_roi(rois_ptr, k, stride_rk, stride_rc, N, COMPUTE_DTYPE: tl.constexpr,
             INDEX_64: tl.constexpr):
    """Row ``k`` of rois [K, 5] -> (batch index, in range?, x1, y1, x2, y2).

    The batch index is truncated toward zero, as torchvision's ``int roi_batch_ind = rois[0]``.
    An index outside [0, N) (or NaN) is reported rather than used, so that an RoI the
    validation could not see (inside a CUDA graph or a compiled region) reads and writes
    nothing instead of memory outside the input.
    """
    row = rois_ptr + cast_index(k, INDEX_64) * stride_rk
    b = tl.load(row).to(tl.float32)
    in_range = (b > -1.0) & (b < N)
    n = tl.where(in_range, b, 0.0).to(tl.int32)
    x1 = tl.load(row + stride_rc).to(COMPUTE_DTYPE)
    y1 = tl.load(row + 2 * stride_rc).to(COMPUTE_DTYPE)
    x2 = tl.load(row + 3 * stride_rc).to(COMPUTE_DTYPE)
    y2 = tl.load(row + 4 * stride_rc).to(COMPUTE_DTYPE)
    return n, in_range, x1, y1, x2, y2


@triton.jit
def roi_tile_ids(C, pooled_h, pooled_w, BLOCK_BINS: tl.constexpr, BLOCK_C: tl.constexpr):
    """This program's RoI, its tile of bins and its tile of channels (channel tiles fastest,
    then bin tiles, then RoIs), with their masks: the grid of the tiled RoI kernels."""
    pid = tl.program_id(0)
    num_c = tl.cdiv(C, BLOCK_C)
    num_bins = tl.cdiv(pooled_h * pooled_w, BLOCK_BINS)
    k = pid // (num_c * num_bins)
    offs_bin = (pid // num_c) % num_bins * BLOCK_BINS + tl.arange(0, BLOCK_BINS)
    offs_c = pid % num_c * BLOCK_C + tl.arange(0, BLOCK_C)
    return k, offs_bin, offs_c, offs_bin < pooled_h * pooled_w, offs_c < C


@triton.jit
def roi_split_tile_ids(C, pooled_h, pooled_w, num_splits, BLOCK_BINS: tl.constexpr,
                       BLOCK_C: tl.constexpr):
    """As ``roi_tile_ids``, with ``num_splits`` programs per tile (adjacent in the grid) that
    share its sample rows: -> RoI, split, bins, channels, masks."""
    pid = tl.program_id(0)
    split = pid % num_splits
    pid = pid // num_splits
    num_c = tl.cdiv(C, BLOCK_C)
    num_bins = tl.cdiv(pooled_h * pooled_w, BLOCK_BINS)
    k = pid // (num_c * num_bins)
    offs_bin = (pid // num_c) % num_bins * BLOCK_BINS + tl.arange(0, BLOCK_BINS)
    offs_c = pid % num_c * BLOCK_C + tl.arange(0, BLOCK_C)
    return k, split, offs_bin, offs_c, offs_bin < pooled_h * pooled_w, offs_c < C


@triton.jit
def split_rows(rows, split, num_splits):
    """[begin, end) of the rows 0 .. rows - 1 that split ``split`` of ``num_splits`` takes:
    contiguous shares of ceil(rows / num_splits), the last ones shorter or empty."""
    share = (rows + num_splits - 1) // num_splits
    begin = tl.minimum(split * share, rows)
    return begin, tl.minimum(begin + share, rows)


@triton.jit
def div_rn(a, b):
    """a / b rounded to nearest, as torchvision's division: Triton's float32 ``/`` is an
    approximate division on a GPU, and ``floor``/``ceil`` of a ratio that should be an exact
    integer must not move. float64 ``/`` is already IEEE."""
    if a.dtype == tl.float64:
        return a / b
    else:
        return tl.math.div_rn(a, b)
