"""Verification: run a model through fastconv and through PyTorch on identical weights; compare.

The reference is the unconverted model (ATen's convolution: cuDNN on a GPU); the candidate is
``fastconv.convert`` of a copy of it. Both run forward and backward on the same input; the report
gives the relative error of the output, of the input gradient and of the worst parameter
gradient, each against a tolerance for the dtype.
"""
import time
from dataclasses import asdict, dataclass
from typing import Callable, Dict, Iterable, List, Optional

import torch
import torch.nn as nn
import torchvision

import fastconv
from fastconv.ops import INTERPRETING

# Model-level tolerances on the relative error: looser than one op's (DESIGN.md) because the
# rounding of some twenty layers in sequence adds up; TF32 is switched off for float32.
TOLERANCE = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2, torch.float64: 1e-10}

# name -> builder of the reference (torch) model, random weights
MODELS: Dict[str, Callable[[], nn.Module]] = {
    "resnet18": lambda: torchvision.models.resnet18(weights=None),
}


@dataclass
class VerifyResult:
    model: str
    params: int
    input: str
    dtype: str
    output_err: float
    input_grad_err: float
    param_grad_err: float
    worst_param: str
    tolerance: float
    backend: str
    seconds: float

    @property
    def passed(self) -> bool:
        errs = (self.output_err, self.input_grad_err, self.param_grad_err)
        return all(e == e and e < self.tolerance for e in errs)  # e == e: NaN never passes

    def as_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.detach().double(), ref.detach().double()
    den = ref.norm().item()
    num = (out - ref).norm().item()
    return num / den if den > 0 else num


def backend_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"triton on {torch.cuda.get_device_name(device)}"
    return "interpreter (CPU)" if INTERPRETING else "cpu"


def _forward_backward(model: nn.Module, x: torch.Tensor):
    x = x.detach().clone().requires_grad_()
    out = model(x)
    out.float().sum().backward()
    return out, x.grad


def verify_model(name: str, reference: nn.Module, batch: int, size: int, dtype: torch.dtype,
                 device: torch.device, step: Optional[Callable[[str], None]] = None,
                 seed: int = 0) -> VerifyResult:
    """Compare ``fastconv.convert(reference)`` with ``reference`` on one random batch."""
    step = step or (lambda _: None)
    start = time.perf_counter()
    torch.manual_seed(seed)
    reference = reference.to(device=device, dtype=dtype).eval()
    candidate = fastconv.convert(reference)
    x = torch.randn(batch, 3, size, size, device=device, dtype=dtype)
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        step("reference forward + backward")
        ref_out, ref_dx = _forward_backward(reference, x)
        step("fastconv forward + backward")
        out, dx = _forward_backward(candidate, x)
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    grads = [(n, rel_err(p.grad, q.grad))
             for (n, p), q in zip(candidate.named_parameters(), reference.parameters())]
    worst_param, worst = max(grads, key=lambda g: g[1])
    return VerifyResult(
        model=name, params=sum(p.numel() for p in reference.parameters()),
        input=f"{batch}x3x{size}x{size}", dtype=str(dtype).replace("torch.", ""),
        output_err=rel_err(out, ref_out), input_grad_err=rel_err(dx, ref_dx),
        param_grad_err=worst, worst_param=worst_param, tolerance=TOLERANCE[dtype],
        backend=backend_name(device), seconds=time.perf_counter() - start)


def verify(models: Iterable[str], batch: int, size: int, dtype: torch.dtype,
           device: torch.device, step: Optional[Callable[[str], None]] = None) -> List[VerifyResult]:
    results = []
    for name in models:
        if name not in MODELS:
            raise ValueError(f"verify(): unknown model {name!r}; known: {sorted(MODELS)}")
        results.append(verify_model(name, MODELS[name](), batch, size, dtype, device,
                                    step=lambda what, _n=name: step and step(f"{_n}: {what}")))
    return results
