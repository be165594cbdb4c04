"""A seeded generator of valid conv2d configurations, awkward on purpose.

Shapes stay tiny (the interpreter costs milliseconds per program step) but cover primes, 1x1
outputs, batch 1, thin and wide groups, depthwise, 1xk kernels, dilation with stride, kernels
that barely fit the padded input, both memory formats, all three dtypes and bias on/off.
"""
import random
from dataclasses import dataclass
from typing import Optional, Tuple, Union

import torch

from helpers import DTYPES


@dataclass(frozen=True)
class ConvCase:
    N: int
    C: int
    H: int
    W: int
    K: int
    R: int
    S: int
    stride: Tuple[int, int]
    padding: Union[str, Tuple[int, int]]
    dilation: Tuple[int, int]
    groups: int
    dtype: torch.dtype
    channels_last: bool
    bias: bool

    @property
    def id(self) -> str:
        pad = self.padding if isinstance(self.padding, str) else "x".join(map(str, self.padding))
        return (f"n{self.N}c{self.C}h{self.H}w{self.W}k{self.K}r{self.R}s{self.S}"
                f"-st{self.stride[0]}x{self.stride[1]}-p{pad}-d{self.dilation[0]}x{self.dilation[1]}"
                f"-g{self.groups}-{str(self.dtype)[6:]}{'-cl' if self.channels_last else ''}"
                f"{'-bias' if self.bias else ''}")

    def tensors(self, seed: int):
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(self.N, self.C, self.H, self.W, generator=gen)
        fan_in = self.C // self.groups * self.R * self.S
        w = torch.randn(self.K, self.C // self.groups, self.R, self.S, generator=gen) / fan_in ** 0.5
        b = torch.randn(self.K, generator=gen) if self.bias else None
        x, w = x.to(self.dtype), w.to(self.dtype)
        b = b.to(self.dtype) if b is not None else None
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, w, b


def _out(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def random_case(rng: random.Random) -> Optional[ConvCase]:
    kind = rng.choice(["dense", "dense", "thin_dense", "grouped", "depthwise", "pointwise",
                       "pointwise"])
    if kind == "depthwise":
        groups = rng.choice([3, 4, 8, 17])
        cg, kg = 1, rng.choice([1, 1, 2, 3])
    elif kind == "grouped":
        groups = rng.choice([2, 3, 4])
        cg, kg = rng.choice([2, 5, 16, 17, 24]), rng.choice([3, 8, 16, 19])
    elif kind == "thin_dense":
        groups, cg, kg = 1, rng.choice([1, 2, 3, 7, 15]), rng.choice([4, 16, 21, 33])
    elif kind == "pointwise":
        groups, cg, kg = rng.choice([1, 1, 2]), rng.choice([16, 19, 32, 40]), rng.choice([16, 24, 37])
    else:
        groups, cg, kg = 1, rng.choice([16, 17, 31, 32, 48]), rng.choice([5, 16, 23, 32, 64])
    if kind == "pointwise":
        r = s = 1
    else:
        r, s = rng.choice([(1, 1), (2, 2), (3, 3), (3, 3), (5, 5), (1, 3), (3, 1), (7, 7), (2, 5)])
    stride = (rng.choice([1, 1, 2, 3]), rng.choice([1, 1, 2, 3]))
    dilation = (rng.choice([1, 1, 1, 2, 3]), rng.choice([1, 1, 2]))
    if stride == (1, 1) and rng.random() < 0.15:
        padding = rng.choice(["same", "valid"])
    else:
        padding = (rng.randint(0, 3), rng.randint(0, 3))
    if kind == "pointwise" and rng.random() < 0.8:  # mostly the 1x1 GEMM's case, some strided
        stride, padding = (1, 1), (0, 0)
    n = rng.choice([1, 1, 2, 3])
    h, w = rng.randint(1, 13), rng.randint(1, 13)
    pads = (0, 0) if padding == "valid" else (
        tuple((d * (k - 1) + 1) // 2 for d, k in zip(dilation, (r, s))) if padding == "same" else padding)
    if padding != "same" and (_out(h, r, stride[0], pads[0], dilation[0]) < 1
                              or _out(w, s, stride[1], pads[1], dilation[1]) < 1):
        return None
    return ConvCase(n, cg * groups, h, w, kg * groups, r, s, stride, padding, dilation, groups,
                    rng.choice(DTYPES), rng.random() < 0.4, rng.random() < 0.6)


def sweep(count: int, seed: int, generate=None):
    """``count`` cases from ``generate(rng)`` (default: conv2d's ``random_case``), which may
    return None to reject a draw; seeded, so every run tests the same cases."""
    generate = generate or random_case
    rng = random.Random(seed)
    cases = []
    while len(cases) < count:
        case = generate(rng)
        if case is not None:
            cases.append(case)
    return cases
