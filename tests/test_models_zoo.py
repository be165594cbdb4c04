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
    compare(model, reference, inputs, name, dtype=torch.float64)
