"""Bad input to fastconv.functional.roi_align / roi_pool, and unusual input torchvision accepts.

Every bad call is rejected with the documented exception, whose message names the argument,
before any kernel launch: the RoI launchers are replaced by functions that fail the test, and
fastconv's RoI ops themselves are overridden to raise, so validation has to come first. Unusual
but valid input (a float batch index, an output size given as a list, sampling_ratio 0, a list
with an empty entry) runs and matches torchvision.
"""
import contextlib

import numpy as np
import pytest
import torch
import torchvision.ops as tvops

import fastconv.functional as FC
from fastconv.ops import registry
from helpers import ATenRan, assert_rel_close, aten_forbidden, bad, ints, t

TV_OPS = ("roi_align", "_roi_align_backward", "roi_pool", "_roi_pool_backward")
FASTCONV_OPS = ("roi_align", "roi_align_backward", "roi_pool", "roi_pool_backward")
LAUNCHERS = ("roi_align_forward_launch", "roi_align_backward_launch", "roi_pool_forward_launch",
             "roi_pool_backward_launch")
ACCEPTED_ERRORS = (ValueError, TypeError, RuntimeError)


def _patch_launchers(monkeypatch):
    from fastconv.roi import launch as roi_launch
    for name in LAUNCHERS:
        def launched(*args, _name=name, **kwargs):
            pytest.fail(f"roi_launch.{_name} was called: validation must come first")
        monkeypatch.setattr(roi_launch, name, launched)


@contextlib.contextmanager
def fastconv_ops_forbidden():
    """fastconv's RoI ops raise while the block runs, whether reached through the dispatcher
    or directly (``registry.call``, the eager path on plain tensors)."""
    def raising(name):
        def fn(*args):
            raise ATenRan(f"fastconv::{name} ran")
        return fn
    saved = dict(registry.IMPLEMENTATIONS)
    registry.IMPLEMENTATIONS.update({f"fastconv::{n}": raising(n) for n in FASTCONV_OPS})
    try:
        with aten_forbidden(ops=FASTCONV_OPS, namespace="fastconv"):
            yield
    finally:
        registry.IMPLEMENTATIONS.clear()
        registry.IMPLEMENTATIONS.update(saved)


@pytest.fixture
def no_roi_launch(monkeypatch):
    """Fail the test if a RoI launcher, or one of fastconv's RoI ops, is reached."""
    _patch_launchers(monkeypatch)
    with fastconv_ops_forbidden():
        yield


def torchvision_forbidden():
    return aten_forbidden(ops=TV_OPS, namespace="torchvision")


def _call(op, kwargs):
    if op == "align":
        return FC.roi_align(**kwargs)
    kwargs = {k: v for k, v in kwargs.items() if k not in ("sampling_ratio", "aligned")}
    return FC.roi_pool(**kwargs)


@pytest.mark.parametrize("op", ["align", "pool"])
def test_launch_guards_catch_a_launch(monkeypatch, op):
    # proves each guard of the fixture reaches what the functions really call, so a pass below
    # means something
    with fastconv_ops_forbidden(), pytest.raises(AssertionError, match=f"fastconv::roi_{op}"):
        _call(op, _base())
    _patch_launchers(monkeypatch)
    with pytest.raises(pytest.fail.Exception, match=f"roi_launch.roi_{op}_forward_launch was called"):
        _call(op, _base())


# ---------------------------------------------------------------------------- bad input
def _base():
    """A valid call: input [2, 3, 6, 7], two boxes (one per image), float32."""
    return dict(input=torch.randn(2, 3, 6, 7),
                boxes=torch.tensor([[0, 1.0, 1.0, 4.0, 4.0], [1, 0.5, 0.0, 3.0, 5.5]]),
                output_size=(2, 3), spatial_scale=0.5, sampling_ratio=2, aligned=False)


