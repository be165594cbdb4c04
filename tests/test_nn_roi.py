"""fastconv.RoIAlign / RoIPool / MultiScaleRoIAlign as drop-in torchvision modules, and convert()
on models holding them."""
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn
import torchvision
import torchvision.ops as tvops

import fastconv
from helpers import ATenRan, assert_rel_close, aten_forbidden

# torchvision's CPU kernels (forward and backward): they must not run inside a fastconv call
TV_ROI_OPS = ("roi_align", "_roi_align_backward", "roi_pool", "_roi_pool_backward")


def tv_forbidden():
    return aten_forbidden(ops=TV_ROI_OPS, namespace="torchvision")


def random_boxes(n, height, width, lo=1.0, hi=None, margin=2.0, dtype=torch.float32):
    """``Tensor[n, 4]`` boxes (x1, y1, x2, y2) with sides spread log-uniformly in [lo, hi];
    some reach past the image by up to ``margin``."""
    hi = hi if hi is not None else max(height, width)
    log_side = torch.empty(n, 2, dtype=torch.float64).uniform_(torch.tensor(lo).log().item(),
                                                               torch.tensor(hi).log().item())
    side = log_side.exp()
    x1 = torch.empty(n, dtype=torch.float64).uniform_(-margin, width + margin) - side[:, 0] / 2
    y1 = torch.empty(n, dtype=torch.float64).uniform_(-margin, height + margin) - side[:, 1] / 2
    return torch.stack([x1, y1, x1 + side[:, 0], y1 + side[:, 1]], dim=1).to(dtype)


def as_rois(boxes):
    """list[Tensor[L, 4]] -> Tensor[K, 5] with the image index first."""
    return torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], dim=1)
                      for i, b in enumerate(boxes)])


# ------------------------------------------------------------------ constructor, repr, attributes
MODULE_CASES = [
    pytest.param(tvops.RoIAlign, fastconv.RoIAlign, ((2, 3), 0.5, 2), {}, id="roi_align"),
    pytest.param(tvops.RoIAlign, fastconv.RoIAlign, (7, 1 / 16, -1), dict(aligned=True),
                 id="roi_align_aligned_int_size"),
    pytest.param(tvops.RoIPool, fastconv.RoIPool, ((3, 2), 0.25), {}, id="roi_pool"),
    pytest.param(tvops.RoIPool, fastconv.RoIPool, (5, 1.0), {}, id="roi_pool_int_size"),
    pytest.param(tvops.MultiScaleRoIAlign, fastconv.MultiScaleRoIAlign, (["0", "1"], 7, 2), {},
                 id="multiscale"),
    pytest.param(tvops.MultiScaleRoIAlign, fastconv.MultiScaleRoIAlign, (["p2"], (3, 5), -1),
                 dict(canonical_scale=112, canonical_level=3), id="multiscale_canonical"),
]


@pytest.mark.parametrize("tv_cls, fc_cls, args, kwargs", MODULE_CASES)
def test_module_has_torchvision_constructor_repr_and_attributes(tv_cls, fc_cls, args, kwargs):
    ref, mod = tv_cls(*args, **kwargs), fc_cls(*args, **kwargs)
    assert isinstance(mod, tv_cls) and type(mod) is not tv_cls
    assert repr(mod) == "fastconv." + repr(ref).replace(tv_cls.__name__, fc_cls.__name__, 1)
    assert fc_cls.__name__ == tv_cls.__name__
    assert vars(mod) == vars(ref)
    # no constructor of its own: convert() may swap a torchvision instance's class
    assert "__init__" not in vars(fc_cls)
    assert list(mod.state_dict()) == [] and list(mod.parameters()) == []


def test_modules_are_exported():
    assert fastconv.nn.RoIAlign is fastconv.RoIAlign
    assert fastconv.nn.RoIPool is fastconv.RoIPool
    assert fastconv.nn.MultiScaleRoIAlign is fastconv.MultiScaleRoIAlign
    for name in ("RoIAlign", "RoIPool", "MultiScaleRoIAlign"):
        assert name in fastconv.__all__ and name in fastconv.nn.__all__


def test_forbidding_torchvision_really_stops_its_kernels():
    """The proof used below is only a proof if torchvision's calls fail inside it."""
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 0.5, 0.5, 3.0, 4.0]], dtype=torch.float64)
    with tv_forbidden():
        with pytest.raises(ATenRan, match="roi_align"):
            tvops.roi_align(x, rois, 2)
        with pytest.raises(ATenRan, match="roi_pool"):
            tvops.roi_pool(x, rois, 2)
    tvops.roi_align(x, rois, 2).sum().backward()  # and the override is gone afterwards


