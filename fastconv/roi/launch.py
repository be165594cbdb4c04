"""Launchers of the RoIAlign and RoIPool kernels: tile choice, grids and kernel arguments.

The ops (``fastconv.roi.align_op``, ``fastconv.roi.pool_op``) allocate and own every tensor
handed over here; the launchers only pick a tile and start the kernels. On a GPU the tiles come
from ``fastconv.kernels.configs.ROI_CONFIGS`` (compiled and spill-checked by the compile report);
under the interpreter a program covers a whole RoI and all its channels where it can, because
there every program step costs milliseconds. As in ``conv2d_launch``, each launcher describes its
launch (a ``*_launch`` function returning a ``KernelLaunch``) before starting it, which lets the
static per-case report read the launch without a GPU.
"""
import torch
import triton

from fastconv.kernels import conv2d_split_reduce_kernel
from fastconv.kernels import roi_align as roi_align_kernels
from fastconv.kernels import roi_pool as roi_pool_kernels
from fastconv.kernels.configs import (ROI_ADAPTIVE_SPLIT, ROI_CONFIGS, SPLIT_REDUCE_CONFIG,
                                      TileConfig)
from fastconv.ops._runtime import needs_int64, new_output
from fastconv.ops.launch_cache import KernelLaunch
from fastconv.conv.launch import channel_vector, strides_of
from fastconv.ops.target import sm_count, target_of


def roi_tile(channels: int, bins: int, ordered: bool, device=None) -> TileConfig:
    """The tile of one program: block_m bins of one RoI by block_n channels.

    Args:
        channels: C of the input.
        bins: pooled_height * pooled_width.
        ordered: the deterministic backward (one bin at a time).
        device: where it runs (the plan's target decides between GPU and interpreter tiles).
    """
    if target_of(device).interpreter:
        block_m = 1 if ordered else min(triton.next_power_of_2(max(bins, 1)), 256)
        return TileConfig(block_m, min(triton.next_power_of_2(max(channels, 1)), 256), 0, 4, 1)
    if ordered:
        return ROI_CONFIGS["ordered"][0]
    fits = [c for c in ROI_CONFIGS["tile"] if c.block_m <= triton.next_power_of_2(max(bins, 1))]
    return fits[0] if fits else ROI_CONFIGS["tile"][-1]


