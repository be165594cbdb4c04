"""The classic architectures of fastconv.models: LeNet-5, AlexNet (both layouts), ZFNet, NiN, VGG.

Shapes, parameter counts and state_dict compatibility are checked on the meta device (no
arithmetic, so every variant at its full resolution costs nothing). Every model's forward and
backward through fastconv's kernels is tests/test_models_zoo.py's.
"""

import pytest
import torch
import torch.nn as nn
import torchvision

import fastconv
import fastconv.models.classic as classic
import fastconv.models.vgg as vgg
from fastconv.models._registry import get_model, list_models

# ------------------------------------------------------------------------------ the model table
# name -> (input channels, native resolution, default num_classes, forward_features shape there,
#          smallest resolution the model accepts)
VGG_NAMES = ["vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn"]
MODELS = {
    "lenet5": (1, 32, 10, (120, 1, 1), 32),
    "alexnet": (3, 224, 1000, (256, 6, 6), 63),
    "alexnet_original": (3, 227, 1000, (256, 6, 6), 67),
    "zfnet": (3, 224, 1000, (512, 6, 6), 47),
    "nin": (3, 224, 1000, (384, 6, 6), 39),
    **{name: (3, 224, 1000, (512, 7, 7), 32) for name in VGG_NAMES},
    "vgg8_cifar": (3, 32, 10, (512, 1, 1), 32),
}
# the models torchvision has, with the same module names
TORCHVISION_EQUIVALENT = ["alexnet", *VGG_NAMES]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: the interpreter is single-threaded Python anyway, and when other
    processes share the two cores, torch's second thread spins and makes ATen many times
    slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def to_torch(model: nn.Module, inplace: bool = False) -> nn.Module:
    """A copy of ``model`` (or ``model`` itself) with every fastconv layer turned back into its
    torch base class. fastconv's classes add no state, so swapping ``__class__`` is enough."""
    return fastconv.unconvert(model, inplace=inplace)


