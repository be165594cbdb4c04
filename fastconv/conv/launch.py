"""The conv2d seam: what a call of each direction launches, described from its tensors.

Callers (the ops in ``fastconv.ops``) have already validated the arguments and allocated the
outputs. ``conv2d_fprop``, ``conv2d_dgrad`` and ``conv2d_wgrad`` pick the plan (autotuned on a
GPU) and return the launches as ``KernelLaunch`` descriptions (kernel, grid, arguments,
meta-parameters), built by the ``*_launch`` functions; the ops record them once per call
signature (:mod:`fastconv.ops.launch_cache`) and replay them. The same functions work on
meta-device tensors, so the static compile report (``fastconv.bench.compile_report``) and
``explain`` read exactly what would run, without a GPU.

A split-K fprop or dgrad (``Plan.split`` > 1) is two launches: the GEMM, which writes partial
sums to a workspace allocated here, then the reduction, which adds them and runs the epilogue.
The GEMM's ``KernelLaunch`` carries the reduction as ``then``.
"""
import dataclasses
from typing import Optional, Sequence, Tuple

import torch
import triton

from fastconv.conv import autotune
from fastconv.ops._runtime import INTERPRETING, needs_int64, new_output
from fastconv.conv.tma_dgrad_launch import tma_dgrad_eligible, tma_dgrad_launches
from fastconv.conv.tma_launch import tma_fprop_eligible, tma_fprop_launches
from fastconv.conv.tma_wgrad_launch import tma_wgrad_eligible, tma_wgrad_launch
from fastconv.ops.launch_cache import Finish, KernelLaunch, run_launches
from fastconv.conv.plan import (TMA_FAMILY, ConvProblem, Plan, direct_extent, direct_tile,
                               direct_wgrad_taps, direct_wgrad_tiles, gemm_dims, pixel_tiles,
                               plan_conv2d, reduction_steps, spatially_flat,
                               split_reduce_config, tma_plan, wgrad_tiles)


def conv_problem(x_shape, w_shape, y_shape, groups: int, dtype: torch.dtype, stride=(1, 1),
                 padding=(0, 0), dilation=(1, 1)) -> ConvProblem:
    n, c, h, w = x_shape
    k, _, r, s = w_shape
    return ConvProblem(n, c, h, w, k, y_shape[2], y_shape[3], r, s, groups, dtype,
                       tuple(stride), tuple(padding), tuple(dilation))


def _meta(plan: Plan, dtype: torch.dtype) -> dict:
    """The constexpr meta-parameters and launch options of a plan."""
    cfg = plan.config
    meta = {"ACC_FP64": dtype == torch.float64, "INDEX_64": plan.index_64,
            "BLOCK_M": cfg.block_m, "BLOCK_N": cfg.block_n,
            "num_warps": cfg.num_warps, "num_stages": cfg.num_stages}
    if cfg.max_registers:  # the register cap the compile report checked the config with
        meta["maxnreg"] = cfg.max_registers
    if plan.family in ("gemm_1x1", "direct"):
        # channels_last alignment the launch vouches for (channel_vector); 1 promises nothing
        meta["VEC"] = 1
    if plan.family == "direct":
        # the spatial tile's width: the launch sets it from the image (direct_tile); by
        # default the squarest tile
        meta["BLOCK_W"] = direct_tile(cfg.block_m, cfg.block_m)[1]
        if plan.direction == "wgrad":  # likewise the taps per program: 3x3's by default
            meta["TAPS"] = 16
    if plan.family != "direct":
        meta["BLOCK_K"] = cfg.block_k
        # the interpreter's tl.dot is wrong on bfloat16 operands (see kernels._common.mma)
        meta["DOT_IN_FP32"] = INTERPRETING and dtype == torch.bfloat16
        # conv follows cuDNN's switch, as torch.nn.functional.conv2d does
        meta["ALLOW_TF32"] = dtype == torch.float32 and torch.backends.cudnn.allow_tf32
        if plan.direction != "wgrad":
            meta["SPLIT_K"] = plan.split > 1
            if plan.family == "gemm_1x1":  # the forward reads W [k, c] as B [c, k]
                meta["B_UNIT_RED"] = plan.direction == "fprop"
    return meta


