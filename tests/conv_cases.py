"""A seeded generator of valid conv2d configurations, awkward on purpose.

Shapes stay tiny (the interpreter costs milliseconds per program step) but cover primes, 1x1
outputs, batch 1, thin and wide groups, depthwise, few-channel stems, 1xk kernels, dilation with stride, kernels
that barely fit the padded input, both memory formats, all three dtypes and bias on/off.
"""
import random
from typing import Optional

from fastconv.bench.cases import ConvCase
from fastconv.conv.shapes import conv_output_size
from helpers import DTYPES


def random_case(rng: random.Random) -> Optional[ConvCase]:
    kind = rng.choice(["dense", "dense", "thin_dense", "stem", "stem", "grouped", "depthwise",
                       "depthwise", "pointwise", "pointwise"])
    if kind == "depthwise":
        groups = rng.choice([3, 4, 8, 17])
        cg, kg = 1, rng.choice([1, 1, 2, 3])
    elif kind == "grouped":
        groups = rng.choice([2, 3, 4])
        cg, kg = rng.choice([2, 5, 16, 17, 24]), rng.choice([3, 8, 16, 19])
    elif kind == "stem":  # an image's few channels, dense: the stem family's
        groups, cg, kg = 1, rng.choice([1, 3, 3, 4, 8, 12]), rng.choice([8, 16, 24, 33])
    elif kind == "thin_dense":
        groups, cg, kg = 1, rng.choice([1, 2, 3, 7, 15]), rng.choice([4, 16, 21, 33])
    elif kind == "pointwise":
        groups, cg, kg = rng.choice([1, 1, 2]), rng.choice([16, 19, 32, 40]), rng.choice([16, 24, 37])
    else:
        groups, cg, kg = 1, rng.choice([16, 17, 31, 32, 48]), rng.choice([5, 16, 23, 32, 64])
    if kind == "pointwise":
        r = s = 1
    elif kind == "stem":
        r, s = rng.choice([(3, 3), (5, 5), (7, 7), (2, 5), (3, 1)])
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
    if padding != "same" and (conv_output_size(h, r, stride[0], pads[0], dilation[0]) < 1
                              or conv_output_size(w, s, stride[1], pads[1], dilation[1]) < 1):
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
