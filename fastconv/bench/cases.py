"""The benchmark cases: what ``fastconv bench``, the pytest-benchmark suite in ``benchmarks/`` and
the per-case compile report all measure.

* every distinct convolution layer of ResNet-50, VGG-16, MobileNetV2, ResNeXt-50 (32x4d) and
  ShuffleNet V2 (x1.0) at 224x224, each at batch 1 and 32; depthwise layers form a group of
  their own (``model == "depthwise"``), since their baseline and their kernel family differ;
* conv1d cases (audio / sequence shapes) and conv_transpose2d cases (U-Net's decoder, a DCGAN
  generator);
* RoIAlign and RoIPool on detectron2's benchmark shape: input 1x512x256x256, 512 boxes, 7x7
  output, sampling_ratio 0 and 2 (RoIAlign).

The layers are read off the models themselves (a forward on the meta device with hooks), so the
list follows the model zoo. Each case knows its FLOPs and the bytes it must move at least, the
two numbers a roofline needs.
"""
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Dict, Iterator, List, Optional, Tuple, Union

import torch
import torch.nn as nn

# the models whose convolution layers are benchmarked, with fastconv.models names
CONV_MODELS = ("resnet50", "vgg16", "mobilenet_v2", "resnext50_32x4d", "shufflenet_v2_x1_0")
BATCHES = (1, 32)
DIRECTIONS = ("forward", "backward", "both")
DTYPES = (torch.float16, torch.bfloat16, torch.float32)
LAYOUTS = ("nchw", "channels_last")