# ------------------------------------------------------------------ RoIAlign / RoIPool forward
@pytest.mark.parametrize("boxes_as", ["tensor", "list"])
@pytest.mark.parametrize("tv_cls, fc_cls, args, kwargs", [
    pytest.param(tvops.RoIAlign, fastconv.RoIAlign, ((3, 2), 0.5, 2), {}, id="align"),
    pytest.param(tvops.RoIAlign, fastconv.RoIAlign, (3, 0.5, -1), dict(aligned=True),
                 id="align_aligned_adaptive"),
    pytest.param(tvops.RoIPool, fastconv.RoIPool, ((2, 3), 0.5), {}, id="pool"),
])
def test_module_forward_and_backward_match_torchvision(tv_cls, fc_cls, args, kwargs, boxes_as):
    ref, mod = tv_cls(*args, **kwargs), fc_cls(*args, **kwargs)
    n, c, h, w = 2, 3, 9, 11
    x = torch.randn(n, c, h, w, dtype=torch.float64)
    # boxes in image coordinates: spatial_scale 0.5 maps them onto the 9x11 feature map
    boxes = [random_boxes(5, 2 * h, 2 * w, dtype=x.dtype),
             random_boxes(4, 2 * h, 2 * w, dtype=x.dtype)]
    rois = as_rois(boxes) if boxes_as == "tensor" else boxes

    xf, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    with tv_forbidden():
        y = mod(xf, rois)
        grad_out = torch.randn_like(y)
        y.backward(grad_out)
    y_ref = ref(xr, rois)
    y_ref.backward(grad_out)
    assert y.shape == (9, c) + y_ref.shape[2:]
    assert_rel_close(y, y_ref, torch.float64, "output")
    assert_rel_close(xf.grad, xr.grad, torch.float64, "grad_input")


def test_roi_align_module_float32_with_an_empty_image():
    """Float32, and a batch whose middle image has no boxes (list form)."""
    ref, mod = tvops.RoIAlign((4, 4), 0.25, 2), fastconv.RoIAlign((4, 4), 0.25, 2)
    x = torch.randn(3, 4, 8, 8)
    boxes = [random_boxes(3, 32, 32), torch.zeros(0, 4), random_boxes(2, 32, 32)]
    with tv_forbidden():
        y = mod(x, boxes)
    assert_rel_close(y, ref(x, boxes), torch.float32, "output")


# ------------------------------------------------------------------ MultiScaleRoIAlign
def pyramid(image_shapes, strides, names=("a", "b", "c"), channels=4, dtype=torch.float32,
            extra=True):
    """A feature dict as an FPN makes it, one level per stride (plus an unused "pool" level)."""
    height = max(s[0] for s in image_shapes)
    width = max(s[1] for s in image_shapes)
    feats = OrderedDict()
    for name, stride in zip(names, strides):
        feats[name] = torch.randn(len(image_shapes), channels, height // stride, width // stride,
                                  dtype=dtype)
    if extra:
        feats["pool"] = torch.randn(len(image_shapes), channels, 1, 1, dtype=dtype)
    return feats


def run_both(featmap_names, output_size, sampling_ratio, feats, boxes, image_shapes,
             backward=True, **kwargs):
    """The fastconv and torchvision modules on the same input; outputs and feature gradients."""
    ref = tvops.MultiScaleRoIAlign(featmap_names, output_size, sampling_ratio, **kwargs)
    mod = fastconv.MultiScaleRoIAlign(featmap_names, output_size, sampling_ratio, **kwargs)
    fr = OrderedDict((k, v.clone().requires_grad_()) for k, v in feats.items())
    ff = OrderedDict((k, v.clone().requires_grad_()) for k, v in feats.items())
    with tv_forbidden():
        y = mod(ff, boxes, image_shapes)
        grad_out = torch.randn_like(y)
        if backward:
            y.backward(grad_out)
    y_ref = ref(fr, boxes, image_shapes)
    if backward:
        y_ref.backward(grad_out)
    return mod, ref, y, y_ref, ff, fr


