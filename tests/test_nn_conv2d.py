"""fastconv.Conv2d as a drop-in nn.Conv2d, and fastconv.convert on real torchvision models."""

import pytest
import torch
import torch.nn as nn
import torchvision

import fastconv
from interpreter_speed import whole_model
from helpers import assert_rel_close, aten_forbidden, rel_err


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("kwargs", [
    dict(in_channels=4, out_channels=6, kernel_size=3, padding=1),
    dict(in_channels=16, out_channels=16, kernel_size=(3, 2), stride=2, padding=(2, 1), dilation=(1, 2), groups=1),
    dict(in_channels=6, out_channels=12, kernel_size=3, padding="same", groups=3, bias=False),
])
def test_conv2d_module_matches_torch(padding_mode, kwargs):
    ref = nn.Conv2d(**kwargs, padding_mode=padding_mode).double()
    mod = fastconv.Conv2d(**kwargs, padding_mode=padding_mode, dtype=torch.float64)
    mod.load_state_dict(ref.state_dict())
    x = torch.randn(2, kwargs["in_channels"], 7, 6, dtype=torch.float64)
    xr, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
    with aten_forbidden():
        y = mod(xf)
        y.backward(torch.ones_like(y))
    y_ref = ref(xr)
    y_ref.backward(torch.ones_like(y_ref))
    assert_rel_close(y, y_ref, torch.float64, "output")
    assert_rel_close(xf.grad, xr.grad, torch.float64, "grad_input")
    for (name, p), p_ref in zip(mod.named_parameters(), ref.parameters()):
        assert_rel_close(p.grad, p_ref.grad, torch.float64, f"grad {name}")


def test_negative_padding_crops_as_torch_and_a_crop_to_nothing_names_padding():
    # torch's constructor takes a negative padding; with a padding_mode other than zeros F.pad
    # then crops the input. A crop that leaves something runs as torch; one that leaves nothing
    # gets an error naming padding (torch's F.pad fails with "numel: integer multiplication
    # overflow").
    ref = nn.Conv2d(2, 3, 1, padding=-1, padding_mode="reflect").double()
    mod = fastconv.Conv2d(2, 3, 1, padding=-1, padding_mode="reflect", dtype=torch.float64)
    mod.load_state_dict(ref.state_dict())
    x = torch.randn(1, 2, 5, 4, dtype=torch.float64)
    with aten_forbidden():
        y = mod(x)
    assert_rel_close(y, ref(x), torch.float64, "cropped output")
    assert y.shape == (1, 3, 3, 2)
    with pytest.raises(ValueError, match="padding"), aten_forbidden():
        mod(torch.randn(1, 2, 2, 1, dtype=torch.float64))
    conv1d = fastconv.Conv1d(2, 3, 1, padding=-2, padding_mode="circular")
    with pytest.raises(ValueError, match="padding"), aten_forbidden():
        conv1d(torch.randn(2, 4))


def test_conv_transpose2d_module_string_padding_names_padding():
    # torch's constructor stores padding='same' as ('same', 'same'); its forward then fails with
    # a TypeError from the output-size arithmetic
    mod = fastconv.ConvTranspose2d(1, 1, 3, padding="same")
    for output_size in (None, [4, 5]):
        with pytest.raises(ValueError, match="padding"), aten_forbidden():
            mod(torch.randn(1, 1, 4, 5), output_size)


def test_conv2d_module_is_an_nn_conv2d_with_the_same_state():
    torch.manual_seed(1)
    ref = nn.Conv2d(3, 8, 5, stride=2, padding=2, bias=True, padding_mode="reflect")
    torch.manual_seed(1)
    mod = fastconv.Conv2d(3, 8, 5, stride=2, padding=2, bias=True, padding_mode="reflect")
    assert isinstance(mod, nn.Conv2d)
    assert repr(mod) == "fastconv." + repr(ref)
    assert list(mod.state_dict()) == list(ref.state_dict())
    # round trips both ways, strict
    fresh_ref = nn.Conv2d(3, 8, 5, stride=2, padding=2, padding_mode="reflect")
    fresh_ref.load_state_dict(mod.state_dict(), strict=True)
    fresh_mod = fastconv.Conv2d(3, 8, 5, stride=2, padding=2, padding_mode="reflect")
    fresh_mod.load_state_dict(ref.state_dict(), strict=True)
    for a, b in zip(fresh_ref.state_dict().values(), fresh_mod.state_dict().values()):
        assert torch.equal(a, b)


