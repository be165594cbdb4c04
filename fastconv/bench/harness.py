"""The timing harness: for one benchmark case, its inputs, the fastconv callable and the baseline
callables, the timings and one result row.

A *variant* is a case (:mod:`fastconv.bench.cases`) in one dtype, memory layout and direction
("forward", "backward": the gradients from a retained graph, "both": forward then backward).
For each variant the harness builds

* several input sets, cycled through call by call ("rotating buffers"), so that a kernel never
  finds its operands in L2 from the previous repetition;
* a :class:`Contender` for fastconv (``fastconv.functional``) and one per baseline: torch's
  convolution with ``cudnn.benchmark=True``, for depthwise layers also PyTorch's native depthwise
  kernel (cuDNN off), and torchvision's RoI kernels;

then compares their outputs on the first input set, times each with
``triton.testing.do_bench`` (median, after a warm-up: the eager time) and, on a GPU, as calls
captured in a CUDA graph and replayed (the GPU time, :mod:`fastconv.bench.gpu_time`), and turns
the times into a :class:`BenchRow`: ms, TFLOP/s, GB/s, speedup over the faster baseline and the
fraction of the roofline floor (:mod:`fastconv.bench.roofline`), for each of the two times.

Dry mode (``dry=True``) is how the harness is tested without a GPU: the cases are shrunk to tiny
shapes (:func:`shrink`), the kernels run under Triton's interpreter and each contender is timed
once with a host clock (``do_bench`` needs a CUDA device). Its numbers are no measure of
anything; its rows prove that every code path ran and that fastconv agreed with the baseline.

End-to-end variants (:func:`e2e_contenders`) time a whole model of ``fastconv.models``, inference
or one training step (forward, backward, SGD step), against the same model turned back into
torch's layers by :func:`fastconv.unconvert`.
"""
import contextlib
import datetime
import itertools
import math
import os
import time
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Callable, ContextManager, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

import fastconv
import fastconv.functional as FF
from fastconv.bench.cases import DIRECTIONS, LAYOUTS, ConvCase, RoICase
from fastconv import numerics
from fastconv.bench.roofline import GpuPeak, gpu_for
from fastconv.numerics import AGREEMENT, AGREEMENT_TF32, MODEL_AGREEMENT, MODEL_AGREEMENT_TF32
from fastconv.ops._runtime import INTERPRETING
from fastconv.ops.target import larger_interpreter_blocks

Case = Union[ConvCase, RoICase]

# the end-to-end models of the issue, and their direction names
E2E_MODELS = ("resnet50", "mobilenet_v2")
E2E_MODES = ("inference", "train_step")

# Rotating buffers: enough input sets to hold this many bytes together (twice an H100's 50 MB
# L2), at least two so that consecutive calls never share operands, at most eight so that the
# largest layers (VGG's first convolutions at batch 32) still fit beside their gradients.
ROTATION_BYTES = 128 * 2**20
MIN_SETS, MAX_SETS = 2, 8
# do_bench's budgets (ms of GPU time) for warm-up and for the timed repetitions; a run short of
# time (benchmarks/gpu_run.sh) lowers them through the environment
WARMUP_MS = int(os.environ.get("FASTCONV_BENCH_WARMUP_MS", "25"))
REP_MS = int(os.environ.get("FASTCONV_BENCH_REP_MS", "100"))

# dry mode's tiny shapes
DRY_CHANNELS = 16
DRY_SPATIAL = 8
DRY_ROI = dict(N=1, C=8, H=16, W=16, boxes=4)
DRY_E2E_SIZE = (3, 32, 32)

# Agreement with the baseline, ||fastconv - baseline|| / ||baseline|| over every output and
# gradient: fastconv.numerics' AGREEMENT tables (looser than the per-op tolerances, which
# compare against float64: both sides round here); whole models add up the rounding of tens
# of layers (MODEL_AGREEMENT). float64 is not a benchmark dtype.
BENCH_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

_DTYPE_NAMES = {torch.float16: "float16", torch.bfloat16: "bfloat16", torch.float32: "float32"}


