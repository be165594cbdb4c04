"""fastconv.models: MobileNet v1/v2, ShuffleNet v1/v2, GoogLeNet, Inception v3, U-Net and the
Fast R-CNN / Mask R-CNN region heads.

Every builder builds; the torchvision-equivalent models load torchvision's ``state_dict``
strictly (and back) with the same parameter count. Beyond tests/test_models_zoo.py's run of
every model at its smallest input, the variants run here forward and backward through
fastconv's kernels (ATen's CPU convolution, and torchvision's RoI kernels, made to raise
meanwhile) against a float64 reference holding the same weights: width multipliers, batch 2,
odd sizes, the auxiliary classifiers, the region heads on hand-placed boxes.
"""
import warnings

import pytest
import torch
import torch.nn as nn
import torchvision
import torchvision.ops as tvops

import fastconv
from fastconv.models import inception, mobilenet, roi_heads, shufflenet, unet
from fastconv.models._registry import get_model, list_models
from model_helpers import compare, randomize

FASTCONV_LAYERS = (fastconv.Conv1d, fastconv.Conv2d, fastconv.ConvTranspose2d, fastconv.RoIAlign,
                   fastconv.RoIPool, fastconv.MultiScaleRoIAlign)

OUR_BUILDERS = ["mobilenet_v1", "mobilenet_v2", "shufflenet_v1_g3", "shufflenet_v2_x0_5",
                "shufflenet_v2_x1_0", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0", "googlenet",
                "inception_v3", "unet", "fast_rcnn_box_head", "mask_rcnn_mask_head"]

# builders with a torchvision twin: (name, keyword arguments for both)
TORCHVISION_TWINS = [
    ("mobilenet_v2", {}),
    ("mobilenet_v2", dict(width_mult=0.35, num_classes=10)),
    ("shufflenet_v2_x0_5", {}),
    ("shufflenet_v2_x1_0", {}),
    ("shufflenet_v2_x1_5", {}),
    ("shufflenet_v2_x2_0", dict(num_classes=7)),
    ("googlenet", dict(aux_logits=True)),
    ("googlenet", dict(aux_logits=False, num_classes=10)),
    ("inception_v3", dict(aux_logits=True)),
    ("inception_v3", dict(aux_logits=False)),
]


# the Inception models' truncated-normal initialisation takes time and is beside the point
SLOW_INIT_OFF = {"googlenet": dict(init_weights=False), "inception_v3": dict(init_weights=False)}


def torchvision_twin(name, **kwargs):
    kwargs = {**SLOW_INIT_OFF.get(name, {}), **kwargs}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return getattr(torchvision.models, name)(**kwargs)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def to_reference(model):
    """A deep copy with every fastconv layer turned back into its torch / torchvision base
    class (fastconv's layers add no state, only a forward)."""
    ref = fastconv.unconvert(model)
    assert not any(type(m) in FASTCONV_LAYERS for m in ref.modules())
    return ref


# ------------------------------------------------------------------------------ registry, builds
def test_every_builder_is_registered():
    assert set(OUR_BUILDERS) <= set(list_models())


@pytest.mark.parametrize("name", OUR_BUILDERS)
def test_builder_builds_with_fastconv_layers_only(name):
    kwargs = dict(in_channels=8) if name == "fast_rcnn_box_head" else {}
    model = get_model(name, **kwargs)
    bases = (nn.Conv2d, nn.ConvTranspose2d, tvops.RoIAlign, tvops.RoIPool)
    layers = [m for m in model.modules() if isinstance(m, bases)]
    assert layers and all(type(m) in FASTCONV_LAYERS for m in layers)
    assert callable(getattr(model, "forward_features"))


# ------------------------------------------------------------ torchvision state_dict compatibility
@pytest.mark.parametrize("name, kwargs", TORCHVISION_TWINS,
                         ids=[f"{n}-{'-'.join(f'{k}={v}' for k, v in kw.items()) or 'default'}"
                              for n, kw in TORCHVISION_TWINS])