def boxes_with_batch(index):
    return lambda: torch.tensor([[0, 1.0, 1.0, 4.0, 4.0], [index, 0.5, 0.0, 3.0, 5.5]])


def box_list(*lengths, cols=4, dtype=torch.float32):
    return lambda: [torch.rand(n, cols, dtype=dtype) * 4 for n in lengths]


EITHER = (TypeError, ValueError)   # not a tensor at all: either is a fair answer

BAD_INPUTS = [
    # boxes: shape
    bad("boxes-4-columns", ValueError, ["boxes"], boxes=t(3, 4)),
    bad("boxes-6-columns", ValueError, ["boxes"], boxes=t(3, 6)),
    bad("boxes-1d", ValueError, ["boxes"], boxes=t(5)),
    bad("boxes-3d", ValueError, ["boxes"], boxes=t(1, 2, 5)),
    bad("boxes-0d", ValueError, ["boxes"], boxes=lambda: torch.tensor(0.0)),
    bad("boxes-list-of-5-columns", ValueError, ["boxes"], boxes=box_list(2, 1, cols=5)),
    bad("boxes-list-3-columns", ValueError, ["boxes"], boxes=box_list(2, cols=3)),
    bad("boxes-list-one-bad", ValueError, ["boxes"],
        boxes=lambda: [torch.rand(2, 4), torch.rand(1, 3)]),
    bad("boxes-list-1d", ValueError, ["boxes"], boxes=lambda: [torch.rand(4)]),
    bad("boxes-list-3d", ValueError, ["boxes"], boxes=lambda: [torch.rand(1, 2, 4)]),
    bad("boxes-empty-list", ValueError, ["boxes"], boxes=[]),
    # boxes: not tensors
    bad("boxes-none", EITHER, ["boxes"], boxes=None),
    bad("boxes-nested-floats", EITHER, ["boxes"], boxes=[[0, 1.0, 1.0, 4.0, 4.0]]),
    bad("boxes-list-of-floats", EITHER, ["boxes"], boxes=[[1.0, 1.0, 4.0, 4.0]]),
    bad("boxes-ndarray", EITHER, ["boxes"],
        boxes=lambda: torch.tensor([[0, 1.0, 1.0, 4.0, 4.0]]).numpy()),
    # boxes: batch index outside [0, N)
    bad("batch-index-2-of-2", RuntimeError, ["boxes"], boxes=boxes_with_batch(2.0)),
    bad("batch-index-5", RuntimeError, ["boxes"], boxes=boxes_with_batch(5.0)),
    bad("batch-index-negative", RuntimeError, ["boxes"], boxes=boxes_with_batch(-1.0)),
    bad("batch-index-huge", RuntimeError, ["boxes"], boxes=boxes_with_batch(1e9)),
    bad("boxes-list-longer-than-batch", ValueError, ["boxes"], boxes=box_list(1, 0, 2)),
    # boxes: dtype and device
    bad("boxes-float64", TypeError, ["boxes"], boxes=lambda: _base()["boxes"].double()),
    bad("boxes-float16", TypeError, ["boxes"], boxes=lambda: _base()["boxes"].half()),
    bad("boxes-int64", TypeError, ["boxes"], boxes=lambda: _base()["boxes"].long()),
    bad("boxes-list-float64", TypeError, ["boxes"], boxes=box_list(1, 2, dtype=torch.float64)),
    bad("input-bfloat16-boxes-float32", TypeError, ["boxes"],
        input=t(2, 3, 6, 7, dtype=torch.bfloat16)),
    # the meta device stands in for a second device on a CPU-only machine
    bad("boxes-meta", RuntimeError, ["device"], boxes=lambda: _base()["boxes"].to("meta")),
    bad("boxes-list-meta", RuntimeError, ["device"],
        boxes=lambda: [torch.rand(1, 4, device="meta")]),
    bad("input-meta", RuntimeError, ["device"], input=t(2, 3, 6, 7, device="meta")),
    # output_size
    bad("output-size-0", ValueError, ["output_size"], output_size=0),
    bad("output-size-negative", ValueError, ["output_size"], output_size=-2),
    bad("output-size-0-width", ValueError, ["output_size"], output_size=(2, 0)),
    bad("output-size-negative-height", ValueError, ["output_size"], output_size=[-1, 3]),
    bad("output-size-3-values", ValueError, ["output_size"], output_size=(2, 2, 2)),
    bad("output-size-empty", ValueError, ["output_size"], output_size=()),
    bad("output-size-float", EITHER, ["output_size"], output_size=2.5),
    # spatial_scale
    bad("spatial-scale-0", ValueError, ["spatial_scale"], spatial_scale=0.0),
    bad("spatial-scale-negative", ValueError, ["spatial_scale"], spatial_scale=-0.25),
    bad("spatial-scale-negative-int", ValueError, ["spatial_scale"], spatial_scale=-1),
    bad("spatial-scale-nan", ValueError, ["spatial_scale"], spatial_scale=float("nan")),
    # input: rank, dtype, type
    bad("input-3d", ValueError, ["input"], input=t(3, 6, 7)),
    bad("input-2d", ValueError, ["input"], input=t(6, 7)),
    bad("input-5d", ValueError, ["input"], input=t(2, 3, 6, 7, 1)),
    bad("input-int64", TypeError, ["input"], input=ints(2, 3, 6, 7),
        boxes=lambda: _base()["boxes"].long()),
    bad("input-int64-float-boxes", TypeError, [], input=ints(2, 3, 6, 7)),
    bad("input-bool", TypeError, ["input"], input=lambda: torch.ones(2, 3, 6, 7, dtype=torch.bool),
        boxes=lambda: _base()["boxes"].bool()),
    bad("input-list", EITHER, ["input"], input=lambda: torch.randn(2, 3, 6, 7).tolist()),
]


