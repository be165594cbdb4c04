"""Every model of fastconv.models, forward and backward through fastconv's kernels, against its
PyTorch reference on the same weights.

The reference is the one ``fastconv verify`` uses (torchvision's model where torchvision has
it, else the model with its fastconv layers turned back into torch's). Both run in float64, the
model with ATen's CPU convolution and torchvision's RoI kernels made to raise, so every
convolution and RoI pooling is fastconv's. float64, because in float32 a whole network is not
a deterministic check: somewhere among a million pre-activations one lies within rounding of
zero, fastconv and ATen put it on different sides of a ReLU, and a norm's bias gradient moves
by a few percent (DenseNet-161 at 32x32 has one such value, |z| = 9e-8). The float32 numerics
of every kernel are the kernel tests'; tests/test_models_mobile.py runs float32 models too. Each model gets random batch-norm statistics
and He-normal weights (the Inception initialisation alone would shrink the activations until
the output is the last bias) and the smallest input it takes: the interpreter's cost grows
with every pixel and channel.

The other model test files check what is particular to an architecture (its layout, its
published sizes, auxiliary classifiers, odd sizes); this one checks that every registered
model computes what its reference computes.
"""
import pytest
import torch

import fastconv.models as models
from fastconv.verify import reference_model
from model_helpers import compare, randomize

# the Inception models' truncated-normal initialisation takes time and is overwritten anyway
_NO_INIT = {"googlenet": dict(init_weights=False), "inception_v3": dict(init_weights=False)}

# Deeper variants built from the same blocks as a sibling verified here forward and backward:
# these are verified forward (every convolution's fprop at the model's own shapes), and their
# backward is the sibling's blocks' backward, repeated. Where the sibling has every one of their
# convolution shapes (ResNet-101/152 in ResNet-50, Wide ResNet-101 in Wide ResNet-50, VGG-16/19
# in VGG-13), the sibling's backward runs the very same kernel launches; the ResNeXt-101 widths
# (64 groups of 4-32 channels, 32 of 8-64) differ from ResNeXt-50's (32 of 4-32), and grouped
# gradients at those widths are tests/test_conv2d_sweep.py's. This halves the two slowest
# models (one interpreter program per group: 64 groups, 33 blocks). `fastconv verify` runs
# every model forward and backward.
FORWARD_ONLY = {"resnet101": "resnet50", "resnet152": "resnet50",
                "wide_resnet101_2": "wide_resnet50_2", "vgg16": "vgg13", "vgg19": "vgg13",
                "vgg16_bn": "vgg13_bn", "vgg19_bn": "vgg13_bn",
                "resnext101_32x8d": "resnext50_32x4d", "resnext101_64x4d": "resnext50_32x4d"}
_DIFFERENT_WIDTHS = {"resnext101_32x8d", "resnext101_64x4d"}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: the interpreter is single-threaded Python anyway, and with other
    test processes on the same cores torch's second thread only spins."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", models.list_models())
def test_forward_backward_matches_reference(name):
    model = randomize(models.get_model(name, **_NO_INIT.get(name, {})), conv_weights=True)
    reference = reference_model(name, model)
    inputs = models.example_inputs(name, batch=1, size=models.small_input_size(name),
                                   generator=torch.Generator().manual_seed(0))
    compare(model, reference, inputs, name, dtype=torch.float64,
            backward=name not in FORWARD_ONLY)


def _conv_shapes(model) -> set:
    return {(type(m).__name__, m.in_channels, m.out_channels, m.groups, tuple(m.kernel_size),
             tuple(m.stride), tuple(m.padding), tuple(m.dilation))
            for m in model.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)}


@pytest.mark.parametrize("name", sorted(FORWARD_ONLY))
def test_forward_only_models_repeat_a_verified_sibling(name):
    """What FORWARD_ONLY claims: the sibling is verified forward and backward, is built from the
    same module types, and (but for the ResNeXt-101 widths) has every convolution shape."""
    sibling = FORWARD_ONLY[name]
    assert sibling in models.list_models() and sibling not in FORWARD_ONLY
    model, other = models.get_model(name), models.get_model(sibling)
    assert {type(m) for m in model.modules()} == {type(m) for m in other.modules()}
    if name in _DIFFERENT_WIDTHS:
        assert _conv_shapes(model) - _conv_shapes(other)
    else:
        assert _conv_shapes(model) <= _conv_shapes(other)
