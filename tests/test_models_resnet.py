"""fastconv.models.resnet and fastconv.models.densenet: torchvision's names and shapes, the
squeeze-and-excitation gate, zero-init residuals, dilation, checkpointed DenseNet layers.

Structure is checked on the meta device (no memory, no arithmetic), so every variant is cheap.
Every model's forward and backward through fastconv's kernels is tests/test_models_zoo.py's.
"""
import inspect

import pytest
import torch
import torch.nn as nn
import torchvision

import fastconv
from fastconv.models import densenet, resnet
from fastconv.models._registry import get_model, list_models
from helpers import assert_rel_close, aten_forbidden
from model_helpers import compare

RESNETS = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
           "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2"]
DENSENETS = ["densenet121", "densenet161", "densenet169", "densenet201"]
SE_RESNETS = {"se_resnet50": "resnet50", "se_resnext50_32x4d": "resnext50_32x4d"}
ALL = RESNETS + DENSENETS + list(SE_RESNETS)


def _builder(name):
    return getattr(resnet if hasattr(resnet, name) else densenet, name)


def _build_meta(name, **kwargs):
    with torch.device("meta"):
        return _builder(name)(**kwargs)


def _torchvision_meta(name, **kwargs):
    with torch.device("meta"):
        return getattr(torchvision.models, name)(**kwargs)


def _count(model):
    return sum(p.numel() for p in model.parameters())


def _to_torch(model):
    """A deep copy whose fastconv layers are their torch base classes again: the same model
    computed by ATen (fastconv's layer classes only override the forward, they add no state)."""
    return fastconv.unconvert(model)