def ordered_bands(n: int, c: int, h: int, cfg: TileConfig, device) -> tuple:
    """(rows per band, bands) of a deterministic RoI backward on an [n, c, h, w] input.

    Its programs are (image, channel tile, band of rows); with one band per image a
    detectron2-sized backward (1 image, 512 channels) would start 4 programs, each walking
    every RoI serially. Bands of rows give every SM a program: same adds per element, in the
    same order, so the same bits. The interpreter keeps whole images (fewer, longer programs
    run faster there)."""
    if target_of(device).interpreter or h <= 1:
        return max(h, 1), 1
    programs = n * triton.cdiv(c, cfg.block_n)
    sms = sm_count(device)
    if programs >= sms:
        return h, 1
    rows = max(1, h * programs // sms)
    return rows, triton.cdiv(h, rows)


def gradient_buffer(input_shape, like: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """The zero-filled buffer a backward adds into: float32 (float64 for float64 gradients),
    in the input's memory format. Adding in 32 bits is more accurate than in 16, and atomics
    on bfloat16 are not available everywhere."""
    dtype = torch.float64 if like.dtype == torch.float64 else torch.float32
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return new_output(input_shape, like, fmt, dtype=dtype, fill=0)


def gradient_from_buffer(buffer: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The accumulated gradient in ``dtype`` (the buffer itself when they agree)."""
    return buffer if buffer.dtype == dtype else buffer.to(dtype)


def _scale(spatial_scale: float, like: torch.Tensor) -> torch.Tensor:
    """spatial_scale in the kernels' compute type (float64 for float64 input), as torchvision
    holds it; a Python float argument would reach the kernel as float32."""
    dtype = torch.float64 if like.dtype == torch.float64 else torch.float32
    return new_output((1,), like, dtype=dtype, fill=spatial_scale)


def _meta(cfg: TileConfig, dtype: torch.dtype, index_64: bool, ordered: bool = False,
          vec=None) -> dict:
    """Constexprs and launch options; ``vec``: the VEC of a kernel that takes one."""
    meta = {"COMPUTE_FP64": dtype == torch.float64, "INDEX_64": index_64,
            "BLOCK_C": cfg.block_n, "num_warps": cfg.num_warps, "num_stages": cfg.num_stages}
    if cfg.max_registers:
        meta["maxnreg"] = cfg.max_registers
    if not ordered:
        meta["BLOCK_BINS"] = cfg.block_m
    if vec is not None:
        meta["VEC"] = vec
    return meta


def _tile_grid(rois: torch.Tensor, channels: int, bins: int, cfg: TileConfig,
               splits: int = 1) -> tuple:
    return (rois.shape[0] * triton.cdiv(bins, cfg.block_m) * triton.cdiv(channels, cfg.block_n)
            * splits,)


def roi_vector(t: torch.Tensor) -> int:
    """The VEC of a RoI kernel reading or adding into the [N, C, H, W] tensor ``t`` along its
    channels: up to 16 bytes in channels_last (unit channel stride) where C, the pixel strides
    and the address allow, else 1 (NCHW)."""
    if t.shape[1] <= 1:
        return 1
    n_stride, c_stride, h_stride, w_stride = t.stride()
    return channel_vector([t], [c_stride], [t.shape[1], n_stride, h_stride, w_stride])


def adaptive_split(sampling_ratio: int, device=None) -> int:
    """Programs per RoIAlign tile sharing its sample rows: ``ROI_ADAPTIVE_SPLIT`` for adaptive
    sampling (sampling_ratio <= 0), whose grid grows with the RoI; 1 for a fixed grid. The
    interpreter splits in two, enough to run the split path in the tests."""
    if sampling_ratio > 0:
        return 1
    return 2 if target_of(device).interpreter else ROI_ADAPTIVE_SPLIT


# ---------------------------------------------------------------------------- RoIAlign
def roi_align_forward_launch(x, rois, spatial_scale, pooled_h, pooled_w, sampling_ratio,
                             aligned, y) -> KernelLaunch:
    """The launch of y [K, C, pooled_h, pooled_w] (contiguous) <- RoIAlign of x [N, C, H, W]
    (any strides)."""
    n, c, h, w = x.shape
    bins = pooled_h * pooled_w
    cfg = roi_tile(c, bins, ordered=False, device=x.device)
    index_64 = needs_int64(x, rois, y)
    splits = 1 if index_64 else adaptive_split(sampling_ratio, x.device)
    if splits * rois.shape[0] * bins * c >= 2**31:
        splits = 1  # a workspace this large would need 64-bit offsets, which do not split
    if splits == 1:
        out, out_strides = y, (0, y.stride(0), y.stride(1), 1)
    else:
        # partial means [splits, K * bins, C], added by the split-K reduction into y
        acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        out = new_output((splits, rois.shape[0] * bins, c), x, dtype=acc_dtype)
        out_strides = (out.stride(0), bins * c, 1, c)
    then = None if splits == 1 else _split_sum_launch(out, y, index_64)
    return KernelLaunch.from_kwargs(roi_align_kernels.roi_align_fwd_kernel,
                                    _tile_grid(rois, c, bins, cfg, splits), dict(
        x_ptr=x, rois_ptr=rois, scale_ptr=_scale(spatial_scale, x), y_ptr=out,
        N=n, C=c, H=h, W=w, pooled_h=pooled_h, pooled_w=pooled_w,
        sampling_ratio=sampling_ratio, num_splits=splits, **strides_of("x", x, "nchw"),
        **strides_of("r", rois, "kc"), **dict(zip(("stride_ys", "stride_yk", "stride_yc",
                                                   "stride_yb"), out_strides)),
        ALIGNED=aligned, **_meta(cfg, x.dtype, index_64, vec=roi_vector(x))), then)


def _split_sum_launch(part: torch.Tensor, y: torch.Tensor, index_64: bool) -> KernelLaunch:
    """y [K, C, ph, pw] <- the sum, in split order, of the partial means ``part``
    [splits, K * ph * pw, C]: the split-K reduction, reading RoIs as images, bins as pixels
    and no epilogue."""
    k, c, ph, pw = y.shape
    cfg = SPLIT_REDUCE_CONFIG
    if target_of(y.device).interpreter:
        cfg = TileConfig(min(triton.next_power_of_2(k * ph * pw), 128),
                         min(triton.next_power_of_2(c), 128), 0, 4, 1)
    grid = (triton.cdiv(k * ph * pw, cfg.block_m) * triton.cdiv(c, cfg.block_n),)
    # the splits are the reduction's split axis; with one group, its group stride is unused
    return KernelLaunch.from_kwargs(conv2d_split_reduce_kernel, grid, dict(
        part_ptr=part, b_ptr=y, res_ptr=y, y_ptr=y, pre_ptr=y, N=k, P=ph, Q=pw, COLS=c,
        SPLIT=part.shape[0], stride_pt=part.stride(0), stride_pg=part.stride(0),
        stride_pm=part.stride(1), **strides_of("y", y, "ncpq"), **strides_of("r", y, "ncpq"),
        activation=0, has_residual=0, store_preact=0, HAS_BIAS=False, INDEX_64=index_64,
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, num_warps=cfg.num_warps,
        num_stages=cfg.num_stages))


def roi_align_backward_launch(dy, rois, spatial_scale, sampling_ratio, aligned, dx,
                              deterministic: bool) -> KernelLaunch:
    """The launch of dx [N, C, H, W] (a zero-filled float32/float64 buffer) += the adjoint of
    RoIAlign on dy."""
    n, c, h, w = dx.shape
    pooled_h, pooled_w = dy.shape[2:]
    cfg = roi_tile(c, pooled_h * pooled_w, ordered=deterministic, device=dx.device)
    meta = dict(ALIGNED=aligned, **_meta(cfg, dx.dtype, needs_int64(dy, rois, dx),
                                         ordered=deterministic,
                                         vec=None if deterministic else roi_vector(dx)))
    common = dict(dy_ptr=dy, rois_ptr=rois, scale_ptr=_scale(spatial_scale, dx), dx_ptr=dx,
                  N=n, C=c, H=h, W=w, pooled_h=pooled_h, pooled_w=pooled_w,
                  sampling_ratio=sampling_ratio, **_backward_strides(dy, rois, dx), **meta)
    if deterministic:
        rows, bands = ordered_bands(n, c, h, cfg, dx.device)
        grid = (n * triton.cdiv(c, cfg.block_n) * bands,)
        return KernelLaunch.from_kwargs(roi_align_kernels.roi_align_bwd_ordered_kernel, grid,
                                        dict(common, K=rois.shape[0], band_rows=rows,
                                             num_bands=bands))
    # 64-bit offsets: no split (the kernel's registers are full)
    splits = 1 if meta["INDEX_64"] else adaptive_split(sampling_ratio, dx.device)
    return KernelLaunch.from_kwargs(roi_align_kernels.roi_align_bwd_kernel,
                                    _tile_grid(rois, c, pooled_h * pooled_w, cfg, splits),
                                    dict(common, num_splits=splits))


def _backward_strides(dy, rois, dx) -> dict:
    """The strides of a RoI backward's output gradient [K, C, ph, pw], boxes and input
    gradient."""
    return dict(**strides_of("dy", dy, "kchw"), **strides_of("r", rois, "kc"),
                **strides_of("dx", dx, "nchw"))


# ---------------------------------------------------------------------------- RoIPool
def roi_pool_forward_launch(x, rois, spatial_scale, y, argmax) -> KernelLaunch:
    """The launch of y and argmax [K, C, pooled_h, pooled_w] (contiguous, same strides) <-
    RoIPool of x."""
    n, c, h, w = x.shape
    pooled_h, pooled_w = y.shape[2:]
    cfg = roi_tile(c, pooled_h * pooled_w, ordered=False, device=x.device)
    # y and argmax share their strides (contiguous), passed once
    return KernelLaunch.from_kwargs(roi_pool_kernels.roi_pool_fwd_kernel,
                                    _tile_grid(rois, c, pooled_h * pooled_w, cfg), dict(
        x_ptr=x, rois_ptr=rois, scale_ptr=_scale(spatial_scale, x), y_ptr=y, argmax_ptr=argmax,
        N=n, C=c, H=h, W=w, pooled_h=pooled_h, pooled_w=pooled_w,
        **strides_of("x", x, "nchw"), **strides_of("r", rois, "kc"),
        stride_yk=y.stride(0), stride_yc=y.stride(1),
        **_meta(cfg, x.dtype, needs_int64(x, rois, y), vec=roi_vector(x))))


def roi_pool_backward_launch(dy, rois, argmax, dx, deterministic: bool) -> KernelLaunch:
    """The launch of dx [N, C, H, W] (a zero-filled float32/float64 buffer) += dy routed to
    argmax."""
    n, c, h, w = dx.shape
    pooled_h, pooled_w = dy.shape[2:]
    cfg = roi_tile(c, pooled_h * pooled_w, ordered=deterministic, device=dx.device)
    meta = _meta(cfg, dx.dtype, needs_int64(dy, rois, dx, argmax), ordered=deterministic)
    common = dict(dy_ptr=dy, rois_ptr=rois, argmax_ptr=argmax, dx_ptr=dx, N=n, C=c, W=w,
                  pooled_h=pooled_h, pooled_w=pooled_w, stride_ak=argmax.stride(0),
                  stride_ac=argmax.stride(1), **_backward_strides(dy, rois, dx), **meta)
    if deterministic:
        rows, bands = ordered_bands(n, c, h, cfg, dx.device)
        grid = (n * triton.cdiv(c, cfg.block_n) * bands,)
        return KernelLaunch.from_kwargs(roi_pool_kernels.roi_pool_bwd_ordered_kernel, grid,
                                        dict(common, K=rois.shape[0], band_rows=rows,
                                             num_bands=bands))
    return KernelLaunch.from_kwargs(roi_pool_kernels.roi_pool_bwd_kernel,
                                    _tile_grid(rois, c, pooled_h * pooled_w, cfg), common)