def _reduce_meta(cfg, has_bias: bool, index_64: bool) -> dict:
    """The constexpr meta-parameters and launch options of a split-K reduction."""
    meta = {"HAS_BIAS": has_bias, "INDEX_64": index_64, "BLOCK_M": cfg.block_m,
            "BLOCK_N": cfg.block_n, "num_warps": cfg.num_warps, "num_stages": cfg.num_stages}
    if cfg.max_registers:  # as in _meta
        meta["maxnreg"] = cfg.max_registers
    return meta


def split_workspace(direction: str, pb: ConvProblem, split: int, steps: int,
                    like: torch.Tensor, unsplit: torch.Tensor):
    """(workspace, the GEMM's split arguments by name) of a fprop or dgrad GEMM launch of
    ``direction`` over ``pb`` whose flat reduction runs ``steps`` steps.

    Split: the partial sums [split, groups, rows, cols] in the accumulator dtype (allocated
    here, like ``like``) and the reduction steps per split. Unsplit: ``unsplit`` (a tensor of
    the launch, never touched) and constants, so an unsplit launch compiles one variant.
    """
    if split == 1:
        return unsplit, dict(part_ptr=unsplit, ITERS_PER_SPLIT=1, stride_pt=0, stride_pg=0,
                             stride_pm=0)
    rows, cols, _ = gemm_dims(direction, pb)
    acc_dtype = torch.float64 if like.dtype == torch.float64 else torch.float32
    part = new_output((split, pb.groups, rows, cols), like, dtype=acc_dtype)
    return part, dict(part_ptr=part, ITERS_PER_SPLIT=triton.cdiv(steps, split),
                      **strides_of("p", part, "tgm"))


def reduce_launch(direction: str, pb: ConvProblem, split: int, part, b, res, y, pre,
                  epilogue: dict, has_bias: bool, index_64: bool) -> KernelLaunch:
    """The split-K reduction of ``part`` (``split`` partial sums) into ``y`` (its pixels
    (n, p, q) and ``cols`` channels per group), with the epilogue arguments of
    ``conv_epilogue`` (``_epilogue``)."""
    from fastconv.kernels import conv2d_split_reduce_kernel

    rows, cols, _ = gemm_dims(direction, pb)
    cfg = split_reduce_config(direction, pb, part.device)
    grid = (triton.cdiv(rows, cfg.block_m) * triton.cdiv(cols, cfg.block_n) * pb.groups,)
    # output pixels (n, p, q) of the forward; input pixels (n, h, w) of the input gradient
    P, Q = (pb.P, pb.Q) if direction == "fprop" else (pb.H, pb.W)
    return KernelLaunch.from_kwargs(conv2d_split_reduce_kernel, grid, dict(
        part_ptr=part, b_ptr=b, res_ptr=res, y_ptr=y, pre_ptr=pre,
        N=pb.N, P=P, Q=Q, COLS=cols, SPLIT=split, **strides_of("p", part, "tgm"),
        **strides_of("y", y, "ncpq"), **strides_of("r", res, "ncpq"), **epilogue,
        **_reduce_meta(cfg, has_bias, index_64)))


def _plan_workspace(plan: Plan, pb: ConvProblem, like: torch.Tensor, unsplit: torch.Tensor):
    """``split_workspace`` of a pointer-kernel ``plan``."""
    return split_workspace(plan.direction, pb, plan.split,
                           reduction_steps(plan.direction, plan.family, pb, plan.config),
                           like, unsplit)


