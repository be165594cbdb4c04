"""A seeded generator of RoIAlign / RoIPool cases, awkward on purpose.

Shapes stay tiny (the interpreter costs milliseconds per program step) but cover odd and
non-square feature maps down to 1x1, batch 1 to 3, odd channel counts, non-square outputs, every
spatial scale a detector uses (including non-dyadic 0.3), adaptive and fixed sampling, aligned or
not, all four dtypes, NCHW / channels_last / sliced / transposed / sliced channels_last inputs,
and boxes of every kind torchvision accepts: inside, partly outside, wholly outside, degenerate
(zero width or height), inverted (x2 < x1), on integer coordinates, none at all, as
``Tensor[K, 5]`` or as a list of ``Tensor[L, 4]``.

Box coordinates are drawn in image coordinates (feature coordinates divided by the scale) and are
stored in the case as plain floats, so a case is fully determined by its fields; ``boxes()``
rounds them to the case's dtype, and the reference sees those rounded values upcast.
"""
import random
from dataclasses import dataclass
from typing import Optional, Tuple, Union

import torch

DTYPE_NAMES = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16",
               torch.float64: "f64"}
LAYOUTS = ("nchw", "cl", "slice", "transpose", "cl-slice")
SCALES = (1.0, 0.5, 0.25, 0.0625, 0.3)
BOX_KINDS = ("in", "part", "out", "deg", "inv", "int", "big")
_KIND_WEIGHTS = (4, 4, 1, 1, 1, 2, 1)

Box = Tuple[float, float, float, float, float]  # (batch index, x1, y1, x2, y2)