def assert_same(mod, ref, y, y_ref, ff, fr, dtype):
    assert mod.scales == ref.scales
    assert vars(mod.map_levels) == vars(ref.map_levels)
    assert y.dtype == y_ref.dtype
    assert_rel_close(y, y_ref, dtype, "output")
    for name in ff:
        if fr[name].grad is None:
            assert ff[name].grad is None or not ff[name].grad.any(), f"grad {name}"
        else:
            assert_rel_close(ff[name].grad, fr[name].grad, dtype, f"grad {name}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("image_shapes, kwargs", [
    # torchvision's defaults: sqrt(area) < 112 -> level 2, < 224 -> 3, else 4
    pytest.param([(448, 512), (400, 480)], {}, id="default_canonical"),
    # a small image with a smaller canonical box: < 32 -> level 2, < 64 -> 3, else 4
    pytest.param([(128, 112), (96, 128)], dict(canonical_scale=32, canonical_level=3),
                 id="custom_canonical"),
])
def test_multiscale_matches_torchvision_on_every_level(image_shapes, kwargs, dtype):
    feats = pyramid(image_shapes, strides=(4, 8, 16), dtype=dtype)
    boxes = []
    for (h, w), n in zip(image_shapes, (23, 17)):
        boxes.append(random_boxes(n, h, w, lo=4.0, hi=1.2 * max(h, w), dtype=dtype))
    mod, ref, y, y_ref, ff, fr = run_both(["a", "b", "c"], (3, 4), 2, feats, boxes,
                                          image_shapes, **kwargs)
    assert mod.scales == [0.25, 0.125, 0.0625]
    levels = ref.map_levels(boxes)
    assert set(levels.tolist()) == {0, 1, 2}, "the boxes must span all three levels"
    assert y.shape == (40, 4, 3, 4)
    assert_same(mod, ref, y, y_ref, ff, fr, dtype)
    assert ff["pool"].grad is None


def test_multiscale_takes_the_levels_in_the_dicts_order():
    """torchvision filters the feature dict by featmap_names but keeps the dict's order."""
    image_shapes = [(128, 128)]
    feats = pyramid(image_shapes, strides=(4, 8, 16), names=("a", "b", "c"))
    boxes = [random_boxes(30, 128, 128, lo=4.0, hi=160.0)]
    kwargs = dict(canonical_scale=32, canonical_level=3)
    mod, ref, y, y_ref, ff, fr = run_both(["c", "a", "b"], 3, 2, feats, boxes, image_shapes,
                                          **kwargs)
    assert mod.scales == [0.25, 0.125, 0.0625]
    assert_same(mod, ref, y, y_ref, ff, fr, torch.float32)
    in_order = fastconv.MultiScaleRoIAlign(["a", "b", "c"], 3, 2, **kwargs)
    with tv_forbidden():
        assert torch.equal(in_order(feats, boxes, image_shapes), y.detach())

    # and a dict whose own order is not the order of the pyramid
    shuffled = OrderedDict((k, feats[k]) for k in ("b", "a", "c"))
    mod, ref, y, y_ref, ff, fr = run_both(["a", "b", "c"], 3, 2, shuffled, boxes, image_shapes,
                                          **kwargs)
    assert mod.scales == [0.125, 0.25, 0.0625]
    assert_same(mod, ref, y, y_ref, ff, fr, torch.float32)


@pytest.mark.parametrize("name", ["a", "b"])
def test_multiscale_single_level(name):
    image_shapes = [(64, 80), (60, 72)]
    feats = pyramid(image_shapes, strides=(4, 8, 16))
    boxes = [random_boxes(6, 64, 80, lo=2.0), random_boxes(5, 60, 72, lo=2.0)]
    mod, ref, y, y_ref, ff, fr = run_both([name], (2, 3), -1, feats, boxes, image_shapes)
    assert mod.scales == [0.25 if name == "a" else 0.125]
    assert_same(mod, ref, y, y_ref, ff, fr, torch.float32)


def test_multiscale_keeps_scales_from_the_first_forward():
    """Like torchvision, scales and the level mapper are inferred once, then reused."""
    feats = pyramid([(64, 64)], strides=(4, 8, 16), extra=False)
    boxes = [random_boxes(8, 64, 64, lo=2.0)]
    ref = tvops.MultiScaleRoIAlign(["a", "b", "c"], 2, 2, canonical_scale=16, canonical_level=3)
    mod = fastconv.MultiScaleRoIAlign(["a", "b", "c"], 2, 2, canonical_scale=16,
                                      canonical_level=3)
    assert mod.scales is None and mod.map_levels is None
    with tv_forbidden():
        mod(feats, boxes, [(64, 64)])
        mapper = mod.map_levels
        # a second call with other image shapes keeps what the first inferred
        y = mod(feats, boxes, [(256, 256)])
    ref(feats, boxes, [(64, 64)])
    y_ref = ref(feats, boxes, [(256, 256)])
    assert mod.scales == ref.scales == [0.25, 0.125, 0.0625]
    assert mod.map_levels is mapper
    assert isinstance(mapper, torchvision.ops.poolers.LevelMapper)
    assert_rel_close(y, y_ref, torch.float32, "second call")

    # scales set by hand are used as they are
    mod.scales, ref.scales = [0.5, 0.25, 0.125], [0.5, 0.25, 0.125]
    with tv_forbidden():
        y = mod(feats, boxes, [(64, 64)])
    assert_rel_close(y, ref(feats, boxes, [(64, 64)]), torch.float32, "scales set by hand")