def _plan_reduce(plan: Plan, pb: ConvProblem, part, b, res, y, pre, epilogue: dict,
                 has_bias: bool) -> KernelLaunch:
    """``reduce_launch`` of a pointer-kernel ``plan``."""
    return reduce_launch(plan.direction, pb, plan.split, part, b, res, y, pre, epilogue,
                         has_bias, plan.index_64)


def strides_of(name: str, t: torch.Tensor, axes) -> dict:
    """``t``'s strides as the kernels name them: ``stride_<name><axis>`` for each axis of
    ``axes`` (a string of one-letter axes, or a sequence of names)."""
    return _named_strides(name, t.stride(), axes)


def _named_strides(name: str, strides, axes) -> dict:
    return {f"stride_{name}{a}": s for a, s in zip(axes, strides)}


def _conv_args(stride, padding, dilation) -> dict:
    return dict(stride_h=stride[0], stride_w=stride[1], pad_h=padding[0], pad_w=padding[1],
                dil_h=dilation[0], dil_w=dilation[1])


def _sizes(pb: ConvProblem) -> dict:
    return dict(N=pb.N, H=pb.H, W=pb.W, P=pb.P, Q=pb.Q, R=pb.R, S=pb.S, CG=pb.CG, KG=pb.KG)


def _epilogue(activation: int = 0, residual=None, preact=None) -> dict:
    """The epilogue arguments of ``kernels._common.conv_epilogue`` (runtime values: one
    compiled variant serves every activation)."""
    return dict(activation=activation, has_residual=int(residual is not None),
                store_preact=int(preact is not None))