# ---------------------------------------------------------------------------- result rows
@dataclass
class BenchRow:
    """One timed variant: a row of the table and of the CSV (:data:`COLUMNS`)."""
    # what was timed
    name: str                   # the case's name, e.g. "resnet50/layer1.0.conv2/n32"
    group: str                  # the model group (a model, "depthwise", "roi", "e2e", ...)
    layer: str
    op: str                     # conv2d | conv1d | conv_transpose2d | roi_align | roi_pool | model
    direction: str              # forward | backward | both | inference | train_step
    dtype: str
    layout: str                 # nchw | channels_last
    batch: int
    input_shape: str
    weight_shape: str
    output_shape: str
    args: str                   # stride, padding, dilation, groups / RoI parameters
    # the measurement
    fastconv_ms: float = math.nan
    baseline: str = ""          # the faster baseline, the one speedup compares with
    baseline_ms: float = math.nan
    baselines: str = ""         # every baseline timed: "name=ms;name=ms"
    speedup: float = math.nan   # baseline_ms / fastconv_ms: > 1 when fastconv is faster
    # GPU time: the calls captured in a CUDA graph and replayed (fastconv.bench.gpu_time), no
    # host overhead; the four columns above are the eager time. NaN where not measured.
    fastconv_gpu_ms: float = math.nan
    baseline_gpu_ms: float = math.nan    # the baseline fastest on GPU time
    baselines_gpu: str = ""     # every baseline's GPU time: "name=ms;name=ms"
    gpu_speedup: float = math.nan        # baseline_gpu_ms / fastconv_gpu_ms
    tflops: float = math.nan    # fastconv's FLOP/s, in 1e12
    gbps: float = math.nan      # the case's minimum bytes over fastconv's time, in 1e9 B/s
    flops: int = 0
    min_bytes: int = 0
    floor_ms: float = math.nan  # the roofline floor of the case on peak_gpu
    floor_fraction: float = math.nan   # floor_ms / fastconv_ms (1.0: at the roofline)
    bound: str = ""             # compute | memory
    gpu_tflops: float = math.nan         # flops / fastconv_gpu_ms
    gpu_gbps: float = math.nan           # min_bytes / fastconv_gpu_ms
    gpu_floor_fraction: float = math.nan  # floor_ms / fastconv_gpu_ms
    mem_floor_ms: float = math.nan       # the memory floor: min_bytes / peak bandwidth
    gpu_mem_floor_fraction: float = math.nan  # mem_floor_ms / fastconv_gpu_ms
    rel_err: float = math.nan   # worst ||fastconv - baseline|| / ||baseline|| over outputs
    tolerance: float = math.nan
    result: str = ""            # ok | MISMATCH | error
    error: str = ""
    gpu_note: str = ""          # why the GPU-time columns are empty, where they are
    # where and when
    mode: str = ""              # gpu | dry (tiny shapes, interpreter or one host-timed call)
    device: str = ""
    peak_gpu: str = ""          # whose peaks the roofline uses
    tf32: bool = False
    torch: str = ""
    triton: str = ""
    cuda: str = ""
    cudnn: str = ""
    date: str = ""

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


COLUMNS: Tuple[str, ...] = tuple(f.name for f in fields(BenchRow))


@dataclass(frozen=True)
class Environment:
    """The metadata every row carries, and the peaks its roofline uses."""
    mode: str
    device: str
    peak: GpuPeak
    tf32: bool
    torch: str
    triton: str
    cuda: str
    cudnn: str
    date: str

    @property
    def columns(self) -> Dict[str, Any]:
        return dict(mode=self.mode, device=self.device, peak_gpu=self.peak.name, tf32=self.tf32,
                    torch=self.torch, triton=self.triton, cuda=self.cuda, cudnn=self.cudnn,
                    date=self.date)


def environment(device: torch.device, dry: bool) -> Environment:
    """Versions, date, device name and the GPU peaks for ``device``. On the CPU the roofline
    columns still need peaks: those of the default sm_90 GPU (dry mode's floors are therefore
    not comparable with its CPU times, which measure nothing anyway)."""
    import triton

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        major, minor = torch.cuda.get_device_capability(device)
        peak = gpu_for(name, major * 10 + minor)
    else:
        name = "cpu (triton interpreter)" if INTERPRETING else "cpu"
        peak = gpu_for(None, 90)
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return Environment(mode="dry" if dry else "gpu", device=name, peak=peak,
                       tf32=device.type == "cuda" and bool(torch.backends.cudnn.allow_tf32),
                       torch=torch.__version__,
                       triton=triton.__version__, cuda=torch.version.cuda or "",
                       cudnn=str(cudnn or ""), date=datetime.date.today().isoformat())


def dtype_name(dtype: torch.dtype) -> str:
    return _DTYPE_NAMES.get(dtype, str(dtype).replace("torch.", ""))


def _shape(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape)


