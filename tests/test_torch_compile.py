"""fastconv models under ``torch.compile``: one graph (``fullgraph=True``), the eager result
forward and backward, and one compilation for every batch size once the batch is dynamic.

The ops are ``torch.library`` custom ops with fake implementations, so Dynamo puts them in the
graph as they are and AOTAutograd traces their autograd formulas; the compiled graph then calls
the same kernels as eager mode. The backend is ``aot_eager`` (Dynamo and AOTAutograd, no code
generation): inductor would only generate code around the custom ops, which stay Triton kernels
either way, and costs tens of seconds of C++ compilation per model on the CPU. ATen's
convolution and torchvision's RoI kernels raise in every run, eager and compiled.
"""
import contextlib

import pytest
import torch
import torch.nn.functional as F
from torch._dynamo.testing import CompileCounterWithBackend

import fastconv.functional as FC
import fastconv.models as models
from interpreter_speed import whole_model
from helpers import aten_forbidden

TV_ROI_OPS = ("roi_align", "_roi_align_backward", "roi_pool", "_roi_pool_backward")
_HEAD = dict(in_channels=8, num_classes=3)
# small variants (few and narrow layers), so that tracing and the interpreter stay quick
MODELS = {
    "lenet5": ({}, None),                                     # conv2d, pooling, linear
    "mask_rcnn_mask_head": (dict(_HEAD, output_size=4, layers=(16, 16), dim_reduced=16),
                            (8, 7, 7)),                       # roi_align, conv_transpose2d
    "fast_rcnn_box_head": (dict(_HEAD, output_size=3, representation_size=16),
                           (8, 7, 7)),                        # roi_pool
}


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@contextlib.contextmanager
def fastconv_only():
    with aten_forbidden(), aten_forbidden(ops=TV_ROI_OPS, namespace="torchvision"), \
            whole_model():
        yield


def _inputs(name, batch, size):
    return models.example_inputs(name, batch=batch, size=size or models.small_input_size(name),
                                 generator=torch.Generator().manual_seed(batch))


def _dynamic_batch(inputs):
    """The image batch, and the boxes, whose number follows it, with a dynamic first axis."""
    for t in inputs:
        torch._dynamo.mark_dynamic(t, 0)
    return inputs


def _forward_backward(fn, model, inputs):
    """Outputs, input gradient and parameter gradients of ``fn`` (``model`` or its compiled
    twin, which shares its parameters)."""
    x, *rest = _dynamic_batch([inputs[0].clone().requires_grad_(), *inputs[1:]])
    out = fn(x, *rest)
    outs = out if isinstance(out, tuple) else (out,)
    torch.autograd.backward(outs, [torch.ones_like(o) for o in outs])
    grads = {n: p.grad for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return [o.detach() for o in outs], x.grad, grads


@pytest.mark.parametrize("name", MODELS)
def test_model_compiles_to_one_graph_for_every_batch_size(name):
    kwargs, size = MODELS[name]
    model = models.get_model(name, **kwargs).eval()
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, backend=counter, fullgraph=True)
    with fastconv_only():
        for batch in (2, 3):
            inputs = _inputs(name, batch, size)
            got = _forward_backward(compiled, model, inputs)
            want = _forward_backward(model, model, inputs)
            for g, w in zip(got[0], want[0]):
                torch.testing.assert_close(g, w, msg=lambda m: f"{name} output, batch {batch}: {m}")
            torch.testing.assert_close(got[1], want[1])
            assert got[2].keys() == want[2].keys()
            for key in got[2]:
                torch.testing.assert_close(got[2][key], want[2][key],
                                           msg=lambda m: f"{name} grad of {key}: {m}")
        # a batch size the graph has not seen reuses it (forward only: the kernels are slow
        # here; the input still requires grad, as the guards were built for that)
        x, *rest = _inputs(name, 4, size)
        out = compiled(*_dynamic_batch([x.requires_grad_(), *rest]))
    outs = out if isinstance(out, tuple) else (out,)
    assert all(o.shape[0] == (4 if name == "lenet5" else 16) for o in outs)  # 4 boxes an image
    assert counter.frame_count == 1, f"{name} compiled {counter.frame_count} times"


class _Captured(Exception):
    pass


# capture only, on the meta device (no kernel runs): the larger zoo models, whose compiled runs
# would take minutes in the interpreter
@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet18", "unet"])
def test_zoo_model_is_captured_whole(name):
    """Dynamo captures the whole forward (``fullgraph=True`` turns any graph break into an
    error) with a dynamic batch, and every convolution of the model is a fastconv op in it."""
    model = models.get_model(name).to("meta")
    x, = models.example_inputs(name, batch=2, size=models.small_input_size(name), device="meta")
    torch._dynamo.mark_dynamic(x, 0)
    graphs = []

    def capture(gm, example_inputs):
        graphs.append(gm)
        raise _Captured

    with pytest.raises(torch._dynamo.exc.BackendCompilerFailed) as failed:
        torch.compile(model, backend=capture, fullgraph=True)(x)
    assert isinstance(failed.value.inner_exception, _Captured)
    graph, = graphs
    ops = [n.target for n in graph.graph.nodes
           if n.op == "call_function" and str(n.target).startswith("fastconv.")]
    convs = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d,
                                                          torch.nn.ConvTranspose2d))]
    assert len(ops) == len(convs) > 0
    batch = [n.meta["example_value"] for n in graph.graph.nodes if n.op == "placeholder"]
    assert any(isinstance(v, torch.Tensor) and isinstance(v.shape[0], torch.SymInt)
               for v in batch), "the batch axis was not kept symbolic"


def test_autocast_depthwise_and_fused_epilogue_in_a_compiled_graph():
    """torch.autocast inside the compiled function: the ops' autocast kernels are traced like
    torch's own, so the graph casts as eager mode does (conv2d with a fused epilogue and a
    depthwise conv2d in bfloat16, conv_transpose2d too; roi_align in float32 and back)."""
    x, w, b = torch.randn(2, 3, 9, 8), torch.randn(6, 3, 3, 3), torch.randn(6)
    dw, wt = torch.randn(3, 1, 3, 3), torch.randn(3, 2, 2, 2)
    boxes = torch.tensor([[0, 1.0, 0.5, 6.0, 7.0], [1, 0.0, 2.0, 8.0, 5.5]])

    def fn(x, w, b, dw, wt, boxes):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = FC.conv2d(x, w, b, padding=1, activation="relu")
            depthwise = FC.conv2d(x, dw, stride=2, groups=3)
            up = FC.conv_transpose2d(x, wt, stride=2)
            pooled = FC.roi_align(y, boxes.to(y.dtype), 3, spatial_scale=0.5, sampling_ratio=2)
        return F.relu(pooled), depthwise, up, FC.roi_pool(x, boxes, 2)

    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(fn, backend=counter, fullgraph=True)
    with fastconv_only():
        got = compiled(x, w, b, dw, wt, boxes)
        want = fn(x, w, b, dw, wt, boxes)
    assert [t.dtype for t in got] == [t.dtype for t in want] == [torch.bfloat16] * 3 + \
        [torch.float32]
    for g, w_ in zip(got, want):
        torch.testing.assert_close(g, w_)
    assert counter.frame_count == 1