def test_multiscale_refuses_empty_inputs():
    feats = pyramid([(32, 32)], strides=(4, 8))
    mod = fastconv.MultiScaleRoIAlign(["x"], 2, 2)
    with pytest.raises(ValueError, match="featmap_names"):
        mod(feats, [random_boxes(2, 32, 32)], [(32, 32)])
    mod = fastconv.MultiScaleRoIAlign(["a", "b"], 2, 2)
    with pytest.raises(ValueError, match="empty"):
        mod(feats, [random_boxes(2, 32, 32)], [])


# ------------------------------------------------------------------ convert()
class RoINet(nn.Module):
    """A backbone conv and every RoI module, nested a level down."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.heads = nn.ModuleDict({
            "align": tvops.RoIAlign((2, 2), 0.5, 2, aligned=True),
            "pool": tvops.RoIPool((2, 3), 0.5),
            "multi": tvops.MultiScaleRoIAlign(["0", "1"], 2, 2, canonical_scale=16,
                                              canonical_level=2),
        })

    def forward(self, images, boxes):
        f0 = self.backbone(images)
        feats = OrderedDict([("0", f0), ("1", nn.functional.max_pool2d(f0, 2))])
        shapes = [tuple(images.shape[-2:])] * images.shape[0]
        return torch.cat([
            self.heads["align"](f0, boxes).flatten(1),
            self.heads["pool"](f0, boxes).flatten(1),
            self.heads["multi"](feats, boxes, shapes).flatten(1),
        ], dim=1)


def test_convert_replaces_nested_roi_modules_and_leaves_the_original_alone():
    ref = RoINet().double()
    model = fastconv.convert(ref)
    assert type(model.backbone) is fastconv.Conv2d
    assert type(model.heads["align"]) is fastconv.RoIAlign
    assert type(model.heads["pool"]) is fastconv.RoIPool
    assert type(model.heads["multi"]) is fastconv.MultiScaleRoIAlign
    assert type(ref.backbone) is nn.Conv2d
    assert type(ref.heads["align"]) is tvops.RoIAlign
    assert type(ref.heads["pool"]) is tvops.RoIPool
    assert type(ref.heads["multi"]) is tvops.MultiScaleRoIAlign
    for name in ("align", "pool", "multi"):
        assert vars(model.heads[name]) == vars(ref.heads[name])
        assert repr(model.heads[name]) == "fastconv." + repr(ref.heads[name])

    images = torch.randn(2, 3, 16, 14, dtype=torch.float64)
    boxes = [random_boxes(4, 16, 14, hi=16.0, dtype=torch.float64),
             random_boxes(3, 16, 14, hi=16.0, dtype=torch.float64)]
    with tv_forbidden(), aten_forbidden():
        y = model(images, boxes)
        y.sum().backward()
    y_ref = ref(images, boxes)
    y_ref.sum().backward()
    assert_rel_close(y, y_ref, torch.float64, "output")
    assert_rel_close(model.backbone.weight.grad, ref.backbone.weight.grad, torch.float64,
                     "grad weight")


def test_convert_a_bare_roi_module_keeps_its_cached_scales():
    msra = tvops.MultiScaleRoIAlign(["a", "b"], 2, 2, canonical_scale=16, canonical_level=3)
    feats = pyramid([(32, 32)], strides=(4, 8), names=("a", "b"), extra=False)
    boxes = [random_boxes(5, 32, 32, lo=2.0)]
    msra(feats, boxes, [(32, 32)])
    converted = fastconv.convert(msra)
    assert type(converted) is fastconv.MultiScaleRoIAlign and type(msra) is tvops.MultiScaleRoIAlign
    assert converted.scales == msra.scales and converted.scales is not msra.scales
    assert vars(converted.map_levels) == vars(msra.map_levels)
    with tv_forbidden():
        # image shapes that would infer other scales: the cached ones must be used
        y = converted(feats, boxes, [(128, 128)])
    assert_rel_close(y, msra(feats, boxes, [(128, 128)]), torch.float32, "output")

    inplace = tvops.RoIPool(2, 1.0)
    assert fastconv.convert(inplace, inplace=True) is inplace
    assert type(inplace) is fastconv.RoIPool


def test_convert_leaves_roi_subclasses_alone():
    class Scaled(tvops.RoIAlign):
        def forward(self, input, rois):
            return super().forward(input, rois) * 2

    model = nn.Sequential(Scaled(2, 1.0, 2), tvops.RoIAlign(2, 1.0, 2))
    out = fastconv.convert(model)
    assert type(out[0]) is Scaled and type(out[1]) is fastconv.RoIAlign