def test_torchvision_state_dict_loads_strictly_both_ways(name, kwargs):
    ref = torchvision_twin(name, **kwargs)
    ours = get_model(name, **kwargs, **SLOW_INIT_OFF.get(name, {}))
    assert n_params(ours) == n_params(ref)
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict(ref.state_dict(), strict=True)
    for key, value in ours.state_dict().items():
        assert torch.equal(value, ref.state_dict()[key]), key
    fresh = torchvision_twin(name, **kwargs)
    fresh.load_state_dict(ours.state_dict(), strict=True)


def test_torchvision_parameter_counts_of_the_published_models():
    # the num_params torchvision publishes for its pretrained weights
    assert n_params(mobilenet.mobilenet_v2()) == 3504872
    assert n_params(shufflenet.shufflenet_v2_x0_5()) == 1366792
    assert n_params(shufflenet.shufflenet_v2_x2_0()) == 7393996
    assert n_params(inception.googlenet(aux_logits=False, init_weights=False)) == 6624904
    assert n_params(inception.inception_v3(init_weights=False)) == 27161264


def test_mobilenet_v1_and_shufflenet_v1_parameter_counts():
    # Howard et al. 2017, Table 1 / 6: 4.2 M at width 1, 0.47 M at width 0.25 (1000 classes)
    assert n_params(mobilenet.mobilenet_v1()) == 4231976
    assert n_params(mobilenet.mobilenet_v1(width_mult=0.25)) == 470072
    assert 1.8e6 < n_params(shufflenet.shufflenet_v1_g3()) < 1.9e6


def test_googlenet_without_aux_loads_a_state_dict_with_aux_only_unstrictly():
    ref = torchvision_twin("googlenet", aux_logits=True)
    ours = inception.googlenet(aux_logits=False, init_weights=False)
    result = ours.load_state_dict(ref.state_dict(), strict=False)
    assert result.missing_keys == []
    assert result.unexpected_keys and all(k.startswith(("aux1.", "aux2."))
                                          for k in result.unexpected_keys)


# ------------------------------------------------------------ numerics against the reference
# The interpreter's cost grows with channels and pixels, so the images are the smallest each
# model takes (a 1×1 last feature map) unless a larger one exercises something more.
def image(batch, height, width=None, channels=3):
    return torch.randn(batch, channels, height, height if width is None else width)


def twin_pair(name, conv_weights=False, **kwargs):
    """torchvision's model with randomised norms, and ours holding the same state."""
    ref = randomize(torchvision_twin(name, **kwargs), conv_weights)
    model = get_model(name, **kwargs, **SLOW_INIT_OFF.get(name, {}))
    model.load_state_dict(ref.state_dict(), strict=True)
    return model, ref


def test_mobilenet_v1_matches_reference():
    model = randomize(mobilenet.mobilenet_v1(width_mult=0.25, num_classes=10))
    out = compare(model, to_reference(model), (image(2, 16),), "mobilenet_v1(width_mult=0.25)")
    assert out.shape == (2, 10)


def test_mobilenet_v2_matches_torchvision():
    # width 0.5 halves the interpreter's time; full width is covered by the state_dict tests
    model, ref = twin_pair("mobilenet_v2", width_mult=0.5, num_classes=10)
    compare(model, ref, (image(2, 16),), "mobilenet_v2(width_mult=0.5)")


def test_shufflenet_v1_g3_matches_reference():
    model = randomize(shufflenet.shufflenet_v1_g3(num_classes=10))
    compare(model, to_reference(model), (image(2, 16),), "shufflenet_v1_g3")


def test_shufflenet_v2_x0_5_matches_torchvision():
    model, ref = twin_pair("shufflenet_v2_x0_5", num_classes=10)
    compare(model, ref, (image(2, 16),), "shufflenet_v2_x0_5")


