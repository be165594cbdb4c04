"""torchvision's Faster R-CNN (ResNet-50 FPN) converted by fastconv.convert gives the same
detections: every convolution and the box head's MultiScaleRoIAlign run on fastconv's kernels."""
import pytest
import torch
import torch.nn as nn
import torchvision
import torchvision.ops as tvops

import fastconv
from interpreter_speed import whole_model
from helpers import aten_forbidden

# small images and few proposals keep the interpreter run short; box_score_thresh=0 keeps the
# detections of a randomly initialised model instead of dropping them all, and a cap above
# 50 proposals x 4 classes means no detection is cut off between two near-tied scores
SMALL = dict(num_classes=5, min_size=64, max_size=64, rpn_pre_nms_top_n_test=50,
             rpn_post_nms_top_n_test=50, box_score_thresh=0.0, box_detections_per_img=200)


def match_detections(det, ref):
    """Pair each reference detection with a detection of ``det`` of the same label, nearest in
    box and score, so that order flips between near-tied scores do not count as differences.
    Returns the index into ``det`` of each reference detection."""
    cost = (ref["boxes"][:, None, :] - det["boxes"][None, :, :]).abs().amax(dim=2)
    cost = cost + (ref["scores"][:, None] - det["scores"][None, :]).abs() * 1e3
    cost[ref["labels"][:, None] != det["labels"][None, :]] = float("inf")
    return cost.argmin(dim=1)


@pytest.fixture(scope="module")
def detector():
    torch.manual_seed(0)
    model = torchvision.models.detection.fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, **SMALL)
    return model.eval()


def test_converted_faster_rcnn_gives_the_same_detections(detector):
    torch.manual_seed(1)
    images = [torch.rand(3, 64, 64), torch.rand(3, 56, 64)]
    model = fastconv.convert(detector)

    n_conv = sum(type(m) is nn.Conv2d for m in detector.modules())
    assert n_conv > 50
    assert sum(type(m) is fastconv.Conv2d for m in model.modules()) == n_conv
    assert not any(type(m) in (nn.Conv2d, tvops.MultiScaleRoIAlign) for m in model.modules())
    assert type(model.roi_heads.box_roi_pool) is fastconv.MultiScaleRoIAlign
    assert type(detector.roi_heads.box_roi_pool) is tvops.MultiScaleRoIAlign

    with torch.no_grad():
        # torchvision's RoIAlign kernel and ATen's convolution raise if anything reaches them
        # (in the interpreter's whole-model mode: the same kernels, fewer and larger programs)
        with aten_forbidden(ops=("roi_align",), namespace="torchvision"), aten_forbidden(), \
                whole_model():
            out = model(images)
        ref = detector(images)

    assert model.roi_heads.box_roi_pool.scales == detector.roi_heads.box_roi_pool.scales
    for i, (det, want) in enumerate(zip(out, ref)):
        n = len(want["boxes"])
        assert n > 0, f"image {i}: the reference model detected nothing to compare"
        assert len(det["boxes"]) == n, f"image {i}: {len(det['boxes'])} detections, want {n}"
        idx = match_detections(det, want)
        assert sorted(idx.tolist()) == list(range(n)), f"image {i}: detections do not pair up"
        assert torch.equal(det["labels"][idx], want["labels"])
        # boxes are in pixels of a 64-pixel image; scores are probabilities
        torch.testing.assert_close(det["boxes"][idx], want["boxes"], rtol=0, atol=1e-2)
        torch.testing.assert_close(det["scores"][idx], want["scores"], rtol=0, atol=1e-4)