def describe(case: Case) -> Dict[str, str]:
    """The descriptive columns of a case: layer, shapes and arguments as strings."""
    if isinstance(case, RoICase):
        args = f"scale={case.spatial_scale:g}"
        if case.op == "roi_align":
            args += f" sampling_ratio={case.sampling_ratio} aligned={case.aligned}"
        return dict(layer=case.name, input_shape=_shape(case.input_shape),
                    weight_shape=f"rois {case.boxes}x5", output_shape=_shape(case.output_shape),
                    args=args)
    if case.op == "conv1d":
        args = f"s{case.stride[1]} p{case.padding[1]} d{case.dilation[1]} g{case.groups}"
    else:
        args = (f"s{_shape(case.stride)} p{_shape(case.padding)} d{_shape(case.dilation)} "
                f"g{case.groups}")
        if case.op == "conv_transpose2d":
            args += f" op{_shape(case.output_padding)}"
    if case.bias:
        args += " bias"
    return dict(layer=case.layer, input_shape=_shape(case.input_shape),
                weight_shape=_shape(case.weight_shape), output_shape=_shape(case.output_shape),
                args=args)


# ---------------------------------------------------------------------------- dry mode
def shrink(case: Case) -> Case:
    """The case at dry mode's tiny size, keeping what picks the kernel family: kernel size,
    stride, padding, dilation, channels per group up to 16 (the direct kernel below 16, the
    implicit GEMM from 16), depthwise-ness and the op. Batch 1, at most 16 channels per group
    and 8 pixels a side (more where the window needs them)."""
    if isinstance(case, RoICase):
        return replace(case, **DRY_ROI)
    if case.depthwise:
        channels = min(case.C, DRY_CHANNELS)
        c_in, c_out, groups = channels, channels, channels
    elif case.groups > 1:
        per_in = min(case.C // case.groups, DRY_CHANNELS)
        per_out = min(case.K // case.groups, DRY_CHANNELS)
        groups = max(2, DRY_CHANNELS // max(per_in, per_out))
        c_in, c_out = per_in * groups, per_out * groups
    else:
        c_in, c_out, groups = min(case.C, DRY_CHANNELS), min(case.K, DRY_CHANNELS), 1

    def side(size: int, kernel: int, dilation: int) -> int:
        # at least one window must fit even without padding
        return min(size, max(DRY_SPATIAL, dilation * (kernel - 1) + 1))

    return replace(case, N=1, C=c_in, K=c_out, groups=groups,
                   H=side(case.H, case.R, case.dilation[0]),
                   W=side(case.W, case.S, case.dilation[1]))


# ---------------------------------------------------------------------------- inputs
def _to_layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """``t`` in the memory layout: channels_last for 4-D tensors, and for 3-D ones (conv1d) the
    strides of a [N, L, C] tensor seen as [N, C, L]."""
    if layout == "nchw":
        return t.contiguous()
    if layout != "channels_last":
        raise ValueError(f"layout must be 'nchw' or 'channels_last', got {layout!r}")
    if t.dim() == 4:
        return t.contiguous(memory_format=torch.channels_last)
    if t.dim() == 3:
        return t.transpose(1, 2).contiguous().transpose(1, 2)
    return t.contiguous()


def _set_bytes(case: Case, dtype: torch.dtype, direction: str) -> int:
    size = torch.empty((), dtype=dtype).element_size()
    values = math.prod(case.input_shape)
    if isinstance(case, ConvCase):
        values += math.prod(case.weight_shape)
    if direction != "forward":
        values += math.prod(case.output_shape)  # the output gradient
    return values * size


def rotation_sets(case: Case, dtype: torch.dtype, direction: str, dry: bool = False) -> int:
    """How many input sets to cycle through (see :data:`ROTATION_BYTES`)."""
    if dry:
        return MIN_SETS
    want = math.ceil(ROTATION_BYTES / max(_set_bytes(case, dtype, direction), 1))
    return max(MIN_SETS, min(MAX_SETS, want))


def make_inputs(case: Case, dtype: torch.dtype, layout: str, direction: str,
                device: Union[str, torch.device], sets: int, seed: int = 0) -> List[dict]:
    """``sets`` independent input sets for ``case``: ``x`` (and ``w``, ``b`` for a convolution,
    ``rois`` for an RoI op) and, unless the direction is forward, the output gradient
    ``grad``; in ``layout``, and requiring grad where the direction differentiates.

    Weights are scaled by 1/sqrt(fan-in) so that outputs stay O(1) in float16."""
    if direction not in ("forward", "backward", "both"):
        raise ValueError(f"direction must be 'forward', 'backward' or 'both', got {direction!r}")
    if dtype not in BENCH_DTYPES:
        raise ValueError(f"dtype must be float16, bfloat16 or float32, got {dtype}")
    device = torch.device(device)
    grad = direction != "forward"
    # drawn on the device: on the host, batch-32 VGG layers would take seconds per tensor
    g = torch.Generator(device=device).manual_seed(seed)

    def rand(shape, scale=1.0):
        t = torch.randn(shape, generator=g, device=device, dtype=torch.float32) * scale
        return _to_layout(t.to(dtype), layout)

    out = []
    for _ in range(sets):
        s = {"x": rand(case.input_shape).requires_grad_(grad)}
        if isinstance(case, RoICase):
            s["rois"] = case.make_rois(device=device, dtype=dtype)
        else:
            fan_in = math.prod(case.weight_shape[1:])
            if case.op == "conv_transpose2d":
                fan_in = case.weight_shape[0] // case.groups * math.prod(case.weight_shape[2:])
            s["w"] = rand(case.weight_shape, fan_in ** -0.5).requires_grad_(grad)
            if case.bias:
                s["b"] = rand((case.K,)).requires_grad_(grad)
        if grad:
            s["grad"] = rand(case.output_shape)
        out.append(s)
    return out


# ---------------------------------------------------------------------------- contenders
def _cudnn(enabled: bool) -> Callable[[], ContextManager]:
    """A factory of contexts with cuDNN on (autotuned: ``benchmark=True``) or off (PyTorch's
    own kernels, e.g. its native depthwise convolution). Only these two flags are touched:
    ``torch.backends.cudnn.flags()`` would also reset TF32 and the fp32 precision."""
    @contextlib.contextmanager
    def context():
        cudnn = torch.backends.cudnn
        saved = cudnn.enabled, cudnn.benchmark
        cudnn.enabled, cudnn.benchmark = enabled, True
        try:
            yield
        finally:
            cudnn.enabled, cudnn.benchmark = saved
    return context


@dataclass
class Contender:
    """One implementation of a variant, ready to time.

    ``fn()`` runs the next input set (cycling); ``first()`` runs the first set and returns the
    tensors to compare (the output, the gradients, or both). Build, compare and time inside
    ``context()``: it holds the backend flags the contender is defined by."""
    name: str
    fn: Callable[[], Any]
    first: Callable[[], List[torch.Tensor]]
    context: Callable[[], ContextManager] = contextlib.nullcontext
    # a fresh rotating call like ``fn``, its autograd graphs (backward) built on the current
    # stream: what a CUDA graph captures (fastconv.bench.gpu_time); None: ``fn`` itself
    rotating: Optional[Callable[[], Callable[[], Any]]] = None


def _as_list(out) -> List[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for o in out for t in _as_list(o)]


def _runner(forward: Callable[[dict], torch.Tensor], sets: List[dict], direction: str,
            wrt: Sequence[str]) -> Tuple[Callable[[], Any], Callable[[], List[torch.Tensor]]]:
    """The (rotating call, first-set call) pair of ``forward`` for a direction.

    backward differentiates graphs built here, once per set and kept (``retain_graph``), so
    that only the backward pass is timed."""
    def grads(y, s, retain):
        return torch.autograd.grad(y, [s[n] for n in wrt], s["grad"], retain_graph=retain)

    if direction == "forward":
        def call(s):
            return forward(s)
    elif direction == "both":
        def call(s):
            y = forward(s)
            return (y, *grads(y, s, False))
    else:
        graphs = {id(s): forward(s) for s in sets}  # the sets outlive the graphs: ids hold

        def call(s):
            return grads(graphs[id(s)], s, True)
    order = itertools.cycle(sets)
    return (lambda: call(next(order))), (lambda: _as_list(call(sets[0])))


def _conv_forwards(case: ConvCase) -> Tuple[Callable, Callable]:
    """(fastconv, torch) forward functions of an input set."""
    if case.op == "conv1d":
        kw = dict(stride=case.stride[1], padding=case.padding[1], dilation=case.dilation[1],
                  groups=case.groups)
        fast, ref = FF.conv1d, F.conv1d
    elif case.op == "conv_transpose2d":
        kw = dict(stride=case.stride, padding=case.padding, output_padding=case.output_padding,
                  groups=case.groups, dilation=case.dilation)
        fast, ref = FF.conv_transpose2d, F.conv_transpose2d
    elif case.op == "conv2d":
        kw = dict(stride=case.stride, padding=case.padding, dilation=case.dilation,
                  groups=case.groups)
        fast, ref = FF.conv2d, F.conv2d
    else:
        raise ValueError(f"unknown convolution op {case.op!r}")
    return (lambda s: fast(s["x"], s["w"], s.get("b"), **kw),
            lambda s: ref(s["x"], s["w"], s.get("b"), **kw))


def _roi_forwards(case: RoICase, sets: List[dict],
                  direction: str) -> Tuple[Callable, Callable, str]:
    """(fastconv, torchvision) forward functions of an input set, and the baseline's name.

    torchvision has no bfloat16 RoI kernels on the CPU: there (and wherever its kernel refuses
    the dtype) the baseline computes in float32 and says so in its name."""
    import torchvision.ops as tvops

    if case.op == "roi_align":
        kw = dict(output_size=case.output_size, spatial_scale=case.spatial_scale,
                  sampling_ratio=case.sampling_ratio, aligned=case.aligned)
        fast, ref = FF.roi_align, tvops.roi_align
    elif case.op == "roi_pool":
        kw = dict(output_size=case.output_size, spatial_scale=case.spatial_scale)
        fast, ref = FF.roi_pool, tvops.roi_pool
    else:
        raise ValueError(f"unknown RoI op {case.op!r}")

    def native(s):
        return ref(s["x"], s["rois"], **kw)

    def via_float32(s):
        return ref(s["x"].float(), s["rois"].float(), **kw).to(s["x"].dtype)

    def runs_natively() -> bool:
        # the backward kernel may lack a dtype the forward has: try what will be timed
        x = sets[0]["x"].detach().requires_grad_(direction != "forward")
        try:
            y = native({"x": x, "rois": sets[0]["rois"]})
            if x.requires_grad:
                y.sum().backward()
        except (RuntimeError, NotImplementedError):
            return False
        return True

    if runs_natively():
        return (lambda s: fast(s["x"], s["rois"], **kw)), native, "torchvision"
    return (lambda s: fast(s["x"], s["rois"], **kw)), via_float32, "torchvision (float32)"


def contenders(case: Case, dtype: torch.dtype, layout: str, direction: str,
               device: Union[str, torch.device], sets: Optional[int] = None, dry: bool = False,
               guard: Optional[Callable[[], ContextManager]] = None,
               ) -> Tuple[Contender, List[Contender]]:
    """fastconv's contender and the baselines' for one variant, on shared input sets.

    Args:
        case: a :class:`~fastconv.bench.cases.ConvCase` or
            :class:`~fastconv.bench.cases.RoICase`, at the size to run.
        dtype: float16, bfloat16 or float32.
        layout: "nchw" or "channels_last".
        direction: "forward", "backward" or "both".
        device: where the tensors live ("cuda"; "cpu" under the interpreter).
        sets: input sets to rotate through (default :func:`rotation_sets`).
        dry: dry mode: fastconv runs with the interpreter's larger blocks
            (:func:`fastconv.ops.target.larger_interpreter_blocks`; the kernel tests keep the
            default blocks, here they would only add time).
        guard: a context factory entered around everything fastconv runs, e.g. one that makes
            ATen's convolution raise, to prove that fastconv's kernels did the work.

    Returns:
        (fastconv, baselines): baselines are torch with cuDNN autotuned ("torch"), plus
        PyTorch's own kernels with cuDNN off ("torch-native") for depthwise layers; or
        torchvision for RoI ops.
    """
    sets = sets or rotation_sets(case, dtype, direction, dry)
    inputs = make_inputs(case, dtype, layout, direction, device, sets)
    fast_context = _stack(guard, larger_interpreter_blocks if dry else None)

    if isinstance(case, RoICase):
        fast_fwd, ref_fwd, ref_name = _roi_forwards(case, inputs, direction)
        wrt = ("x",)
        refs = [(ref_name, ref_fwd, contextlib.nullcontext)]
    else:
        fast_fwd, ref_fwd = _conv_forwards(case)
        wrt = ("x", "w", "b") if case.bias else ("x", "w")
        refs = [("torch", ref_fwd, _cudnn(True))]
        if case.depthwise:
            refs.append(("torch-native", ref_fwd, _cudnn(False)))

    def rotating(fwd):
        return lambda: _runner(fwd, inputs, direction, wrt)[0]

    with fast_context():
        fast = Contender("fastconv", *_runner(fast_fwd, inputs, direction, wrt), fast_context,
                         rotating(fast_fwd))
    baselines = []
    for name, fwd, context in refs:
        with context():
            baselines.append(Contender(name, *_runner(fwd, inputs, direction, wrt), context,
                                       rotating(fwd)))
    return fast, baselines


def _stack(*factories: Optional[Callable[[], ContextManager]]) -> Callable[[], ContextManager]:
    """One context factory entering each of ``factories`` (None skipped)."""
    chosen = [f for f in factories if f is not None]

    @contextlib.contextmanager
    def context():
        with contextlib.ExitStack() as stack:
            for f in chosen:
                stack.enter_context(f())
            yield
    return context


# ---------------------------------------------------------------------------- end to end
@dataclass(frozen=True)
class E2ECase:
    """A whole model of ``fastconv.models``: inference, or one training step."""
    model: str
    N: int
    size: Tuple[int, int, int] = (3, 224, 224)
    op: str = "model"

    @property
    def name(self) -> str:
        return f"e2e/{self.model}/n{self.N}"

    @property
    def input_shape(self) -> Tuple[int, ...]:
        return (self.N, *self.size)


def e2e_flops(case: E2ECase, mode: str) -> int:
    """2 x the model's MACs (fastconv.summary, on the meta device) for inference; three
    passes' worth (forward, input and weight gradients) for a training step."""
    from fastconv import models
    from fastconv.summary import summarize

    with torch.device("meta"):
        model = models.get_model(case.model)
    macs = summarize(model, case.size, batch=case.N).total_macs
    return 2 * macs * (3 if mode == "train_step" else 1)


def e2e_contenders(case: E2ECase, dtype: torch.dtype, layout: str, mode: str,
                   device: Union[str, torch.device], sets: Optional[int] = None,
                   dry: bool = False, guard: Optional[Callable[[], ContextManager]] = None,
                   seed: int = 0) -> Tuple[Contender, List[Contender]]:
    """fastconv's model and torch's (the same weights, :func:`fastconv.unconvert`) as
    contenders: ``mode`` "inference" (eval, no grad) or "train_step" (train mode: forward,
    cross-entropy, backward, SGD step). ``first()`` returns the logits of the first input set,
    before any step changed the weights. Arguments as for :func:`contenders`."""
    from fastconv import models

    if mode not in E2E_MODES:
        raise ValueError(f"mode must be one of {E2E_MODES}, got {mode!r}")
    device = torch.device(device)
    sets = sets or (MIN_SETS if dry else 4)
    torch.manual_seed(seed)
    fast_model = models.get_model(case.model)
    ref_model = fastconv.unconvert(fast_model)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    g = torch.Generator().manual_seed(seed)
    inputs = [(_to_layout(torch.randn(case.input_shape, generator=g).to(device, dtype), layout),
               torch.randint(0, 1000, (case.N,), generator=g).to(device)) for _ in range(sets)]
    fast_context = _stack(guard, larger_interpreter_blocks if dry else None)

    def contender(name, model, context):
        model = model.to(device=device, dtype=dtype, memory_format=fmt)
        if mode == "inference":
            model.eval()

            def call(x, _):
                with torch.no_grad():
                    return model(x)
        else:
            model.train()
            optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)

            def call(x, y):
                out = model(x)
                # the labels are drawn for 1000 classes; any head size works
                loss = F.cross_entropy(out.float(), y % out.shape[1])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                return out.detach()
        order = itertools.cycle(inputs)
        return Contender(name, lambda: call(*next(order)), lambda: [call(*inputs[0])], context)

    # first() runs before fn() in measure(), so both models compare from the same weights
    return (contender("fastconv", fast_model, fast_context),
            [contender("torch", ref_model, _cudnn(True))])


# ---------------------------------------------------------------------------- timing
def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn: Callable[[], Any], device: Union[str, torch.device], dry: bool = False) -> float:
    """Milliseconds per call of ``fn``: on a GPU ``triton.testing.do_bench``'s median (it warms
    up and flushes L2 between repetitions); in dry mode one call on a host clock (do_bench
    needs a CUDA device, and under the interpreter one call is all a test can afford)."""
    device = torch.device(device)
    if dry or device.type != "cuda":
        _synchronize(device)
        start = time.perf_counter()
        fn()
        _synchronize(device)
        return (time.perf_counter() - start) * 1e3
    import triton.testing
    return triton.testing.do_bench(fn, warmup=WARMUP_MS, rep=REP_MS, return_mode="median")


def worst_rel_err(outs: List[torch.Tensor], refs: List[torch.Tensor]) -> float:
    """The worst ||out - ref|| / ||ref|| over paired tensors, in float64; NaN where a
    non-finite value appears in ``out`` only."""
    worst = 0.0
    if len(outs) != len(refs):
        return math.nan
    for out, ref in zip(outs, refs):
        if out.shape != ref.shape or (not out.isfinite().all() and ref.isfinite().all()):
            return math.nan
        worst = max(worst, numerics.rel_err(out, ref))
    return worst


def tolerance(dtype: torch.dtype, tf32: bool, e2e: bool = False) -> float:
    """The largest rel_err that still counts as agreement."""
    if dtype == torch.float32 and tf32:
        return MODEL_AGREEMENT_TF32 if e2e else AGREEMENT_TF32
    return (MODEL_AGREEMENT if e2e else AGREEMENT)[dtype]


def measure(case: Union[Case, E2ECase], dtype: torch.dtype, layout: str, direction: str,
            device: Union[str, torch.device], env: Environment, dry: bool = False,
            sets: Optional[int] = None,
            guard: Optional[Callable[[], ContextManager]] = None,
            gpu_timer: Optional[Callable[[Contender, float], float]] = None) -> BenchRow:
    """Build, compare and time one variant; its :class:`BenchRow`. A failure of either side is
    recorded in the row (``result="error"``) rather than raised, so one bad case does not end
    a long run.

    Each contender is timed twice: eager time (:func:`time_ms`) and then GPU time, its calls
    captured in a CUDA graph and replayed (:mod:`fastconv.bench.gpu_time`). Where no graph can
    be captured (on the CPU, under Triton's interpreter) the GPU-time columns stay NaN and
    ``gpu_note`` says why; a failed capture does the same and leaves the eager result standing.

    Args:
        case: the case at the size to run (:func:`shrink` it first in dry mode), or an
            :class:`E2ECase` with ``direction`` "inference" or "train_step".
        dtype, layout, direction, device, sets, guard: as for :func:`contenders`.
        env: from :func:`environment`.
        dry: time one call on a host clock instead of ``do_bench``.
        gpu_timer: ``gpu_timer(contender, eager_ms)`` returns its GPU time in ms (default on a
            CUDA device :func:`fastconv.bench.gpu_time.contender_gpu_ms`; elsewhere none).
    """
    device = torch.device(device)
    e2e = isinstance(case, E2ECase)
    # wrong arguments are the caller's bug, raised here, not a failed variant in a row
    directions = E2E_MODES if e2e else DIRECTIONS
    if direction not in directions:
        raise ValueError(f"measure(): direction must be one of {directions} for "
                         f"{type(case).__name__}, got {direction!r}")
    if dtype not in BENCH_DTYPES:
        raise ValueError(f"measure(): dtype must be float16, bfloat16 or float32, got {dtype}")
    if layout not in LAYOUTS:
        raise ValueError(f"measure(): layout must be one of {LAYOUTS}, got {layout!r}")
    if e2e:
        flops = e2e_flops(case, direction)
        nbytes = 0
        shapes = dict(layer=case.model, input_shape=_shape(case.input_shape), weight_shape="",
                      output_shape="", args="")
    else:
        flops, nbytes = case.flops(direction), case.min_bytes(direction, dtype)
        shapes = describe(case)
    tf32 = env.tf32 and dtype == torch.float32
    row = BenchRow(name=case.name, group="e2e" if e2e else case.model, op=case.op,
                   direction=direction, dtype=dtype_name(dtype), layout=layout, batch=case.N,
                   flops=flops, min_bytes=nbytes, tolerance=tolerance(dtype, tf32, e2e),
                   **shapes, **env.columns)
    try:
        if e2e:
            fast, baselines = e2e_contenders(case, dtype, layout, direction, device, sets, dry,
                                             guard)
        else:
            fast, baselines = contenders(case, dtype, layout, direction, device, sets, dry,
                                         guard)
        # the first calls double as warm-up: cudnn.benchmark and Triton's autotuner choose
        # their algorithms here, outside any timing
        with fast.context():
            got = fast.first()
        errs = []
        for b in baselines:
            with b.context():
                errs.append(worst_rel_err(got, b.first()))
        del got
        with fast.context():
            row.fastconv_ms = time_ms(fast.fn, device, dry)
        timed = []
        for b in baselines:
            with b.context():
                timed.append((time_ms(b.fn, device, dry), b.name))
        _synchronize(device)
    except Exception as exc:  # noqa: BLE001 - reported in the row, the run goes on
        row.result, row.error = "error", f"{type(exc).__name__}: {exc}"[:300]
        return _kept(row)
    row.baseline_ms, row.baseline = min(timed)
    row.baselines = ";".join(f"{name}={ms:.4g}" for ms, name in timed)
    row.speedup = row.baseline_ms / row.fastconv_ms
    seconds = row.fastconv_ms * 1e-3
    row.tflops = flops / seconds / 1e12
    if nbytes:
        row.gbps = nbytes / seconds / 1e9
        floor = env.peak.floor_seconds(flops, nbytes, dtype, tf32)
        row.floor_ms = floor * 1e3
        row.floor_fraction = floor / seconds
        row.bound = env.peak.bound(flops, nbytes, dtype, tf32)
    # the worst agreement over the baselines: each one must agree
    row.rel_err = max(errs) if all(e == e for e in errs) else math.nan
    row.result = "ok" if row.rel_err <= row.tolerance else "MISMATCH"
    _gpu_times(row, fast, baselines, [ms for ms, _ in timed], device, env, gpu_timer)
    return _kept(row)


# each row, as soon as it is measured, appended to this CSV (benchmarks/gpu_run.sh sets it, so
# that a run cut short by its timeout still leaves the rows it measured)
PARTIAL_CSV_ENV = "FASTCONV_BENCH_PARTIAL_CSV"


def _kept(row: BenchRow) -> BenchRow:
    path = os.environ.get(PARTIAL_CSV_ENV)
    if path:
        import csv

        new = not os.path.exists(path) or os.path.getsize(path) == 0
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            if new:
                writer.writeheader()
            writer.writerow(row.as_dict())
    return row


def _gpu_times(row: BenchRow, fast: Contender, baselines: List[Contender],
               baseline_eager_ms: List[float], device: torch.device, env: Environment,
               gpu_timer: Optional[Callable[[Contender, float], float]]) -> None:
    """Fill the GPU-time columns of ``row`` (after its eager ones): each contender's GPU time,
    the faster baseline's, the speedup and fastconv's TFLOP/s, GB/s and fractions of the
    floors on that time. A contender whose graph fails has NaN and a word in ``gpu_note``."""
    if row.min_bytes:
        row.mem_floor_ms = row.min_bytes / env.peak.bandwidth * 1e3
    if gpu_timer is None:
        if device.type != "cuda" or INTERPRETING:
            row.gpu_note = "no CUDA graph off the GPU"
            return
        from fastconv.bench.gpu_time import contender_gpu_ms
        gpu_timer = contender_gpu_ms
    notes = []

    def timed(contender: Contender, eager_ms: float) -> float:
        try:
            with contender.context():
                ms = gpu_timer(contender, eager_ms)
            _synchronize(device)
            return ms
        except Exception as exc:  # noqa: BLE001 - reported in the row, the run goes on
            notes.append(f"{contender.name}: {type(exc).__name__}: {exc}"[:150])
            return math.nan

    row.fastconv_gpu_ms = timed(fast, row.fastconv_ms)
    times = [(timed(b, ms), b.name) for b, ms in zip(baselines, baseline_eager_ms)]
    row.baselines_gpu = ";".join(f"{name}={ms:.4g}" for ms, name in times)
    finite = [t for t in times if t[0] == t[0]]
    if finite:
        row.baseline_gpu_ms = min(finite)[0]
    row.gpu_note = "; ".join(notes)
    ms = row.fastconv_gpu_ms
    if not (ms > 0 and math.isfinite(ms)):
        return
    row.gpu_speedup = row.baseline_gpu_ms / ms
    row.gpu_tflops = row.flops / ms / 1e9
    if row.min_bytes:
        row.gpu_gbps = row.min_bytes / ms / 1e6
        row.gpu_floor_fraction = row.floor_ms / ms
        row.gpu_mem_floor_fraction = row.mem_floor_ms / ms


__all__ = ["BenchRow", "COLUMNS", "Contender", "E2ECase", "E2E_MODELS", "E2E_MODES",
           "Environment", "environment", "shrink", "make_inputs", "rotation_sets",
           "contenders", "e2e_contenders", "e2e_flops", "time_ms", "rel_err", "tolerance",
           "measure", "describe", "dtype_name"]
