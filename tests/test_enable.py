"""``fastconv.enable()`` / ``disable()`` / ``with fastconv.enabled():``: torch.nn.functional's
convolutions and torchvision.ops' RoI functions routed to fastconv, for callers that know
nothing of fastconv, with PyTorch's implementation kept for what fastconv refuses."""
import sys
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
import torchvision.ops

import fastconv
from helpers import aten_forbidden, assert_rel_close

TV_ROI_OPS = ("roi_align", "_roi_align_backward", "roi_pool", "_roi_pool_backward")


class ThirdPartyNet(nn.Module):
    """A model written against torch alone: functional convolutions on its own parameters."""

    def __init__(self):
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(8, 3, 3, 3) * 0.3)
        self.b1 = nn.Parameter(torch.randn(8) * 0.1)
        self.w2 = nn.Parameter(torch.randn(8, 4, 3, 3) * 0.3)
        self.up = nn.Parameter(torch.randn(8, 4, 2, 2) * 0.3)
        self.w3 = nn.Parameter(torch.randn(6, 4, 3) * 0.3)

    def forward(self, x):
        y = F.relu(F.conv2d(x, self.w1, self.b1, padding=1))
        y = F.conv2d(y, self.w2, stride=2, padding=1, groups=2)
        y = F.conv_transpose2d(y, self.up, stride=2)                     # 4 channels
        return F.conv1d(y.flatten(2), self.w3, padding=1)                # along the pixels


def _originals():
    return {"conv1d": F.conv1d, "conv2d": F.conv2d, "conv_transpose2d": F.conv_transpose2d,
            "ops.roi_align": torchvision.ops.roi_align, "ops.roi_pool": torchvision.ops.roi_pool,
            "roi_align module": sys.modules["torchvision.ops.roi_align"].roi_align,
            "roi_pool module": sys.modules["torchvision.ops.roi_pool"].roi_pool,
            "poolers": sys.modules["torchvision.ops.poolers"].roi_align}


@pytest.fixture(autouse=True)
def _always_disabled_after():
    yield
    fastconv.disable()


def test_functional_calls_inside_a_model_run_on_fastconv():
    model = ThirdPartyNet().double()
    x = torch.randn(2, 3, 9, 11, dtype=torch.float64)
    ref = model(x)
    ref.sum().backward()
    ref_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    with fastconv.enabled(), aten_forbidden():  # ATen's CPU convolution raises: fastconv ran
        out = model(x)
        out.sum().backward()
    assert_rel_close(out, ref, torch.float64, "output")
    for p, g in zip(model.parameters(), ref_grads):
        assert_rel_close(p.grad, g, torch.float64, "parameter gradient")


def test_torch_modules_and_torchvision_roi_run_on_fastconv():
    conv = nn.Conv2d(4, 5, 3, padding=1)
    feats = torch.randn(2, 4, 12, 12)
    boxes = [torch.tensor([[0.0, 1.0, 9.0, 10.0]]), torch.tensor([[2.0, 2.0, 6.0, 11.0]])]
    pooler = torchvision.ops.MultiScaleRoIAlign(["0"], 3, sampling_ratio=2)

    def run():
        y = conv(feats)
        return (y, torchvision.ops.roi_align(y, boxes, 3, 1.0, 2, True),
                torchvision.ops.roi_pool(y, boxes, (2, 3)),
                torchvision.ops.RoIAlign(2, 0.5, -1)(y, boxes),
                pooler({"0": y}, boxes, [(12, 12), (12, 12)]))
    refs = run()
    with fastconv.enabled(), aten_forbidden(), \
            aten_forbidden(ops=TV_ROI_OPS, namespace="torchvision"):
        outs = run()
    for out, ref in zip(outs, refs):
        assert_rel_close(out, ref, torch.float32)


def test_disable_restores_the_originals_exactly():
    before = _originals()
    fastconv.enable()
    assert fastconv.is_enabled()
    during = _originals()
    assert all(during[k] is not before[k] for k in before), "every entry point is routed"
    assert all(during[k].__fastconv_original__ is before[k] for k in before)
    fastconv.enable()  # idempotent: not wrapped twice
    assert _originals() == during
    fastconv.disable()
    assert not fastconv.is_enabled()
    assert all(_originals()[k] is before[k] for k in before)
    fastconv.disable()  # and so is disable
    assert all(_originals()[k] is before[k] for k in before)


def test_enabled_blocks_nest():
    original = F.conv2d
    with fastconv.enabled():
        with fastconv.enabled():
            assert F.conv2d is not original
        assert F.conv2d is not original, "the inner block must not switch the outer one off"
    assert F.conv2d is original
    fastconv.enable()
    with fastconv.enabled():
        pass
    assert fastconv.is_enabled(), "a block leaves an enable() before it in effect"
    fastconv.disable()
    with pytest.raises(ZeroDivisionError), fastconv.enabled():
        1 / 0
    assert F.conv2d is original


def test_refused_calls_fall_back_to_torch_with_one_warning():
    x = torch.randint(-3, 4, (1, 2, 5, 5))
    w = torch.randint(-3, 4, (3, 2, 3, 3))
    ref = F.conv2d(x, w)  # integer convolution: torch computes it, fastconv refuses it
    with fastconv.enabled():
        with pytest.warns(fastconv.FallbackWarning, match=r"conv2d.*TypeError"):
            out = F.conv2d(x, w)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # one warning per function, not per call
            again = F.conv2d(x, w)
    assert torch.equal(out, ref) and torch.equal(again, ref)


def test_meta_tensors_keep_torchs_implementation():
    x = torch.empty(1, 3, 8, 8, device="meta")
    w = torch.empty(4, 3, 3, 3, device="meta")
    with fastconv.enabled(), warnings.catch_warnings():
        warnings.simplefilter("error")
        assert F.conv2d(x, w).shape == (1, 4, 6, 6)