def _randomize_norms(model):
    """Fresh batch-norm statistics and affine parameters: with the initial ones (identity in
    eval mode) a norm applied in the wrong place would go unnoticed."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model


def _head(model):
    return model.fc if isinstance(model, resnet.ResNet) else model.classifier


# ----------------------------------------------------------------------- structure (meta device)
@pytest.mark.parametrize("name", RESNETS + DENSENETS)
def test_state_dict_loads_strictly_both_ways_from_torchvision(name):
    ours, theirs = _build_meta(name), _torchvision_meta(name)
    assert _count(ours) == _count(theirs)
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: v.shape for k, v in theirs.state_dict().items()}
    ours.load_state_dict(theirs.state_dict(), strict=True)
    theirs.load_state_dict(ours.state_dict(), strict=True)


@pytest.mark.parametrize("name, plain", SE_RESNETS.items())
def test_se_variant_is_its_plain_network_plus_one_gate_per_bottleneck(name, plain):
    ours, base = _build_meta(name), _build_meta(plain)
    result = ours.load_state_dict(base.state_dict(), strict=False)
    assert result.unexpected_keys == []
    blocks = [m for m in ours.modules() if isinstance(m, resnet.Bottleneck)]
    assert len(blocks) == 16 and all(isinstance(b, resnet.SEBottleneck) for b in blocks)
    expected_missing, extra = [], 0
    prefix = {m: n for n, m in ours.named_modules()}
    for block in blocks:
        c = block.bn3.num_features
        se = block.se
        # reduction 16, FCs as 1x1 fastconv convolutions with bias (Hu et al. 2018)
        assert type(se.fc1) is fastconv.Conv2d and type(se.fc2) is fastconv.Conv2d
        assert se.fc1.weight.shape == (c // 16, c, 1, 1) and se.fc1.bias.shape == (c // 16,)
        assert se.fc2.weight.shape == (c, c // 16, 1, 1) and se.fc2.bias.shape == (c,)
        expected_missing += [f"{prefix[block]}.se.{fc}.{p}" for fc in ("fc1", "fc2")
                             for p in ("weight", "bias")]
        extra += 2 * c * (c // 16) + c // 16 + c
    assert sorted(result.missing_keys) == sorted(expected_missing)
    assert _count(ours) == _count(base) + extra


@pytest.mark.parametrize("name", ALL)
def test_every_builder_registered_fastconv_layers_num_classes_and_shapes(name):
    assert name in list_models()
    with torch.device("meta"):
        model = get_model(name, num_classes=7)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(type(m) is fastconv.Conv2d for m in convs)
    head = _head(model)
    assert head.out_features == 7
    # meta tensors run fastconv's fake (shape-only) kernels: shapes without arithmetic
    x = torch.empty(2, 3, 64, 64, device="meta")
    features = model.forward_features(x)
    assert features.shape == (2, head.in_features, 2, 2)
    assert model(x).shape == (2, 7)
    assert inspect.signature(_builder(name)).parameters["num_classes"].default == 1000


def test_builders_refuse_to_change_what_defines_the_variant():
    with pytest.raises(ValueError, match="groups"):
        resnet.resnext50_32x4d(groups=8)
    with pytest.raises(ValueError, match="width_per_group"):
        resnet.wide_resnet50_2(width_per_group=64)
    with pytest.raises(ValueError, match="groups=1"):
        resnet.ResNet(resnet.BasicBlock, [2, 2, 2, 2], groups=2)
    model = _build_meta("resnext50_32x4d", groups=32)  # the same value is accepted
    assert model.layer1[0].conv2.groups == 32


def test_zero_init_residual_zeroes_the_last_norm_of_every_branch():
    model = resnet.resnet18(zero_init_residual=True)
    assert all(torch.all(b.bn2.weight == 0) for b in model.modules()
               if isinstance(b, resnet.BasicBlock))
    model = resnet.se_resnet50(zero_init_residual=True)
    blocks = [b for b in model.modules() if isinstance(b, resnet.Bottleneck)]
    assert all(torch.all(b.bn3.weight == 0) and torch.all(b.bn1.weight == 1) for b in blocks)


def test_dilated_resnet50_keeps_the_resolution():
    model = _build_meta("resnet50", replace_stride_with_dilation=[False, True, True])
    assert model.layer4[1].conv2.dilation == (4, 4) and model.layer4[0].conv2.stride == (1, 1)
    assert model.forward_features(torch.empty(1, 3, 64, 64, device="meta")).shape[-2:] == (8, 8)


# -------------------------------------------------------------------- numbers (interpreter)
def test_squeeze_excitation_gate():
    se = resnet.SqueezeExcitation(48, reduction=16).double()
    x = torch.randn(2, 48, 3, 5, dtype=torch.float64)
    xf, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    with aten_forbidden():
        y = se(xf)
        y.backward(torch.ones_like(y))
    w1, b1 = se.fc1.weight.flatten(1), se.fc1.bias
    w2, b2 = se.fc2.weight.flatten(1), se.fc2.bias
    squeezed = xr.mean((2, 3))
    gate = torch.sigmoid(torch.relu(squeezed @ w1.T + b1) @ w2.T + b2)
    ref = xr * gate[:, :, None, None]
    ref.backward(torch.ones_like(ref))
    assert w1.shape == (3, 48)
    assert_rel_close(y, ref, torch.float64, "output")
    assert_rel_close(xf.grad, xr.grad, torch.float64, "grad_input")


@pytest.mark.parametrize("name", ["resnet18", "resnext50_32x4d", "densenet121"])
def test_forward_is_the_head_on_forward_features(name):
    """forward() = the classifier on globally pooled forward_features(), with torchvision's
    weights (ATen, float64: a structural check; the numbers through fastconv's kernels are
    tests/test_models_zoo.py's)."""
    reference = _randomize_norms(getattr(torchvision.models, name)(num_classes=10)).double()
    model = _builder(name)(num_classes=10)
    model.load_state_dict(reference.state_dict(), strict=True)
    plain = _to_torch(model).double().eval()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        pooled = nn.functional.adaptive_avg_pool2d(plain.forward_features(x), 1)
        torch.testing.assert_close(_head(plain)(torch.flatten(pooled, 1)),
                                   reference.eval()(x))


def test_memory_efficient_densenet_recomputes_through_fastconv():
    """Checkpointed dense layers recompute their bottleneck inside the backward pass (with
    ATen's convolution still forbidden); the gradients are unchanged."""
    model = densenet.DenseNet(growth_rate=16, block_config=(2, 2), num_init_features=16,
                              bn_size=2, num_classes=5, memory_efficient=True)
    _randomize_norms(model)
    reference = _to_torch(model)
    for layer in reference.modules():
        if isinstance(layer, densenet.DenseLayer):
            layer.memory_efficient = False
    calls = []
    first = model.features.denseblock1.denselayer1.norm1
    first.register_forward_hook(lambda *args: calls.append(1))
    compare(model, reference, (torch.randn(1, 3, 16, 16),), "memory-efficient DenseNet")
    assert len(calls) == 2  # the checkpointed forward, then the recomputation
