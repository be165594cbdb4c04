"""Helpers shared by the model tests: weights that make a comparison meaningful, and the
forward-and-backward comparison of a fastconv model with its PyTorch reference."""
import copy

import torch

from interpreter_speed import whole_model
from fastconv.numerics import AGREEMENT
from fastconv.verify import randomize_weights
from helpers import TOL, aten_forbidden, rel_err

TV_ROI_OPS = ("roi_align", "_roi_align_backward", "roi_pool", "_roi_pool_backward")


def randomize(model, conv_weights=False, seed=3):
    """Random batch-norm statistics and, with ``conv_weights``, He-normal weights (see
    :func:`fastconv.verify.randomize_weights`). Returns ``model``."""
    return randomize_weights(model, conv_weights=conv_weights, seed=seed)


def _run(model, x, rest, weights, grad_input, backward=True):
    """Forward and backward of ``model`` on ``x`` (its dtype) and ``rest``, with ``weights`` as
    the output gradients: {label: tensor} of the outputs, the input gradient and every
    parameter gradient (the outputs alone without ``backward``)."""
    x = x.clone().requires_grad_(grad_input and backward)
    with torch.set_grad_enabled(backward):
        out = model(x, *rest)
    outs = out if isinstance(out, tuple) else (out,)
    if not backward:
        return out, weights, {f"output {i}": o.detach() for i, o in enumerate(outs)}
    if weights is None:
        weights = [torch.randn_like(o) for o in outs]
    torch.autograd.backward(outs, [w.to(o.dtype) for w, o in zip(weights, outs)])
    values = {f"output {i}": o.detach() for i, o in enumerate(outs)}
    if grad_input:
        values["input gradient"] = x.grad
    values.update((f"gradient of {n}", p.grad) for n, p in model.named_parameters())
    return out, weights, values


def compare(model, reference, inputs, what, grad_input=True, dtype=torch.float32,
            backward=True):
    """Run ``model`` (fastconv, in ``dtype``, eval mode) with ATen's CPU convolution and
    torchvision's RoI kernels raising, and ``reference`` in float64 on the same values; compare
    every output, the gradient of the first input and every parameter gradient (the outputs
    alone without ``backward``).

    Each relative error must be under the tolerance of ``dtype``, or, where float32 itself
    cannot reach it, no more than twice the error of PyTorch's own run in ``dtype``. In a deep
    network a pre-activation within float32 rounding of zero can take the other side of a ReLU,
    and that one flip moves a small gradient (a norm's bias) by up to a few percent whoever
    computes it; fastconv and ATen round differently, so they flip in different places. A
    whole-model check that must not depend on that runs in float64.

    The model runs in the interpreter's whole-model mode (no overflow sanitizer, larger blocks;
    the kernel tests keep both as they are): about four times faster on a whole network.

    ``inputs``: a tuple whose first element is the image / feature tensor; the rest (boxes) are
    passed as they are (upcast for the reference).
    """
    model.to(dtype).eval()
    reference = reference.double().eval()
    x, rest = inputs[0].to(dtype), inputs[1:]
    rest = tuple(r.to(dtype) if torch.is_tensor(r) else [b.to(dtype) for b in r] for r in rest)
    rest_ref = tuple(r.double() if torch.is_tensor(r) else [b.double() for b in r] for r in rest)

    with aten_forbidden(), aten_forbidden(ops=TV_ROI_OPS, namespace="torchvision"), \
            whole_model():
        out, weights, got = _run(model, x, rest, None, grad_input, backward)
    _, _, want = _run(reference, x.double(), rest_ref, weights, grad_input, backward)

    assert got.keys() == want.keys()
    # parameters outside the graph (auxiliary classifiers in eval mode) get no gradient
    unused = [k for k, v in got.items() if v is None]
    assert unused == [k for k, v in want.items() if v is None], f"{what}: unused parameters"
    torch32 = None
    # a whole network in float64 accumulates more rounding than one op (TOL's 1e-12): the
    # model-level tolerance of fastconv verify
    tol = AGREEMENT[torch.float64] if dtype == torch.float64 else TOL[dtype]
    for key, value in got.items():
        if value is None:
            continue
        assert value.dtype == dtype and value.shape == want[key].shape, f"{what}: {key}"
        err = rel_err(value, want[key])
        if err < tol:
            continue
        if torch32 is None:  # PyTorch's own float32 run, on the same weights
            _, _, torch32 = _run(copy.deepcopy(reference).to(dtype), x, rest, weights, grad_input,
                                 backward)
        torch_err = rel_err(torch32[key], want[key])
        assert err <= 2 * torch_err, (
            f"{what}: {key}: relative error {err:.2e} >= {tol:.0e}, and PyTorch's own run gets "
            f"{torch_err:.2e} against the same float64 reference")
    return out