def channel_vector(tensors, unit, multiples) -> int:
    """The VEC of a launch of a kernel that takes one (``kernels._common.aligned``): the largest
    power of two, up to 16 bytes of elements, that divides every value the kernel aligns
    (``multiples``: channel counts and non-unit strides) and the address of every tensor it
    reads or writes along channels, provided those tensors have unit channel stride (``unit``:
    the strides that must be 1); else 1.

    A channels_last tensor of 24, 116 or 232 channels gets 8, 4 and 8 in 16-bit (16 bytes, 8
    bytes, 16 bytes a load). NCHW gets 1: its channels are not the contiguous axis."""
    if not tensors or any(u != 1 for u in unit):
        return 1
    size = tensors[0].element_size()
    vec = max(1, 16 // size)
    while vec > 1 and not (all(m % vec == 0 for m in multiples)
                           and all(t.data_ptr() % (vec * size) == 0 for t in tensors)):
        vec //= 2
    return vec


def _pixel_strides(t: torch.Tensor) -> tuple:
    """(image, flat pixel, channel) strides of a tensor whose H, W axes flatten."""
    return t.stride(0), t.stride(3) if t.shape[3] > 1 else t.stride(2), t.stride(1)


def _gemm_1x1_vector(a, w, y, res, pre, red, cols) -> int:
    """VEC of a 1x1 GEMM fprop or dgrad launch: A = ``a`` reducing ``red`` channels per
    group, the weight ``w`` [K, CG, 1, 1], output ``y`` (and ``res``, ``pre`` beside it) of
    ``cols`` channels per group; what conv2d_1x1_gemm_kernel aligns."""
    tensors = (a, w, y, res, pre)
    return channel_vector(tensors, [t.stride(1) for t in tensors],
                          (red, cols, w.stride(0), *[s for t in (a, y, res)
                                                     for s in _pixel_strides(t)[:2]]))


def _direct_vector(tensors, channels: int) -> int:
    """VEC of a direct-kernel launch: ``tensors`` (N, C, H, W) read or written along their
    ``channels`` channels; the kernels align those and the tensors' other strides."""
    return channel_vector(tensors, [t.stride(1) for t in tensors],
                          (channels, *[s for t in tensors for i, s in enumerate(t.stride())
                                       if i != 1]))


def plan_fprop(x, w, y, groups, stride, padding, dilation, residual=None) -> Plan:
    pb = conv_problem(x.shape, w.shape, y.shape, groups, x.dtype, stride, padding, dilation)
    if tma_fprop_eligible(x, w, y, groups, residual, stride):
        plan = tma_plan(pb, x.device)
        if plan is not None:
            return plan
    flat = all(spatially_flat(t) for t in (x, y, residual) if t is not None)
    return plan_conv2d("fprop", pb, x.device, needs_int64(x, w, y, residual), flat)


def plan_dgrad(dy, w, dx, groups, stride, padding, dilation) -> Plan:
    pb = conv_problem(dx.shape, w.shape, dy.shape, groups, dy.dtype, stride, padding, dilation)
    if tma_dgrad_eligible(dy, w, dx, groups):
        plan = tma_plan(pb, dy.device, "dgrad")
        if plan is not None:
            return plan
    flat = spatially_flat(dy) and spatially_flat(dx)
    return plan_conv2d("dgrad", pb, dy.device, needs_int64(dy, w, dx), flat)


def plan_wgrad(x, dy, weight_shape, groups, stride, padding, dilation) -> Plan:
    pb = conv_problem(x.shape, weight_shape, dy.shape, groups, x.dtype, stride, padding, dilation)
    # the plan keeps the split-K workspace under 2**31 elements, so only x, dy and the weight
    # itself can need 64-bit offsets
    big_weight = pb.K * pb.CG * pb.R * pb.S >= 2**31
    if tma_wgrad_eligible(x, dy, weight_shape, groups, stride) and not big_weight:
        plan = tma_plan(pb, x.device, "wgrad")
        if plan is not None:
            return plan
    flat = spatially_flat(x) and spatially_flat(dy)
    return plan_conv2d("wgrad", pb, x.device, needs_int64(x, dy) or big_weight, flat)


def conv2d_fprop(x: torch.Tensor, w: torch.Tensor, bias: Optional[torch.Tensor], y: torch.Tensor,
                 stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
                 groups: int, *, residual: Optional[torch.Tensor] = None, activation: int = 0,
                 preact: Optional[torch.Tensor] = None,
                 plan: Optional[Plan] = None) -> Tuple[Plan, list]:
    """(plan, launches) of y = act(conv2d(x, w) + bias + residual), written into ``y``.

    ``preact`` (same shape and strides as ``y``), when given, receives the value before the
    activation. ``activation`` is a code of ``fastconv.kernels._common`` (0: none). ``plan``:
    launch that plan, untuned, instead of choosing one (the compile report's candidates).
    """
    chosen = plan
    plan = plan or plan_fprop(x, w, y, groups, stride, padding, dilation, residual)
    if y.numel() == 0:
        return plan, []
    pb = conv_problem(x.shape, w.shape, y.shape, groups, x.dtype, stride, padding, dilation)

    def launches(plan):
        if plan.family == TMA_FAMILY:
            return tma_fprop_launches(x, w, bias, y, stride, padding, dilation, groups,
                                      residual, activation, preact, config=plan.config,
                                      split=plan.split)
        return fprop_launch(plan, pb, x, w, bias, y, stride, padding, dilation, groups,
                            residual, activation, preact).chain()
    if chosen is None:
        plan = autotune.tuned(plan, pb, x.device, lambda p: run_launches(launches(p)))
    return plan, launches(plan)


def fprop_launch(plan, pb, x, w, bias, y, stride, padding, dilation, groups, residual=None,
                 activation=0, preact=None) -> KernelLaunch:
    """The launch of ``plan`` that ``conv2d_fprop`` starts (arguments as there)."""
    cfg = plan.config
    meta = _meta(plan, x.dtype)
    # the kernels read the bias with unit stride; a strided view (bias[::2]) is copied first
    b = bias.contiguous() if bias is not None else y  # y: never read when HAS_BIAS is False
    res = residual if residual is not None else y      # never read when has_residual is 0
    pre = preact if preact is not None else y          # never written when store_preact is 0
    epilogue = _epilogue(activation, residual, preact)
    # split: the reduction runs the epilogue, bias included; the GEMM only stores partial sums
    meta["HAS_BIAS"] = bias is not None and plan.split == 1
    grid = (pixel_tiles("fprop", plan.family, pb, cfg),)
    then = None
    if plan.family != "direct":
        part, split_args = _plan_workspace(plan, pb, x, y)
        if plan.split > 1:
            grid += (plan.split,)
            then = _plan_reduce(plan, pb, part, b, res, y, pre, epilogue, bias is not None)
    if plan.family == "gemm_1x1":
        # A = x as [pixels, channels]; B = w read as [c, k], one group KG rows further on
        meta["VEC"] = _gemm_1x1_vector(x, w, y, res, pre, pb.CG, pb.KG)
        return KernelLaunch.from_kwargs(plan.kernel, grid, dict(
            a_ptr=x, b_ptr=w, bias_ptr=b, res_ptr=res, y_ptr=y, pre_ptr=pre,
            N=pb.N, HW=pb.H * pb.W, RED=pb.CG, COLS=pb.KG, **split_args,
            **_gemm_1x1_strides(x, y, res), stride_br=w.stride(1), stride_bc=w.stride(0),
            stride_bg=pb.KG * w.stride(0), **epilogue, **meta), then)
    tensors = dict(x_ptr=x, w_ptr=w, b_ptr=b, res_ptr=res, y_ptr=y, pre_ptr=pre)
    strides = dict(**strides_of("x", x, "nchw"), **strides_of("w", w, "kcrs"),
                   **strides_of("y", y, "nkpq"), **strides_of("r", res, "nkpq"))
    geometry = _conv_args(stride, padding, dilation)
    if plan.family == "direct":
        meta["VEC"] = _direct_vector((x, y, res, pre), pb.K)
        meta["BLOCK_W"] = direct_tile(cfg.block_m, direct_extent("fprop", pb)[1])[1]
        return KernelLaunch.from_kwargs(plan.kernel, grid, dict(
            **tensors, **_sizes(pb), K=pb.K, **geometry, **strides, **epilogue, **meta))
    return KernelLaunch.from_kwargs(plan.kernel, grid, dict(
        **tensors, **_sizes(pb), **geometry, **strides, **split_args, **epilogue, **meta),
        then)


def _pixel_strides_of(name: str, t: torch.Tensor, channel: str) -> dict:
    """``_pixel_strides`` of ``t`` as a 1x1 GEMM kernel names them: ``stride_<name>n``,
    ``stride_<name>hw`` and ``stride_<name><channel>``."""
    return dict(zip((f"stride_{name}n", f"stride_{name}hw", f"stride_{name}{channel}"),
                    _pixel_strides(t)))


def _gemm_1x1_strides(a, y, res) -> dict:
    """The strides of a 1x1 GEMM's A operand (pixels by reduced channels), output and
    residual."""
    return dict(**_pixel_strides_of("a", a, "r"), **_pixel_strides_of("y", y, "c"),
                **_pixel_strides_of("r", res, "c"))


def conv2d_dgrad(dy: torch.Tensor, w: torch.Tensor, dx: torch.Tensor, stride: Sequence[int],
                 padding: Sequence[int], dilation: Sequence[int], groups: int, *,
                 plan: Optional[Plan] = None) -> Tuple[Plan, list]:
    """(plan, launches) of dx = d conv2d / d input, written into ``dx`` (``plan``: as in
    ``conv2d_fprop``)."""
    chosen = plan
    plan = plan or plan_dgrad(dy, w, dx, groups, stride, padding, dilation)
    if dx.numel() == 0:
        return plan, []
    pb = conv_problem(dx.shape, w.shape, dy.shape, groups, dy.dtype, stride, padding, dilation)

    def launches(plan):
        if plan.family == TMA_FAMILY:
            launches, part = tma_dgrad_launches(dy, w, dx, stride, padding, dilation, groups,
                                                config=plan.config, split=plan.split)
            if plan.split > 1:  # no bias, residual or activation: a plain store into dx
                launches.append(reduce_launch("dgrad", pb, plan.split, part, dx, dx, dx, dx,
                                              _epilogue(), False, False))
            return launches
        return dgrad_launch(plan, pb, dy, w, dx, stride, padding, dilation, groups).chain()
    if chosen is None:
        plan = autotune.tuned(plan, pb, dy.device, lambda p: run_launches(launches(p)))
    return plan, launches(plan)


def dgrad_launch(plan, pb, dy, w, dx, stride, padding, dilation, groups) -> KernelLaunch:
    """The launch of ``plan`` that ``conv2d_dgrad`` starts (arguments as there)."""
    meta = _meta(plan, dy.dtype)
    grid = (pixel_tiles("dgrad", plan.family, pb, plan.config),)
    strides = dict(**strides_of("dy", dy, "nkpq"), **strides_of("w", w, "kcrs"),
                   **strides_of("dx", dx, "nchw"))
    geometry = _conv_args(stride, padding, dilation)
    if plan.family == "direct":
        meta["VEC"] = _direct_vector((dy, dx), pb.C)
        meta["BLOCK_W"] = direct_tile(plan.config.block_m, direct_extent("dgrad", pb)[1])[1]
        return KernelLaunch.from_kwargs(plan.kernel, grid, dict(
            dy_ptr=dy, w_ptr=w, dx_ptr=dx, **_sizes(pb), C=pb.C, **geometry, **strides,
            **meta))
    part, split_args = _plan_workspace(plan, pb, dy, dx)
    then = None
    if plan.split > 1:
        grid += (plan.split,)
        # no bias, residual or activation: the reduction is a plain store into dx
        then = _plan_reduce(plan, pb, part, dx, dx, dx, dx, _epilogue(), False)
    if plan.family == "gemm_1x1":
        meta["HAS_BIAS"] = False
        meta["VEC"] = _gemm_1x1_vector(dy, w, dx, dx, dx, pb.KG, pb.CG)
        # A = dy as [pixels, channels]; B = w read as [k, c], one group KG rows further on
        return KernelLaunch.from_kwargs(plan.kernel, grid, dict(
            a_ptr=dy, b_ptr=w, bias_ptr=dx, res_ptr=dx, y_ptr=dx, pre_ptr=dx,
            N=pb.N, HW=pb.H * pb.W, RED=pb.KG, COLS=pb.CG, **split_args,
            **_gemm_1x1_strides(dy, dx, dx), stride_br=w.stride(0), stride_bc=w.stride(1),
            stride_bg=pb.KG * w.stride(0), **_epilogue(), **meta), then)
    return KernelLaunch.from_kwargs(plan.kernel, grid, dict(
        dy_ptr=dy, w_ptr=w, dx_ptr=dx, **_sizes(pb), **split_args, **geometry, **strides,
        **meta), then)


def conv2d_wgrad(x: torch.Tensor, dy: torch.Tensor, weight_shape: Sequence[int],
                 stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
                 groups: int, *, plan: Optional[Plan] = None) -> Tuple[Plan, list, object]:
    """(plan, launches, result) of d conv2d / d weight: a contiguous tensor of ``weight_shape``,
    written by the launches themselves when they are not split (the direct family's split-K
    reduction writes it too), else a ``Finish`` that adds the GEMM launch's split-K partial
    sums (``plan``: as in ``conv2d_fprop``)."""
    pb = conv_problem(x.shape, weight_shape, dy.shape, groups, x.dtype, stride, padding,
                      dilation)
    chosen = plan
    plan = plan or plan_wgrad(x, dy, weight_shape, groups, stride, padding, dilation)
    if pb.K * pb.CG * pb.R * pb.S == 0:
        return plan, [], new_output(weight_shape, x)

    def launch(plan):
        if plan.family == TMA_FAMILY:
            return tma_wgrad_launch(x, dy, weight_shape, stride, padding, dilation, groups,
                                    config=plan.config, split=plan.split)
        return wgrad_launch(plan, pb, x, dy, weight_shape, stride, padding, dilation, groups)
    if chosen is None:
        plan = autotune.tuned(plan, pb, x.device, lambda p: launch(p)[0]())
    step, part = launch(plan)
    if plan.family == "direct":  # the split-K reduction (step.then) writes the gradient
        return plan, step.chain(), part
    if part.dim() == len(weight_shape):  # unsplit: the launch wrote the gradient itself
        return plan, [step], part
    return plan, [step], Finish(_sum_partials(x.dtype), part)


def _sum_partials(dtype):
    def total(part):
        # the partials are added in a fixed order: bitwise reproducible, no atomics
        return part.sum(dim=0).to(dtype)
    return total


def wgrad_launch(plan, pb, x, dy, weight_shape, stride, padding, dilation,
                 groups) -> Tuple[KernelLaunch, torch.Tensor]:
    """The launch of ``plan`` that ``conv2d_wgrad`` starts, and what it writes (allocated here,
    like ``x``): the split-K workspace [split, *weight_shape] of partial sums, or unsplit the
    gradient itself (its store casts to the dtype: no workspace to read back); for the direct
    family, ``direct_wgrad_launch``'s launch and gradient."""
    if plan.family == "direct":
        return direct_wgrad_launch(plan, pb, x, dy, weight_shape, stride, padding, dilation)
    acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    cfg = plan.config
    red = pb.N * pb.P * pb.Q
    m_per_split = triton.cdiv(triton.cdiv(red, plan.split), cfg.block_k) * cfg.block_k
    split = max(1, triton.cdiv(red, max(m_per_split, 1)))
    if split == 1:
        part = new_output(weight_shape, x)
        p_strides = (0, *part.stride())  # one range: its index never moves the pointer
    else:
        part = new_output((split, *weight_shape), x, dtype=acc_dtype)
        p_strides = part.stride()
    meta = _meta(plan, x.dtype)
    grid = (wgrad_tiles(plan.family, pb, cfg), split)
    if plan.family == "gemm_1x1":
        meta["VEC"] = channel_vector(
            (x, dy, part), (x.stride(1), dy.stride(1), p_strides[2]),
            (pb.CG, pb.KG, *_pixel_strides(x)[:2], *_pixel_strides(dy)[:2], p_strides[1]))
        return KernelLaunch.from_kwargs(plan.kernel, grid, dict(
            x_ptr=x, dy_ptr=dy, part_ptr=part, N=pb.N, HW=pb.H * pb.W, CG=pb.CG, KG=pb.KG,
            M_PER_SPLIT=m_per_split, **_pixel_strides_of("x", x, "c"),
            **_pixel_strides_of("dy", dy, "k"), **_named_strides("p", p_strides, "tkc"),
            **meta)), part
    return KernelLaunch.from_kwargs(plan.kernel, grid, dict(
        x_ptr=x, dy_ptr=dy, part_ptr=part, **_sizes(pb), M_PER_SPLIT=m_per_split,
        **_conv_args(stride, padding, dilation), **strides_of("x", x, "nchw"),
        **strides_of("dy", dy, "nkpq"), **_named_strides("p", p_strides, "tkcrs"), **meta)), part


def direct_wgrad_launch(plan, pb, x, dy, weight_shape, stride, padding,
                        dilation) -> Tuple[KernelLaunch, torch.Tensor]:
    """The direct weight gradient of ``plan`` and the gradient it produces (a new contiguous
    tensor of ``weight_shape``, like ``x``).

    Stage one (conv2d_wgrad_direct_kernel): programs over (channel vector, input channel of
    the group, chunk of taps) by ``plan.split`` ranges of spatial tiles, each summing its
    range for all its taps into the float32 workspace [split, CG, R, S, K] (channels
    innermost, as in x and dy). Stage two, its ``then``: the split-K reduction adds the
    ranges in split order (bitwise reproducible) and writes the gradient in its dtype, the
    workspace read as [split, 1, CG*R*S, K] and the gradient as CG*R*S "pixels" of K
    channels (stride CG*R*S: a transposing store, of a tensor K*R*S*CG elements small). One
    range: stage one writes the gradient itself, and there is no stage two.
    """
    from fastconv.kernels import conv2d_split_reduce_kernel

    cfg = plan.config
    meta = _meta(plan, x.dtype)
    tiles = direct_wgrad_tiles(pb, cfg)
    # no empty range; an empty batch (no tiles) runs one, which writes zeros
    per_split = max(1, triton.cdiv(tiles, plan.split))
    split = max(1, triton.cdiv(tiles, per_split))
    dw = new_output(weight_shape, x)
    # (split, k, c, r, s) strides of where stage one writes
    part_strides = (0, *dw.stride())
    if split > 1:
        # channels innermost: stage one stores, and the reduction loads, channel vectors
        acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        part = new_output((split, pb.CG, pb.R, pb.S, pb.K), x, dtype=acc_dtype)
        st, sc, sr, ss, sk = part.stride()
        part_strides = (st, sk, sc, sr, ss)
    meta.update(VEC=_direct_vector((x, dy), pb.K), BLOCK_W=direct_tile(cfg.block_m, pb.Q)[1],
                TAPS=direct_wgrad_taps(pb))
    first = KernelLaunch.from_kwargs(plan.kernel, (wgrad_tiles("direct", pb, cfg), split), dict(
        x_ptr=x, dy_ptr=dy, part_ptr=part if split > 1 else dw,
        N=pb.N, H=pb.H, W=pb.W, P=pb.P, Q=pb.Q, R=pb.R, S=pb.S, CG=pb.CG, KG=pb.KG, K=pb.K,
        TILES_PER_SPLIT=per_split,
        stride_h=stride[0], stride_w=stride[1], pad_h=padding[0], pad_w=padding[1],
        dil_h=dilation[0], dil_w=dilation[1],
        stride_xn=x.stride(0), stride_xc=x.stride(1), stride_xh=x.stride(2),
        stride_xw=x.stride(3),
        stride_dyn=dy.stride(0), stride_dyk=dy.stride(1), stride_dyp=dy.stride(2),
        stride_dyq=dy.stride(3),
        stride_pt=part_strides[0], stride_pk=part_strides[1], stride_pc=part_strides[2],
        stride_pr=part_strides[3], stride_ps=part_strides[4], **meta))
    if split == 1:
        return first, dw
    rows = pb.CG * pb.R * pb.S
    rcfg = split_reduce_config("wgrad", pb, x.device)
    reduce = KernelLaunch.from_kwargs(
        conv2d_split_reduce_kernel,
        (triton.cdiv(rows, rcfg.block_m) * triton.cdiv(pb.K, rcfg.block_n),), dict(
            part_ptr=part, b_ptr=dw, res_ptr=dw, y_ptr=dw, pre_ptr=dw,
            N=rows, P=1, Q=1, COLS=pb.K, SPLIT=split,
            stride_pt=part.stride(0), stride_pg=0, stride_pm=pb.K,
            stride_yn=1, stride_yc=rows, stride_yp=0, stride_yq=0,
            stride_rn=1, stride_rc=rows, stride_rp=0, stride_rq=0,
            activation=0, has_residual=0, store_preact=0,
            **_reduce_meta(rcfg, False, plan.index_64)))
    return dataclasses.replace(first, then=reduce), dw