@dataclass(frozen=True)
class RoiCase:
    op: str                                   # "align" or "pool"
    N: int
    C: int
    H: int
    W: int
    dtype: torch.dtype
    layout: str                               # one of LAYOUTS
    output_size: Union[int, Tuple[int, int]]
    spatial_scale: float
    sampling_ratio: int                       # roi_align only
    aligned: bool                             # roi_align only
    rows: Tuple[Box, ...]
    kinds: Tuple[str, ...]
    as_list: bool

    @property
    def K(self) -> int:
        return len(self.rows)

    @property
    def pooled(self) -> Tuple[int, int]:
        o = self.output_size
        return (o, o) if isinstance(o, int) else tuple(o)

    @property
    def id(self) -> str:
        ph, pw = self.pooled
        out = f"o{ph}" if isinstance(self.output_size, int) else f"o{ph}x{pw}"
        extra = ""
        if self.op == "align":
            extra = f"-sr{self.sampling_ratio}{'-al' if self.aligned else ''}"
        kinds = ",".join(self.kinds) if self.kinds else "none"
        return (f"{self.op}-n{self.N}c{self.C}h{self.H}w{self.W}-{out}-s{self.spatial_scale:g}"
                f"{extra}-k{self.K}[{kinds}]{'-list' if self.as_list else ''}"
                f"-{DTYPE_NAMES[self.dtype]}-{self.layout}")

    # ------------------------------------------------------------------ tensors
    def input(self, seed: int, requires_grad: bool = False):
        """(leaf, x): ``x`` [N, C, H, W] in the case's dtype and layout, a view of ``leaf`` for
        the sliced and transposed layouts (``x`` keeps its gradient then, via retain_grad)."""
        gen = torch.Generator().manual_seed(seed)
        N, C, H, W = self.N, self.C, self.H, self.W
        if self.layout == "slice":   # every other channel, rows and columns offset by one
            base = torch.randn(N, 2 * C, H + 2, W + 1, generator=gen)
        elif self.layout == "transpose":
            base = torch.randn(N, C, W, H, generator=gen)
        elif self.layout == "cl-slice":   # channels_last storage, rows cut, every other column
            base = torch.randn(N, C, H + 2, 2 * W, generator=gen)
        else:
            base = torch.randn(N, C, H, W, generator=gen)
        base = base.to(self.dtype)
        if self.layout in ("cl", "cl-slice"):
            base = base.contiguous(memory_format=torch.channels_last)
        leaf = base.requires_grad_(requires_grad)
        if self.layout == "slice":
            x = leaf[:, ::2, 1:H + 1, 1:]
        elif self.layout == "transpose":
            x = leaf.transpose(2, 3)
        elif self.layout == "cl-slice":
            x = leaf[:, :, 1:H + 1, ::2]
        else:
            x = leaf
        if requires_grad and x is not leaf:
            x.retain_grad()
        assert x.shape == (N, C, H, W)
        return leaf, x

    def roi_tensor(self, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """The boxes as Tensor[K, 5], rounded to the case's dtype, then cast to ``dtype``."""
        rois = torch.tensor(self.rows, dtype=torch.float64).reshape(-1, 5).to(self.dtype)
        return rois if dtype is None else rois.to(dtype)

    def boxes(self, dtype: Optional[torch.dtype] = None):
        """The boxes in the case's format: Tensor[K, 5], or one Tensor[L, 4] per image."""
        rois = self.roi_tensor(dtype)
        if not self.as_list:
            return rois
        batch = rois[:, 0].long()
        return [rois[batch == n, 1:].clone() for n in range(self.N)]


def to_rois(boxes) -> torch.Tensor:
    """``list[Tensor[L, 4]]`` or ``Tensor[K, 5]`` -> ``Tensor[K, 5]``, as torchvision does."""
    if isinstance(boxes, torch.Tensor):
        return boxes
    cat = torch.cat(list(boxes), dim=0)
    idx = torch.cat([torch.full((len(b), 1), float(i), dtype=cat.dtype)
                     for i, b in enumerate(boxes)], dim=0)
    return torch.cat([idx, cat], dim=1)


# ---------------------------------------------------------------------------- generation
def _interval(rng: random.Random, kind: str, extent: float, unit: float, wide: bool):
    """(lo, hi) along one axis of an image ``extent`` long; ``unit`` is one feature pixel in
    image coordinates."""
    u = rng.uniform
    if kind == "in":
        lo = u(0, extent)
        return lo, u(lo, extent)
    if kind == "part":
        lo = u(-0.5, 0.8) * extent - u(0, 2) * unit
        return lo, lo + u(0.2, 1.0) * extent + u(0, 2) * unit
    if kind == "out":   # far enough that no sample lands within a pixel of the image
        if rng.random() < 0.5:
            lo = extent + u(1.5, 4) * unit
        else:
            lo = -u(3, 6) * unit - u(0, 0.5) * extent
        return lo, lo + u(0, 1.5) * unit
    if kind == "deg":
        lo = u(-0.5 * unit, extent)
        return lo, lo
    if kind == "inv":
        hi = u(0, extent)
        return hi, hi - u(0, 0.8) * extent - u(0, 1) * unit
    if kind == "big":
        lo = -u(0, 0.3) * extent - u(0, 2) * unit
        return lo, extent + u(0, 0.3) * extent + u(0, 2) * unit
    if kind == "int":
        # integer (RoIPool: or half-integer) feature coordinates; for RoIAlign kept inside
        # [0, size - 1], so that no sample lands exactly on a cut-off (y = -1 or y = H) where
        # float32 and float64 rounding may fall on different sides
        size = round(extent / unit)
        lo_min, hi_max = (-2, size + 2) if wide else (0, max(size - 1, 0))
        a, b = rng.randint(lo_min, hi_max), rng.randint(lo_min, hi_max)
        if wide and rng.random() < 0.5:   # RoIPool rounds x.5 away from zero: -1.5 -> -2
            a, b = a + 0.5, b - 0.5
        if rng.random() < 0.8:
            a, b = min(a, b), max(a, b)
        return a * unit, b * unit
    raise ValueError(kind)


def _box(rng, kind, N, H, W, scale, wide) -> Box:
    unit = 1.0 / scale
    ex, ey = W * unit, H * unit
    if kind == "deg":   # zero width, zero height or a single point, the other side normal
        which = rng.choice(["w", "h", "both"])
        x1, x2 = _interval(rng, "deg" if which != "h" else "in", ex, unit, wide)
        y1, y2 = _interval(rng, "deg" if which != "w" else "in", ey, unit, wide)
    elif kind == "inv":   # inverted along x, y or both
        which = rng.choice(["x", "y", "both"])
        x1, x2 = _interval(rng, "inv" if which != "y" else "in", ex, unit, wide)
        y1, y2 = _interval(rng, "inv" if which != "x" else "in", ey, unit, wide)
    elif kind == "out":   # outside along one axis (or both), anywhere along the other
        which = rng.choice(["x", "y", "both"])
        x1, x2 = _interval(rng, "out" if which != "y" else "part", ex, unit, wide)
        y1, y2 = _interval(rng, "out" if which != "x" else "part", ey, unit, wide)
    else:
        x1, x2 = _interval(rng, kind, ex, unit, wide)
        y1, y2 = _interval(rng, kind, ey, unit, wide)
    return (float(rng.randrange(N)), x1, y1, x2, y2)


def random_roi_case(rng: random.Random, op: Optional[str] = None) -> RoiCase:
    op = op or rng.choice(["align", "align", "pool"])
    dtype = rng.choices([torch.float32, torch.float16, torch.bfloat16, torch.float64],
                        weights=[4, 3, 3, 1])[0]
    N = rng.choice([1, 1, 2, 3])
    C = rng.choice([1, 1, 2, 3, 5, 7, 11, 13, 17, 20])
    H, W = rng.randint(1, 13), rng.randint(1, 13)
    ph, pw = rng.randint(1, 7), rng.randint(1, 7)
    if rng.random() < 0.3:
        output_size = ph
        pw = ph
    else:
        output_size = (ph, pw)
    scale = rng.choice(SCALES)
    sampling_ratio = rng.choice([-1, 0, 1, 2, 3]) if op == "align" else 0
    aligned = op == "align" and rng.random() < 0.5
    K = 0 if rng.random() < 0.06 else rng.randint(1, 6)
    kinds = tuple(rng.choices(BOX_KINDS, weights=_KIND_WEIGHTS, k=K))
    rows = tuple(_box(rng, k, N, H, W, scale, op == "pool") for k in kinds)
    as_list = rng.random() < 0.25
    if as_list:   # a list holds the boxes image by image
        order = sorted(range(K), key=lambda i: rows[i][0])
        rows, kinds = tuple(rows[i] for i in order), tuple(kinds[i] for i in order)
    return RoiCase(op, N, C, H, W, dtype, rng.choice(LAYOUTS), output_size, scale,
                   sampling_ratio, aligned, rows, kinds, as_list)


def roi_sweep(count: int, seed: int, op: Optional[str] = None):
    """``count`` cases, seeded, so every run tests the same ones."""
    rng = random.Random(seed)
    return [random_roi_case(rng, op) for _ in range(count)]