def test_googlenet_matches_torchvision():
    """Eval mode at 32×32, and the auxiliary classifiers (which run only in training mode, on
    batch statistics) compared on their own in eval mode."""
    model, ref = twin_pair("googlenet", conv_weights=True, num_classes=10, aux_logits=True)
    compare(model, ref, (image(1, 32),), "googlenet")
    for name, channels in (("aux1", 512), ("aux2", 528)):
        compare(getattr(model, name), getattr(ref, name), (image(2, 5, 3, channels),),
                f"googlenet.{name}")


def test_inception_v3_aux_classifier_matches_torchvision():
    model, ref = twin_pair("inception_v3", conv_weights=True, num_classes=10, aux_logits=True)
    compare(model.AuxLogits, ref.AuxLogits, (image(2, 17, channels=768),),
            "inception_v3.AuxLogits")


def test_unet_matches_reference():
    # 16 × 18: the smallest height; the odd widths on the way down (18 -> 9 -> 4) make the
    # expanding path pad the upsampled map to the skip's width
    model = randomize(unet.unet(base_width=8, num_classes=3))
    out = compare(model, to_reference(model), (image(2, 16, 18),), "unet(base_width=8)")
    assert out.shape == (2, 3, 16, 18)


def test_fast_rcnn_box_head_matches_reference():
    head = roi_heads.fast_rcnn_box_head(num_classes=5, in_channels=8, spatial_scale=0.25)
    features = torch.randn(2, 8, 12, 10)
    boxes = [torch.tensor([[1.0, 2.0, 30.0, 40.0], [4.5, 0.0, 20.0, 9.0]]),
             torch.tensor([[0.0, 0.0, 39.0, 47.0]])]
    scores, deltas = compare(head, to_reference(head), (features, boxes), "fast_rcnn_box_head")
    assert scores.shape == (3, 5) and deltas.shape == (3, 20)
    assert head.forward_features(features, boxes).shape == (3, 8, 7, 7)


def test_mask_rcnn_mask_head_matches_reference():
    head = roi_heads.mask_rcnn_mask_head(num_classes=4, in_channels=16, spatial_scale=0.5,
                                         layers=(16, 16, 16, 16), dim_reduced=16)
    features = torch.randn(2, 16, 9, 11)
    rois = torch.tensor([[0, 1.0, 2.0, 15.0, 13.0], [1, 3.5, 0.5, 21.0, 17.0],
                         [1, 0.0, 0.0, 4.0, 3.0]])
    masks = compare(head, to_reference(head), (features, rois), "mask_rcnn_mask_head")
    assert masks.shape == (3, 4, 28, 28)


# ---------------------------------------------------------- shapes, num_classes, training mode
# On the meta device fastconv's ops run their shape functions only: every shape is checked at
# full width and at realistic sizes for free.
SHAPE_CASES = [
    ("mobilenet_v1", {}, 224, (1024, 7, 7)),
    ("mobilenet_v1", dict(width_mult=0.5), 224, (512, 7, 7)),
    ("mobilenet_v2", {}, 224, (1280, 7, 7)),
    ("shufflenet_v1_g3", {}, 224, (960, 7, 7)),
    ("shufflenet_v2_x0_5", {}, 224, (1024, 7, 7)),
    ("shufflenet_v2_x1_0", {}, 224, (1024, 7, 7)),
    ("shufflenet_v2_x1_5", {}, 224, (1024, 7, 7)),
    ("shufflenet_v2_x2_0", {}, 224, (2048, 7, 7)),
    ("googlenet", {}, 224, (1024, 7, 7)),
    ("googlenet", {}, 15, (1024, 1, 1)),
    ("inception_v3", {}, 299, (2048, 8, 8)),
    ("inception_v3", {}, 75, (2048, 1, 1)),
]