def _pair(v) -> Tuple[int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


@dataclass(frozen=True)
class ConvCase:
    """One convolution: torch's conv2d / conv1d / conv_transpose2d arguments, and where it comes
    from; the benchmark's cases and the tests' sweeps alike. conv1d is stored as a conv2d with
    H = 1 (R = 1), which is how it runs. A benchmark case leaves ``dtype`` and the layout to the
    benchmark (it runs each case in every dtype and layout); a test case fixes them.

    ``padding`` may also be conv2d's "same" or "valid". The shape arithmetic is the library's
    (:mod:`fastconv.conv.shapes`); :meth:`problem` is the case as the plan sees it.
    """
    N: int
    C: int
    H: int
    W: int
    K: int
    R: int
    S: int
    stride: Tuple[int, int] = (1, 1)
    padding: Union[str, Tuple[int, int]] = (0, 0)
    dilation: Tuple[int, int] = (1, 1)
    groups: int = 1
    dtype: Optional[torch.dtype] = None   # None: every dtype the benchmark runs
    channels_last: bool = False
    bias: bool = False
    op: str = "conv2d"          # "conv2d" | "conv1d" | "conv_transpose2d"
    model: str = ""             # source model, or "depthwise" / "conv1d" / "conv_transpose2d"
    layer: str = ""             # the first module with this shape (e.g. "layer1.0.conv2")
    output_padding: Tuple[int, int] = (0, 0)

    @property
    def depthwise(self) -> bool:
        return self.groups > 1 and self.groups == self.C == self.K

    @property
    def name(self) -> str:
        """Short, unique within the benchmark's list: model/layer/batch."""
        return f"{self.model}/{self.layer}/n{self.N}"

    @property
    def id(self) -> str:
        """Every argument in one string (a test's parameter id)."""
        pad = self.padding if isinstance(self.padding, str) else "x".join(map(str, self.padding))
        dtype = "" if self.dtype is None else "-" + str(self.dtype)[6:]
        return (f"n{self.N}c{self.C}h{self.H}w{self.W}k{self.K}r{self.R}s{self.S}"
                f"-st{self.stride[0]}x{self.stride[1]}-p{pad}-d{self.dilation[0]}x{self.dilation[1]}"
                f"-g{self.groups}{dtype}{'-cl' if self.channels_last else ''}"
                f"{'-bias' if self.bias else ''}")

    @property
    def input_shape(self) -> Tuple[int, ...]:
        return (self.N, self.C, self.W) if self.op == "conv1d" else (self.N, self.C, self.H, self.W)

    @property
    def weight_shape(self) -> Tuple[int, ...]:
        if self.op == "conv_transpose2d":
            return (self.C, self.K // self.groups, self.R, self.S)
        if self.op == "conv1d":
            return (self.K, self.C // self.groups, self.S)
        return (self.K, self.C // self.groups, self.R, self.S)

    @property
    def pads(self) -> Tuple[int, int]:
        """The padding in elements ("same": the left side's, as conv2d pads it)."""
        if self.padding == "valid":
            return (0, 0)
        if self.padding == "same":
            return tuple(d * (k - 1) // 2 for d, k in zip(self.dilation, (self.R, self.S)))
        return tuple(self.padding)

    @property
    def output_hw(self) -> Tuple[int, int]:
        if self.padding == "same":
            return (self.H, self.W)
        if self.op == "conv_transpose2d":
            from fastconv.conv.transpose_op import conv_transpose2d_output_shape
            return tuple(conv_transpose2d_output_shape(
                (self.N, self.C, self.H, self.W), self.weight_shape, self.stride, self.pads,
                self.output_padding, self.groups, self.dilation)[2:])
        from fastconv.conv.shapes import conv2d_output_shape
        return tuple(conv2d_output_shape((self.N, self.C, self.H, self.W),
                                         (self.K, self.C // self.groups, self.R, self.S),
                                         self.stride, self.pads, self.dilation)[2:])

    @property
    def output_shape(self) -> Tuple[int, ...]:
        p, q = self.output_hw
        return (self.N, self.K, q) if self.op == "conv1d" else (self.N, self.K, p, q)

    def problem(self, dtype: Optional[torch.dtype] = None):
        """The conv2d whose fprop, dgrad and wgrad the case's passes run, as the plan sees it
        (:class:`fastconv.conv.plan.ConvProblem`). A transposed convolution's is the conv2d
        from its output back to its input (its forward is that conv2d's dgrad)."""
        from fastconv.conv.plan import ConvProblem
        dtype = dtype or self.dtype or torch.float32
        p, q = self.output_hw
        if self.op == "conv_transpose2d":
            return ConvProblem(self.N, self.K, p, q, self.C, self.H, self.W, self.R, self.S,
                               self.groups, dtype, self.stride, self.pads, self.dilation)
        return ConvProblem(self.N, self.C, self.H, self.W, self.K, p, q, self.R, self.S,
                           self.groups, dtype, self.stride, self.pads, self.dilation)

    def macs(self) -> int:
        """Multiply-accumulates of the forward pass (a transposed conv: per input pixel)."""
        pb = self.problem()
        return pb.N * pb.P * pb.Q * pb.K * pb.CG * pb.R * pb.S

    def flops(self, direction: str = "forward") -> int:
        """2 x MACs per pass: the forward is one pass, the backward two (input and weight
        gradients), "both" three."""
        passes = {"forward": 1, "backward": 2, "both": 3}[direction]
        return 2 * self.macs() * passes

    def min_bytes(self, direction: str, dtype: torch.dtype) -> int:
        """Bytes each pass must read and write at least: every operand once.

        forward: read x, w, write y. backward: read dy, x, w; write dx, dw. both: the sum.
        """
        size = torch.empty((), dtype=dtype).element_size()
        x, w, y = (_numel(s) for s in (self.input_shape, self.weight_shape, self.output_shape))
        fwd = x + w + y
        bwd = y + x + w + x + w
        return size * {"forward": fwd, "backward": bwd, "both": fwd + bwd}[direction]

    def at_batch(self, n: int) -> "ConvCase":
        return replace(self, N=n)

    def tensors(self, seed: int):
        """(x, w, bias or None) of a conv2d test case on the CPU: seeded normal values (the
        weight scaled by 1/sqrt(fan-in)) in the case's dtype, x in its layout."""
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(self.N, self.C, self.H, self.W, generator=gen)
        fan_in = self.C // self.groups * self.R * self.S
        w = torch.randn(self.K, self.C // self.groups, self.R, self.S, generator=gen) / fan_in ** 0.5
        b = torch.randn(self.K, generator=gen) if self.bias else None
        dtype = self.dtype or torch.float32
        x, w = x.to(dtype), w.to(dtype)
        b = b.to(dtype) if b is not None else None
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, w, b


@dataclass(frozen=True)
class RoICase:
    """RoIAlign / RoIPool on an [N, C, H, W] feature map with ``boxes`` boxes."""
    op: str                      # "roi_align" | "roi_pool"
    N: int = 1
    C: int = 512
    H: int = 256
    W: int = 256
    boxes: int = 512
    output_size: Tuple[int, int] = (7, 7)
    spatial_scale: float = 1.0
    sampling_ratio: int = 0      # roi_align only
    aligned: bool = True         # roi_align only
    model: str = "roi"
    seed: int = 0

    @property
    def name(self) -> str:
        extra = f"/sr{self.sampling_ratio}" if self.op == "roi_align" else ""
        return f"{self.op}{extra}/{self.boxes}x{self.C}x{self.output_size[0]}x{self.output_size[1]}"

    @property
    def input_shape(self) -> Tuple[int, ...]:
        return (self.N, self.C, self.H, self.W)

    @property
    def output_shape(self) -> Tuple[int, ...]:
        return (self.boxes, self.C, *self.output_size)

    def make_rois(self, device="cpu", dtype=torch.float32) -> torch.Tensor:
        """[boxes, 5] rows (batch index, x1, y1, x2, y2): detectron2's benchmark draws random
        boxes over the image; sides from 1/32 to 1/2 of it, fixed seed."""
        g = torch.Generator().manual_seed(self.seed)
        size = torch.tensor([self.W, self.H], dtype=torch.float64) / self.spatial_scale
        xy = torch.rand(self.boxes, 2, generator=g, dtype=torch.float64) * size * 0.5
        wh = (torch.rand(self.boxes, 2, generator=g, dtype=torch.float64) * (0.5 - 1 / 32)
              + 1 / 32) * size
        idx = torch.randint(0, self.N, (self.boxes, 1), generator=g).to(torch.float64)
        return torch.cat([idx, xy, xy + wh], dim=1).to(device=device, dtype=dtype)

    def flops(self, direction: str = "forward") -> int:
        """Interpolation arithmetic: RoIAlign takes 4 taps x (mul + add) per sample, with
        sampling_ratio 0 taken as 2x2 samples per bin (its average on this shape); RoIPool one
        comparison per input value a bin covers, estimated as one per output value here
        (memory-bound either way)."""
        outputs = _numel(self.output_shape)
        if self.op == "roi_pool":
            per = 1
        else:
            samples = (self.sampling_ratio or 2) ** 2
            per = samples * 8
        passes = {"forward": 1, "backward": 1, "both": 2}[direction]
        return outputs * per * passes

    def min_bytes(self, direction: str, dtype: torch.dtype) -> int:
        """Forward: write the output and read the boxes (the input reads depend on the boxes;
        at least once per output value's taps is not a floor, so only the output counts).
        Backward: read the output gradient, write (zero and add into) the input gradient."""
        size = torch.empty((), dtype=dtype).element_size()
        out = _numel(self.output_shape) * size + self.boxes * 5 * size
        grad_in = _numel(self.input_shape) * size
        fwd, bwd = out, out + grad_in
        return {"forward": fwd, "backward": bwd, "both": fwd + bwd}[direction]


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _conv_layers(name: str) -> List[ConvCase]:
    """The distinct nn.Conv2d layers of fastconv.models' ``name`` at 224x224, batch 1, in the
    order the forward pass meets them."""
    import fastconv.models as models

    with torch.device("meta"):
        model = models.get_model(name).eval()
    found: Dict[tuple, ConvCase] = {}

    def hook(module, args, _output, layer):
        x = args[0]
        case = ConvCase(
            op="conv2d", model=name, layer=layer, N=1, C=x.shape[1], H=x.shape[2], W=x.shape[3],
            K=module.out_channels, R=module.kernel_size[0], S=module.kernel_size[1],
            stride=_pair(module.stride), padding=_pair(module.padding),
            dilation=_pair(module.dilation), groups=module.groups, bias=module.bias is not None)
        key = (case.C, case.H, case.W, case.K, case.R, case.S, case.stride, case.padding,
               case.dilation, case.groups, case.bias)
        found.setdefault(key, case)

    handles = [m.register_forward_hook(lambda mod, a, o, _l=layer: hook(mod, a, o, _l))
               for layer, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model(*models.example_inputs(name, 1, models.default_input_size(name),
                                         device="meta"))
    finally:
        for h in handles:
            h.remove()
    return list(found.values())


# sequence models' shapes: (name, C, L, K, kernel, stride, padding, dilation, groups)
_CONV1D = (
    ("wav2vec_feat0", 1, 16000, 512, 10, 5, 0, 1, 1),      # raw audio front end
    ("wav2vec_feat1", 512, 3199, 512, 3, 2, 0, 1, 1),
    ("tcn_dilated", 256, 2048, 256, 3, 1, 8, 4, 1),         # a dilated temporal block
    ("conformer_dw", 256, 1024, 256, 31, 1, 15, 1, 256),    # depthwise conv module
    ("pointwise", 256, 1024, 512, 1, 1, 0, 1, 1),
)
# (name, C, H, W, K, kernel, stride, padding, output_padding)
_CONV_TRANSPOSE2D = (
    ("unet_up1", 1024, 14, 14, 512, 2, 2, 0, 0),
    ("unet_up4", 128, 112, 112, 64, 2, 2, 0, 0),
    ("dcgan_g2", 512, 4, 4, 256, 4, 2, 1, 0),
    ("dcgan_g4", 128, 16, 16, 64, 4, 2, 1, 0),
    ("upsample3x3", 64, 56, 56, 64, 3, 2, 1, 1),
)


@lru_cache(maxsize=None)
def _model_cases(models: Tuple[str, ...]) -> Tuple[ConvCase, ...]:
    cases = []
    for name in models:
        for case in _conv_layers(name):
            cases.append(replace(case, model="depthwise", layer=f"{name}.{case.layer}")
                         if case.depthwise else case)
    return tuple(cases)


def conv_cases(models=CONV_MODELS, batches=BATCHES) -> List[ConvCase]:
    """Every benchmarked conv2d layer of ``models`` at every batch size; the depthwise ones
    carry ``model="depthwise"`` (and their source model in ``layer``). A depthwise shape that
    two models share is listed once."""
    out, seen = [], set()
    for case in _model_cases(tuple(models)):
        key = None
        if case.depthwise:
            key = replace(case, layer="")
            if key in seen:
                continue
            seen.add(key)
        out.extend(case.at_batch(n) for n in batches)
    return out


def conv1d_cases(batches=BATCHES) -> List[ConvCase]:
    return [ConvCase(n, c, 1, length, k, 1, ks, (1, s), (0, p), (1, d), g, op="conv1d",
                     model="conv1d", layer=name)
            for name, c, length, k, ks, s, p, d, g in _CONV1D for n in batches]


def conv_transpose2d_cases(batches=BATCHES) -> List[ConvCase]:
    return [ConvCase(n, c, h, w, k, ks, ks, (s, s), (p, p), op="conv_transpose2d",
                     model="conv_transpose2d", layer=name, output_padding=(op, op))
            for name, c, h, w, k, ks, s, p, op in _CONV_TRANSPOSE2D for n in batches]


def roi_cases() -> List[RoICase]:
    """detectron2's RoI benchmark shape: RoIAlign with sampling_ratio 0 and 2, and RoIPool."""
    return [RoICase("roi_align", sampling_ratio=0), RoICase("roi_align", sampling_ratio=2),
            RoICase("roi_pool")]


def all_cases(models=CONV_MODELS, batches=BATCHES) -> list:
    return [*conv_cases(models, batches), *conv1d_cases(batches),
            *conv_transpose2d_cases(batches), *roi_cases()]


def select(cases: list, models: Optional[List[str]] = None, ops: Optional[List[str]] = None,
           batches: Optional[List[int]] = None, match: Optional[str] = None) -> list:
    """Filter a case list: by model group, op, batch size, and a substring of the name."""
    out = []
    for c in cases:
        if models and c.model not in models:
            continue
        if ops and c.op not in ops:
            continue
        if batches and isinstance(c, ConvCase) and c.N not in batches:
            continue
        if match and match not in c.name:
            continue
        out.append(c)
    return out


def iter_groups(cases: list) -> Iterator[Tuple[str, list]]:
    """(model group, its cases) in first-seen order."""
    groups: Dict[str, list] = {}
    for c in cases:
        groups.setdefault(c.model, []).append(c)
    yield from groups.items()
