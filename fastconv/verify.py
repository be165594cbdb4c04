"""Verification: run a model through fastconv and through PyTorch on identical weights; compare.

The candidate is a ``fastconv.models`` model; the reference is torchvision's model of the same
name with the candidate's weights loaded (``strict=True``) where torchvision has one, and
otherwise the candidate with :func:`fastconv.unconvert` applied: the same modules computed by
ATen (cuDNN on a GPU) and torchvision's RoI kernels. Both run forward and backward on the same
input; the report gives the relative error of the output, of the input gradient and of the
worst parameter gradient, each against a tolerance for the dtype.
"""
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
import warnings
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from typing import Callable, Iterable, List, Optional

import torch
import torch.nn as nn
import torchvision

import fastconv
import fastconv.models as models
from fastconv.numerics import AGREEMENT, rel_err
from fastconv.ops import INTERPRETING
from fastconv.ops.target import larger_interpreter_blocks

# Model-level tolerances on the relative error (fastconv.numerics.AGREEMENT): looser than one
# op's (DESIGN.md) because the rounding of tens of layers in sequence adds up; TF32 is switched
# off for float32.

# What `fastconv verify` checks by default under the interpreter, where the whole zoo takes
# about 18 minutes on two cores: one small model per family of layers and kernels, with the
# seconds each took alone on one core of a 2-core machine (float64, batch 1, smallest size),
# which give the first estimate of the time left.
REPRESENTATIVE = {
    "lenet5": 1,               # plain 5x5 convolutions, no torchvision twin (checked vs ATen)
    "alexnet": 10,             # 11x11 stride-4 and 5x5 kernels, large padding
    "resnet18": 3,             # strided 3x3 and 1x1 downsampling, batch norm
    "resnext50_32x4d": 23,     # grouped 3x3 convolutions through the implicit GEMM, bottlenecks
    "googlenet": 5,            # Inception branches: 1x1, 3x3 and 5x5 side by side
    "densenet121": 8,          # concatenated features, many thin 1x1 layers
    "mobilenet_v2": 3,         # depthwise (direct kernel) and 1x1 GEMMs
    "shufflenet_v1_g3": 2,     # grouped 1x1 convolutions with few channels per group
    "unet": 13,                # transposed convolutions, the U-Net skip connections
    "fast_rcnn_box_head": 12,  # RoIPool forward and backward
    "mask_rcnn_mask_head": 5,  # RoIAlign, 3x3 convolutions and a transposed convolution
}