@pytest.mark.parametrize("overrides, exc, names, torch_rejects", BAD_INPUTS)
@pytest.mark.parametrize("op", ["align", "pool"])
def test_bad_input_is_refused_before_launch(no_roi_launch, op, overrides, exc, names,
                                            torch_rejects):
    kwargs = _base()
    kwargs.update({k: v() if callable(v) else v for k, v in overrides.items()})
    expected = exc if isinstance(exc, tuple) else (exc,)

    with torchvision_forbidden(), pytest.raises(ACCEPTED_ERRORS) as info:
        _call(op, kwargs)
    assert info.type in expected, (
        f"raised {info.type.__name__}, expected {' or '.join(e.__name__ for e in expected)}: "
        f"{info.value}")
    message = str(info.value)
    for name in names:
        assert name in message, f"the message does not name {name!r}: {message}"


def test_bad_input_table_covers_both_conventions():
    ids = [p.id for p in BAD_INPUTS]
    assert len(ids) == len(set(ids))
    assert any("list" in i for i in ids) and any("batch-index" in i for i in ids)


@pytest.mark.parametrize("op", ["align", "pool"])
def test_bad_input_leaves_arguments_intact(no_roi_launch, op):
    kwargs = _base()
    kwargs["boxes"] = torch.tensor([[0, 1.0, 1.0, 4.0, 4.0], [3, 0.5, 0.0, 3.0, 5.5]])
    before = {k: v.clone() for k, v in kwargs.items() if isinstance(v, torch.Tensor)}
    with pytest.raises(RuntimeError):
        _call(op, kwargs)
    for k, v in before.items():
        assert torch.equal(kwargs[k], v), f"{k} modified"


