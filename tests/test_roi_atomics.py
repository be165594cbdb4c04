"""The atomic RoIAlign backward adds once per distinct pixel of each 2x2 block of samples.

Counted in Triton's interpreter: every lane of an atomic that its mask lets through is one add.
Before the merge, each sample in the image made four adds per channel; the merged kernel makes
at most that many, and fewer where a bin's samples share pixels (bins under two pixels: FPN
levels at 1/4 to 1/32 of the image), with the same gradient up to float rounding.
"""
import math

import numpy as np
import pytest
import torch
import torchvision.ops as tvops
from triton.runtime import interpreter

import fastconv.functional as FC
from helpers import assert_rel_close


@pytest.fixture
def atomic_adds(monkeypatch):
    """A list whose sum is the lanes the atomics added, as the interpreter runs them."""
    counted = []
    real = interpreter.InterpreterBuilder.create_atomic_rmw

    def counting(self, rmwOp, ptr, val, mask, sem, scope):
        counted.append(int(np.count_nonzero(mask.data)))
        return real(self, rmwOp, ptr, val, mask, sem, scope)
    monkeypatch.setattr(interpreter.InterpreterBuilder, "create_atomic_rmw", counting)
    return counted


def _per_sample_adds(rois, channels, height, width, pooled, scale, sampling_ratio, aligned):
    """The adds of a backward with four atomics per sample in the image: torchvision's
    geometry (DESIGN.md), per channel."""
    total = 0
    offset = 0.5 if aligned else 0.0
    for _, x1, y1, x2, y2 in rois.tolist():
        sw, sh = x1 * scale - offset, y1 * scale - offset
        rw, rh = x2 * scale - offset - sw, y2 * scale - offset - sh
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bh, bw = rh / pooled[0], rw / pooled[1]
        gh = sampling_ratio if sampling_ratio > 0 else math.ceil(bh)
        gw = sampling_ratio if sampling_ratio > 0 else math.ceil(bw)
        for ph in range(pooled[0]):
            for iy in range(gh):
                y = sh + ph * bh + (iy + 0.5) * bh / gh
                for pw in range(pooled[1]):
                    for ix in range(gw):
                        x = sw + pw * bw + (ix + 0.5) * bw / gw
                        total += 4 * (-1.0 <= y <= height and -1.0 <= x <= width)
    return total * channels


def _backward(x, rois, pooled, scale, sampling_ratio, aligned):
    x = x.detach().requires_grad_()
    y = FC.roi_align(x, rois, pooled, scale, sampling_ratio, aligned)
    grad = torch.linspace(-1, 1, y.numel()).reshape(y.shape)
    return torch.autograd.grad(y, x, grad)[0], grad


def _adds_and_per_sample_adds(x, rois, args, atomic_adds):
    """(atomic adds RoIAlign's backward made, the adds at four per sample), its gradient
    checked against torchvision's first."""
    dx, grad = _backward(x, rois, *args)
    adds = sum(atomic_adds)
    x_ref = x.detach().requires_grad_()
    dx_ref = torch.autograd.grad(tvops.roi_align(x_ref, rois, *args), x_ref, grad)[0]
    assert_rel_close(dx, dx_ref, torch.float32, "gradient")
    return adds, _per_sample_adds(rois, *x.shape[1:], *args)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_small_bins_add_once_per_distinct_pixel(atomic_adds, layout):
    # boxes of 12-40 pixels on a 1/8 feature map: bins of 0.2-0.7 pixels, sampling_ratio 2
    torch.manual_seed(0)
    x = torch.randn(1, 4, 16, 16)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    rois = torch.tensor([[0, 8.0, 8.0, 20.0, 24.0], [0, 30.0, 12.0, 70.0, 40.0],
                         [0, 100.0, 90.0, 125.0, 126.0]])
    adds, before = _adds_and_per_sample_adds(x, rois, ((7, 7), 0.125, 2, True), atomic_adds)
    # 2x2 samples in a bin under a pixel touch 2x2 (or 3x3) pixels, not 16
    assert adds <= before // 2, f"{adds} adds, {before} with four per sample"


def test_large_bins_add_no_more_than_per_sample(atomic_adds):
    # detectron2's benchmark boxes at scale 1: bins of 1-18 pixels, few shared pixels
    torch.manual_seed(0)
    x = torch.randn(1, 2, 64, 64)
    rois = torch.tensor([[0, 2.0, 3.0, 60.0, 50.0], [0, 10.0, 10.0, 19.0, 30.0],
                         [0, -5.0, 40.0, 20.0, 70.0]])
    adds, before = _adds_and_per_sample_adds(x, rois, ((7, 7), 1.0, 2, False), atomic_adds)
    assert 0 < adds < before, f"{adds} adds, {before} with four per sample"