def reference_model(name: str, model: nn.Module) -> nn.Module:
    """torchvision's ``name`` holding ``model``'s weights, or ``unconvert(model)``."""
    builder = getattr(torchvision.models, name, None)
    if builder is None or not callable(builder):
        return fastconv.unconvert(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. GoogLeNet's note on its default initialisation
        reference = builder(weights=None)
    reference.load_state_dict(model.state_dict(), strict=True)
    return reference


def randomize_weights(model: nn.Module, conv_weights: bool = True, seed: int = 0) -> nn.Module:
    """Random batch-norm statistics and affine parameters, and (with ``conv_weights``)
    He-normal convolution and linear weights, in place; returns ``model``.

    A comparison on a model's initial weights can prove little: its norms are identities in
    eval mode, and some initialisations (GoogLeNet's, Inception's: std 0.01) shrink the
    activations layer after layer until the output is the last bias, equal whatever the
    convolutions computed. He-normal weights keep every layer's output at the scale of its
    input, so every layer shows in the result.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine and \
                    m.track_running_stats:
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.uniform_(-0.2, 0.2, generator=g)
                m.running_mean.uniform_(-0.2, 0.2, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
            elif conv_weights and isinstance(m, (nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d,
                                                 nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.normal_(0, (2.0 / fan_in) ** 0.5, generator=g)
    return model


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


def backend_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"triton on {torch.cuda.get_device_name(device)}"
    return "interpreter (CPU)" if INTERPRETING else "cpu"


def _tensors(out) -> List[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    return [t for o in out for t in _tensors(o)]


def _forward_backward(model: nn.Module, inputs: tuple):
    x = inputs[0].detach().clone().requires_grad_()
    outs = _tensors(model(x, *inputs[1:]))
    sum(o.float().sum() for o in outs).backward()
    return outs, x.grad


def verify_model(name: str, batch: int, size: Optional[int], dtype: torch.dtype,
                 device: torch.device, step: Optional[Callable[[str], None]] = None,
                 seed: int = 0) -> VerifyResult:
    """Compare ``fastconv.models.get_model(name)`` with its PyTorch reference on one random
    batch (``size`` x ``size`` pixels; None: the model's usual size on a GPU, its smallest on
    the CPU).

    Under the interpreter the model runs with blocks up to four times larger than the kernel
    tests' (:func:`fastconv.ops.target.larger_interpreter_blocks`: fewer, larger programs, the
    same kernels and results); the interpreter's own checks, its integer-overflow sanitizer
    included, stay on."""
    step = step or (lambda _: None)
    start = time.perf_counter()
    torch.manual_seed(seed)
    candidate = randomize_weights(models.get_model(name), seed=seed)
    reference = reference_model(name, candidate)
    candidate = candidate.to(device=device, dtype=dtype).eval()
    reference = reference.to(device=device, dtype=dtype).eval()
    shape = models.default_input_size(name) if device.type == "cuda" else \
        models.small_input_size(name)
    if size is not None:
        shape = (shape[0], size, size)
    inputs = models.example_inputs(name, batch, shape, device=device, dtype=dtype,
                                   generator=torch.Generator().manual_seed(seed))
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        step("reference forward + backward")
        ref_outs, ref_dx = _forward_backward(reference, inputs)
        step("fastconv forward + backward")
        with larger_interpreter_blocks():
            outs, dx = _forward_backward(candidate, inputs)
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    ref_params = dict(reference.named_parameters())
    grads = [(n, rel_err(p.grad, ref_params[n].grad)) for n, p in candidate.named_parameters()
             if p.grad is not None]
    worst_param, worst = max(grads, key=lambda g: g[1])
    return VerifyResult(
        model=name, params=sum(p.numel() for p in candidate.parameters()),
        input="x".join(map(str, inputs[0].shape)), dtype=str(dtype).replace("torch.", ""),
        output_err=max(rel_err(o, r) for o, r in zip(outs, ref_outs)),
        input_grad_err=rel_err(dx, ref_dx), param_grad_err=worst, worst_param=worst_param,
        tolerance=AGREEMENT[dtype], backend=backend_name(device),
        seconds=time.perf_counter() - start)


def _verify_in_worker(args) -> VerifyResult:
    name, batch, size, dtype = args
    torch.set_num_threads(1)  # the interpreter is one Python thread; the others would spin
    return verify_model(name, batch, size, dtype, torch.device("cpu"))


def default_models(device: torch.device) -> List[str]:
    """The models ``fastconv verify`` checks without ``--models``/``--all``: the whole zoo on a
    GPU, :data:`REPRESENTATIVE` under the interpreter."""
    if device.type == "cuda":
        return models.list_models()
    return list(REPRESENTATIVE)


def verify(names: Iterable[str], batch: int, size: Optional[int], dtype: torch.dtype,
           device: torch.device, step: Optional[Callable[[str], None]] = None,
           jobs: int = 1,
           on_result: Optional[Callable[[VerifyResult], None]] = None) -> List[VerifyResult]:
    """:func:`verify_model` for each name; the results in the order of ``names``.

    ``step`` is called twice per model (when its reference and its fastconv run start, or, with
    ``jobs`` > 1, when it has finished); ``on_result`` with each result as soon as its model is
    done. ``jobs`` > 1 verifies that many models at a time in worker processes: under the
    interpreter, where one model keeps one core busy; on a GPU the models run one after the
    other whatever ``jobs`` says.
    """
    names = list(names)
    known = models.list_models()
    for name in names:
        if name not in known:
            raise ValueError(f"verify(): unknown model {name!r}; known: {known}")
    step = step or (lambda _: None)
    on_result = on_result or (lambda _: None)
    if jobs <= 1 or device.type == "cuda" or len(names) <= 1:
        results = []
        for name in names:
            results.append(verify_model(name, batch, size, dtype, device,
                                        step=lambda what, _n=name: step(f"{_n}: {what}")))
            on_result(results[-1])
        return results
    # spawn: fresh interpreters that inherit TRITON_INTERPRET from this process's environment
    done = {}
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        # the longest first, so that the last minutes do not leave cores idle
        longest_first = sorted(names, key=lambda n: -REPRESENTATIVE.get(n, 0))
        futures = {pool.submit(_verify_in_worker, (name, batch, size, dtype)): name
                   for name in longest_first}
        for future in as_completed(futures):
            name = futures[future]
            done[name] = future.result()
            on_result(done[name])
            step(f"{name}: done")
            step(f"{name}: done")
    return [done[name] for name in names]