# ---------------------------------------------------------------------------- torchvision accepts
def run_both(op, x, boxes, **kw):
    """fastconv (torchvision forbidden) and torchvision on float64, forward and backward."""
    leaf = x.detach().clone().requires_grad_()
    with torchvision_forbidden():
        y = _call(op, dict(input=leaf, boxes=boxes, **kw))
        grad = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(y.dtype)
        y.backward(grad)
    ref = x.detach().double().requires_grad_()
    if isinstance(boxes, torch.Tensor):
        boxes64 = boxes.detach().double()
    else:
        boxes64 = type(boxes)(b.detach().double() for b in boxes)
    if op == "align":
        y_ref = tvops.roi_align(ref, boxes64, **kw)
    else:
        kw = {k: v for k, v in kw.items() if k not in ("sampling_ratio", "aligned")}
        y_ref = tvops.roi_pool(ref, boxes64, **kw)
    y_ref.backward(grad.double())
    assert_rel_close(y, y_ref, x.dtype, "output")
    assert_rel_close(leaf.grad, ref.grad, x.dtype, "grad_input")
    return y


ACCEPTED = {
    "float-batch-index": dict(boxes=lambda: torch.tensor([[1.0, 0.5, 0.5, 5.0, 4.0],
                                                          [0.0, 2.0, 1.0, 3.0, 5.0]])),
    "fractional-batch-index": dict(boxes=lambda: torch.tensor([[1.7, 0.5, 0.5, 5.0, 4.0],
                                                               [0.2, 2.0, 1.0, 3.0, 5.0]])),
    "output-size-list": dict(output_size=[3, 2]),
    "output-size-int": dict(output_size=4),
    "sampling-ratio-0": dict(sampling_ratio=0),
    "sampling-ratio-negative": dict(sampling_ratio=-3),
    "spatial-scale-int": dict(spatial_scale=1),
    "boxes-list-with-empty-entry": dict(boxes=lambda: [torch.zeros(0, 4),
                                                       torch.tensor([[0.5, 1.0, 5.0, 4.5]])]),
    "boxes-list-all-empty": dict(boxes=lambda: [torch.zeros(0, 4), torch.zeros(0, 4)]),
    "boxes-list-shorter-than-batch": dict(boxes=lambda: [torch.tensor([[0.5, 1.0, 5.0, 4.5],
                                                                       [2.0, 2.0, 2.0, 2.0]])]),
    "boxes-list-tuple": dict(boxes=lambda: (torch.tensor([[0.5, 1.0, 5.0, 4.5]]),
                                            torch.tensor([[1.0, 1.0, 3.0, 3.0]]))),
    "boxes-non-contiguous": dict(boxes=lambda: torch.tensor(
        [[0, 1.0, 1.0, 4.0, 4.0], [1, 0.5, 0.0, 3.0, 5.5]]).t().contiguous().t()),
    "boxes-strided-rows": dict(boxes=lambda: torch.tensor(
        [[0, 1.0, 1.0, 4.0, 4.0], [9, 9, 9, 9, 9], [1, 0.5, 0.0, 3.0, 5.5]])[::2]),
    "boxes-requiring-grad": dict(boxes=lambda: torch.tensor(
        [[0, 1.0, 1.0, 4.0, 4.0], [1, 0.5, 0.0, 3.0, 5.5]], requires_grad=True)),
    "one-pixel-image": dict(input=lambda: torch.randn(2, 3, 1, 1)),
    # torchvision reads any int (and numpy's bool) as aligned's truth value
    "aligned-int": dict(aligned=1),
    "aligned-int-0": dict(aligned=0),
    "aligned-numpy-bool": dict(aligned=np.bool_(True)),
}


@pytest.mark.parametrize("name", list(ACCEPTED))
@pytest.mark.parametrize("op", ["align", "pool"])
def test_unusual_valid_input_runs(op, name):
    kwargs = _base()
    kwargs.update({k: v() if callable(v) else v for k, v in ACCEPTED[name].items()})
    x, boxes = kwargs.pop("input"), kwargs.pop("boxes")
    y = run_both(op, x, boxes, **kwargs)
    K = len(boxes) if isinstance(boxes, torch.Tensor) else sum(len(b) for b in boxes)
    assert y.shape[:2] == (K, x.shape[1])
