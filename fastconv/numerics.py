"""How results are compared: one relative error and the tolerances it is held to.

DESIGN.md's numerics: the relative error ||out - ref|| / ||ref||, in float64, where an output
that is not finite where the reference is counts as infinitely wrong.

* ``OP_TOLERANCE``: one op against torch on the same inputs upcast to float64 (the tests).
* ``AGREEMENT``: two implementations that both round, a layer against cuDNN (``fastconv
  bench``) or a whole model against torch's (``fastconv verify``, float64 on the CPU).
* ``MODEL_AGREEMENT``: whole models timed end to end, whose tens of layers add their rounding.

float32 with TF32 on rounds its operands to 10 bits: the ``*_TF32`` bounds apply then.
"""
import math

import torch

OP_TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2,
                torch.float64: 1e-12}
OP_TOLERANCE_TF32 = 5e-3
AGREEMENT = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2,
             torch.float64: 1e-10}
AGREEMENT_TF32 = 1e-2
MODEL_AGREEMENT = {torch.float32: 1e-3, torch.float16: 5e-2, torch.bfloat16: 2e-1}
MODEL_AGREEMENT_TF32 = 5e-2


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64 (the plain norm of the difference where ref is 0);
    infinite where ``out`` is not finite but ``ref`` is, or where the shapes differ."""
    out, ref = out.detach().double(), ref.detach().double()
    if out.shape != ref.shape or bool((~out.isfinite() & ref.isfinite()).any()):
        return math.inf
    den = ref.norm().item()
    num = (out - ref).norm().item()
    return num / den if den > 0 else num