@pytest.mark.parametrize("name, kwargs, size, features", SHAPE_CASES)
def test_num_classes_and_forward_features_shapes(name, kwargs, size, features):
    model = get_model(name, num_classes=7, **kwargs, **SLOW_INIT_OFF.get(name, {}))
    model = model.to("meta").eval()
    x = torch.empty(2, 3, size, size, device="meta")
    assert model.forward_features(x).shape == (2, *features)
    assert model(x).shape == (2, 7)


def test_unet_shapes_on_meta():
    model = unet.unet(in_channels=1, num_classes=5).to("meta")
    x = torch.empty(2, 1, 572, 389, device="meta")
    assert model.forward_features(x).shape == (2, 64, 572, 389)
    assert model(x).shape == (2, 5, 572, 389)
    with pytest.raises(ValueError, match="16"):
        model(torch.empty(1, 1, 15, 64, device="meta"))


def test_googlenet_returns_aux_logits_in_training_mode():
    model = inception.googlenet(num_classes=7, init_weights=False).to("meta")
    x = torch.empty(2, 3, 15, 15, device="meta")
    out = model.train()(x)
    assert isinstance(out, inception.GoogLeNetOutputs)
    assert [t.shape for t in out] == [(2, 7)] * 3
    assert model.eval()(x).shape == (2, 7)
    no_aux = inception.googlenet(num_classes=7, aux_logits=False, init_weights=False)
    assert no_aux.aux1 is None and no_aux.aux2 is None
    assert no_aux.to("meta").train()(x).shape == (2, 7)


def test_inception_v3_returns_aux_logits_in_training_mode():
    model = inception.inception_v3(num_classes=7, init_weights=False).to("meta")
    x = torch.empty(2, 3, 299, 299, device="meta")
    out = model.train()(x)
    assert isinstance(out, inception.InceptionOutputs)
    assert out.logits.shape == (2, 7) and out.aux_logits.shape == (2, 7)
    assert model.eval()(x).shape == (2, 7)


class _StemReached(Exception):
    pass


def test_googlenet_transform_input_matches_torchvision():
    """``transform_input`` re-normalises the image before the stem, as torchvision does: the
    stem's input is captured (and the forward stopped there) on both models."""
    ref = torchvision_twin("googlenet", transform_input=True, aux_logits=False)
    model = inception.googlenet(transform_input=True, aux_logits=False, init_weights=False)
    x = torch.randn(2, 3, 16, 16)
    seen = []

    def capture(module, inputs):
        seen.append(inputs[0])
        raise _StemReached

    for m in (model, ref):
        m.conv1.register_forward_pre_hook(capture)
        with pytest.raises(_StemReached):
            m.eval()(x)
    ours, theirs = seen
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-6)
    assert not torch.allclose(ours, x)


def test_region_heads_shapes_with_boxes_as_a_list_and_as_rois():
    features = torch.randn(2, 4, 6, 6)
    boxes = [torch.tensor([[0.0, 0.0, 20.0, 20.0]]), torch.tensor([[2.0, 2.0, 9.0, 13.0]] * 2)]
    rois = torch.cat([torch.cat([torch.full((len(b), 1), float(i)), b], 1)
                      for i, b in enumerate(boxes)])
    box_head = roi_heads.fast_rcnn_box_head(num_classes=3, in_channels=4,
                                            representation_size=32).eval()
    mask_head = roi_heads.mask_rcnn_mask_head(num_classes=2, in_channels=4, layers=(16,),
                                              dim_reduced=16)
    with torch.no_grad():
        for b in (boxes, rois):
            scores, deltas = box_head(features, b)
            assert scores.shape == (3, 3) and deltas.shape == (3, 12)
            assert mask_head.forward_features(features, b).shape == (3, 16, 14, 14)
            assert mask_head(features, b).shape == (3, 2, 28, 28)
        assert torch.equal(box_head(features, boxes)[0], box_head(features, rois)[0])