def build_on_meta(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return get_model(name, **kwargs)


def torchvision_on_meta(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return getattr(torchvision.models, name)(**kwargs)


def meta_input(name: str, batch: int = 2, size: int = None) -> torch.Tensor:
    channels, native = MODELS[name][:2]
    size = native if size is None else size
    return torch.empty(batch, channels, size, size, device="meta")


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------------ registry
def test_every_builder_is_registered():
    assert set(MODELS) <= set(list_models())
    for name in MODELS:
        builder = getattr(vgg if name.startswith("vgg") else classic, name)
        assert builder.__name__ == name


@pytest.mark.parametrize("name", list(MODELS))
def test_builds_with_fastconv_convolutions_only(name):
    model = build_on_meta(name)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(type(m) is fastconv.Conv2d for m in convs)
    assert callable(model.forward_features)


# ------------------------------------------------------------------------------------ shapes
@pytest.mark.parametrize("name", list(MODELS))
def test_output_and_feature_shapes(name):
    channels, size, default_classes, feature_shape, _ = MODELS[name]
    x = meta_input(name)
    model = build_on_meta(name)
    assert model(x).shape == (2, default_classes)
    assert model.forward_features(x).shape == (2, *feature_shape)
    resized = build_on_meta(name, num_classes=7)
    assert resized(x).shape == (2, 7)
    assert resized.forward_features(x).shape == (2, *feature_shape)


@pytest.mark.parametrize("name", list(MODELS))
def test_smallest_input(name):
    """The resolution the numerical test below runs at is the smallest the model takes."""
    smallest = MODELS[name][4]
    model = build_on_meta(name, num_classes=5).eval()
    assert model(meta_input(name, 1, smallest)).shape == (1, 5)
    with pytest.raises((RuntimeError, ValueError)):  # fastconv: ValueError, torch: RuntimeError
        model(meta_input(name, 1, smallest - 1))


# ----------------------------------------------------------------------- torchvision equivalence
@pytest.mark.parametrize("name", TORCHVISION_EQUIVALENT)
def test_state_dict_loads_strictly_both_ways(name):
    model, ref = build_on_meta(name), torchvision_on_meta(name)
    assert n_params(model) == n_params(ref)
    assert [(k, v.shape) for k, v in model.state_dict().items()] == \
        [(k, v.shape) for k, v in ref.state_dict().items()]
    # strict loading checks keys and shapes, which the meta device keeps
    model.load_state_dict(ref.state_dict(), strict=True)
    ref.load_state_dict(model.state_dict(), strict=True)
    resized, ref_resized = build_on_meta(name, num_classes=7), torchvision_on_meta(name, num_classes=7)
    resized.load_state_dict(ref_resized.state_dict(), strict=True)
    assert n_params(resized) == n_params(ref_resized)


def _fill_randomly(model: nn.Module) -> nn.Module:
    """Materialise a meta-device model on the CPU with random values (the same ops in the same
    order give bitwise-equal results for any finite values), much faster than the builders'
    initialisation of 100M-parameter classifiers: big tensors repeat one random block."""
    model = model.to_empty(device="cpu")
    block = torch.rand(1 << 20) * 2 - 1
    for name, t in model.state_dict().items():
        flat = t.view(-1)
        if name.endswith("running_var"):
            flat.uniform_(0.5, 1.5)
        elif name.endswith("num_batches_tracked"):
            flat.zero_()
        else:
            scale = (6.0 / t[0].numel()) ** 0.5 if t.dim() > 1 else 0.2  # Kaiming's variance
            for start in range(0, flat.numel(), block.numel()):
                chunk = flat[start:start + block.numel()]
                chunk.copy_(block[:chunk.numel()] * scale)
    return model


@pytest.mark.parametrize("name", TORCHVISION_EQUIVALENT)
def test_same_computation_as_torchvision(name):
    """With torchvision's weights and fastconv's layers turned back into torch's, the model
    computes exactly what torchvision's does: same layers in the same order. (That fastconv's
    layers compute what torch's do is the numerical test below.)"""
    ref = _fill_randomly(torchvision_on_meta(name, num_classes=10)).eval()
    model = build_on_meta(name, num_classes=10)
    model.load_state_dict(ref.state_dict(), strict=True, assign=True)
    model = to_torch(model, inplace=True).eval()
    x = torch.randn(2, 3, MODELS[name][4], MODELS[name][4])
    with torch.no_grad():
        assert torch.equal(model(x), ref(x))
        assert torch.equal(model.forward_features(x), ref.features(x))


# ---------------------------------------------------------------------- per-architecture facts
def test_lenet5_parameter_count():
    """C1 156 + C3 2,416 + C5 48,120 + F6 10,164 + output 850 (full C3 connectivity, pooling
    without trainable coefficients): 61,706, the usual ~61.7K."""
    model = build_on_meta("lenet5")
    expected = (6 * 1 * 25 + 6) + (16 * 6 * 25 + 16) + (120 * 16 * 25 + 120) \
        + (120 * 84 + 84) + (84 * 10 + 10)
    assert n_params(model) == expected == 61_706
    assert abs(n_params(model) - 61_700) / 61_700 < 0.03
    assert sum(isinstance(m, nn.Tanh) for m in model.modules()) == 4
    assert sum(isinstance(m, nn.AvgPool2d) for m in model.modules()) == 2
    assert n_params(build_on_meta("lenet5", in_channels=3)) == expected + 2 * 6 * 25


def test_alexnet_original_two_towers():
    model = classic.alexnet_original()
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [96, 256, 384, 384, 256]
    assert [c.groups for c in convs] == [1, 2, 1, 2, 2]
    assert sum(isinstance(m, nn.LocalResponseNorm) for m in model.modules()) == 2
    weights = sum(c.weight.numel() + c.bias.numel() for c in convs)
    assert weights == 34_944 + 307_456 + 885_120 + 663_936 + 442_624
    assert n_params(model) == 60_965_224
    # the paper's initialisation: biases of 1 in conv2, conv4, conv5 and the hidden fc layers
    linears = [m for m in model.classifier if isinstance(m, nn.Linear)]
    ones = [bool((m.bias == 1).all()) for m in convs + linears]
    assert ones == [False, True, False, True, True, True, True, False]
    assert 0.009 < convs[2].weight.std().item() < 0.011


def test_zfnet_map_sizes_are_those_of_the_paper():
    """Fig. 3 of Zeiler & Fergus: 224 -> 110 (conv1) -> 55 (pool) -> 26 (conv2) -> 13 (pool)
    -> 13 (conv3-5) -> 6 (pool)."""
    model = build_on_meta("zfnet")
    sizes = []
    for m in model.features:
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d)):
            m.register_forward_hook(lambda mod, inp, out: sizes.append(out.shape[-1]))
    model.forward_features(meta_input("zfnet"))
    assert sizes == [110, 55, 26, 13, 13, 13, 13, 6]
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (96, (7, 7), (2, 2)), (256, (5, 5), (2, 2)), (512, (3, 3), (1, 1)),
        (1024, (3, 3), (1, 1)), (512, (3, 3), (1, 1))]
    figure3 = build_on_meta("zfnet", conv3_5_channels=(384, 384, 256))
    assert figure3.forward_features(meta_input("zfnet")).shape == (2, 256, 6, 6)


def test_nin_has_no_fully_connected_layer():
    model = build_on_meta("nin", num_classes=7)
    assert not any(isinstance(m, nn.Linear) for m in model.modules())
    blocks = [m for m in model.modules() if isinstance(m, classic.MLPConv)]
    assert len(blocks) == 4
    for block in blocks:
        convs = [m for m in block if isinstance(m, nn.Conv2d)]
        assert [c.kernel_size for c in convs[1:]] == [(1, 1), (1, 1)]
    assert blocks[-1][-2].out_channels == 7
    assert isinstance(model.classifier[-2], nn.AdaptiveAvgPool2d)


def test_vgg8_cifar_layout():
    model = build_on_meta("vgg8_cifar")
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 256, 512, 512, 512, 512]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.features) == 8
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.features) == 5
    assert isinstance(model.classifier, nn.Linear) and model.classifier.in_features == 512
    assert n_params(model) == 9_231_114
    # the trunk is VGG-11-BN's: torchvision's vgg11_bn features load into it
    model.features.load_state_dict(torchvision_on_meta("vgg11_bn").features.state_dict(),
                                   strict=True)


def test_builder_keyword_arguments_reach_the_model():
    assert build_on_meta("vgg16", dropout=0.25).classifier[2].p == 0.25
    assert build_on_meta("alexnet", dropout=0.1).classifier[0].p == 0.1
    assert build_on_meta("nin", dropout=0.2).classifier[0].p == 0.2
    with pytest.raises(TypeError):
        build_on_meta("vgg11", 10)  # num_classes is keyword-only