def test_conv2d_module_dtype_device_and_unbatched():
    mod = fastconv.Conv2d(4, 5, 3, padding=1, device="cpu", dtype=torch.bfloat16)
    assert mod.weight.dtype == torch.bfloat16 and mod.weight.device.type == "cpu"
    x = torch.randn(4, 6, 6, dtype=torch.bfloat16)
    with aten_forbidden():
        y = mod(x)
    ref = nn.functional.conv2d(x.double(), mod.weight.double(), mod.bias.double(), padding=1)
    assert y.shape == (5, 6, 6) and y.dtype == torch.bfloat16
    assert_rel_close(y, ref, torch.bfloat16, "unbatched output")


def _compare_models(ref_model, size, batch=2):
    """convert(ref_model) against ref_model: output and every parameter gradient."""
    ref_model.eval()
    model = fastconv.convert(ref_model)
    assert model is not ref_model
    n_conv = sum(type(m) is nn.Conv2d for m in ref_model.modules())
    assert n_conv > 0
    assert sum(type(m) is fastconv.Conv2d for m in model.modules()) == n_conv
    assert not any(type(m) is nn.Conv2d for m in model.modules())
    x = torch.randn(batch, 3, size, size)
    with aten_forbidden(), whole_model():  # the same kernels, fewer and larger programs
        y = model(x)
        y.sum().backward()
    y_ref = ref_model(x)
    y_ref.sum().backward()
    assert_rel_close(y, y_ref, torch.float32, "model output")
    worst = max(rel_err(p.grad, p_ref.grad) for p, p_ref in zip(model.parameters(), ref_model.parameters()))
    assert worst < 1e-4, f"worst parameter-gradient relative error {worst:.2e}"


def test_convert_resnet18_matches_torchvision():
    _compare_models(torchvision.models.resnet18(num_classes=10), size=32)


def test_convert_mobilenet_v2_matches_torchvision():
    _compare_models(torchvision.models.mobilenet_v2(num_classes=10), size=32)


def test_convert_keeps_parameters_and_leaves_the_original_alone():
    ref = torchvision.models.resnet18(num_classes=10)
    converted = fastconv.convert(ref)
    assert all(type(m) is not fastconv.Conv2d for m in ref.modules())
    for (n1, p1), (n2, p2) in zip(ref.state_dict().items(), converted.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2)
    inplace = fastconv.convert(ref, inplace=True)
    assert inplace is ref and isinstance(ref.conv1, fastconv.Conv2d)
    assert ref.conv1.weight is inplace.conv1.weight


def test_convert_a_bare_conv_and_leaves_subclasses_alone():
    class Custom(nn.Conv2d):
        def forward(self, x):
            return super().forward(x) * 2

    assert type(fastconv.convert(nn.Conv2d(2, 2, 1))) is fastconv.Conv2d
    model = nn.Sequential(Custom(2, 2, 1), nn.Conv2d(2, 2, 1))
    out = fastconv.convert(model)
    assert type(out[0]) is Custom and type(out[1]) is fastconv.Conv2d
    with pytest.raises(TypeError, match="model"):
        fastconv.convert("resnet")


def test_convert_replaces_conv1d_and_conv_transpose2d():
    """An encoder-decoder with every convolution type fastconv has: all swapped, same result."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.seq = nn.Conv1d(4, 16, 3, padding=1)
            self.down = nn.Conv2d(1, 16, 3, stride=2, padding=1)
            self.up = nn.ConvTranspose2d(16, 4, 3, stride=2, padding=1, output_padding=1)

        def forward(self, x):
            n, c, length = x.shape
            y = self.seq(x).view(n, 1, 16, length)
            return self.up(torch.relu(self.down(y)))

    ref = Net().double()
    model = fastconv.convert(ref)
    assert type(model.seq) is fastconv.Conv1d and type(model.down) is fastconv.Conv2d
    assert type(model.up) is fastconv.ConvTranspose2d
    x = torch.randn(2, 4, 6, dtype=torch.float64)
    with aten_forbidden():
        y = model(x)
        y.sum().backward()
    y_ref = ref(x)
    y_ref.sum().backward()
    assert_rel_close(y, y_ref, torch.float64, "output")
    for (name, p), p_ref in zip(model.named_parameters(), ref.parameters()):
        assert_rel_close(p.grad, p_ref.grad, torch.float64, f"grad {name}")
