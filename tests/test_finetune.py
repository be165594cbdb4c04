"""fastconv.models.finetune: the new classifier, what is frozen, the parameter groups."""
import pytest
import torch
import torch.nn as nn

import fastconv
from fastconv.models.finetune import finetune
from helpers import aten_forbidden


class TinyNet(nn.Module):
    """conv stem, a 'block', a Linear head: enough structure for every train= mode."""

    def __init__(self, num_classes=5):
        super().__init__()
        self.stem = nn.Sequential(fastconv.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8),
                                  nn.ReLU())
        self.block = nn.Sequential(fastconv.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.block(self.stem(x))), 1))


class ConvHead(nn.Module):
    """NiN-style: the classifier is the last convolution."""

    def __init__(self):
        super().__init__()
        self.features = fastconv.Conv2d(3, 6, 3, padding=1)
        self.classifier = fastconv.Conv2d(6, 10, 1)

    def forward(self, x):
        return self.classifier(torch.relu(self.features(x))).mean((2, 3))


class WithAux(TinyNet):
    def __init__(self):
        super().__init__()
        self.aux = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 5))


def _backward(model, classes):
    x = torch.randn(2, 3, 6, 7)
    with aten_forbidden():
        out = model(x)
        assert out.shape == (2, classes)
        out.sum().backward()


def test_head_only_trains_the_new_classifier():
    model = TinyNet()
    old_fc = model.fc
    groups = finetune(model, num_classes=3, train="head", lr=0.01)
    assert model.fc is not old_fc and model.fc.out_features == 3
    assert [g["name"] for g in groups] == ["head"]
    assert groups[0]["lr"] == 0.01
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in model.fc.parameters()}
    _backward(model, 3)
    for name, p in model.named_parameters():
        if name.startswith("fc."):
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert not p.requires_grad and p.grad is None, name


def test_all_trains_everything_with_a_smaller_rate_for_pretrained_layers():
    model = TinyNet()
    groups = finetune(model, num_classes=4, train="all", lr=0.1, pretrained_lr_scale=0.1)
    by_name = {g["name"]: g for g in groups}
    assert by_name["head"]["lr"] == pytest.approx(0.1)
    assert by_name["pretrained"]["lr"] == pytest.approx(0.01)
    in_groups = [id(p) for g in groups for p in g["params"]]
    assert sorted(in_groups) == sorted(id(p) for p in model.parameters())
    _backward(model, 4)
    assert all(p.grad is not None for p in model.parameters())
    torch.optim.SGD(groups, lr=1.0).step()  # the groups are what an optimizer takes


def test_listed_modules_train_and_the_rest_is_frozen():
    model = TinyNet()
    groups = finetune(model, num_classes=2, train=["block"])
    pretrained = {id(p) for p in groups[1]["params"]}
    assert pretrained == {id(p) for p in model.block.parameters()}
    _backward(model, 2)
    assert all(p.grad is None for p in model.stem.parameters())
    assert all(p.grad is not None for p in model.block.parameters())


def test_conv_classifier_and_aux_heads_are_replaced():
    model = ConvHead()
    finetune(model, num_classes=7)
    assert isinstance(model.classifier, fastconv.Conv2d) and model.classifier.out_channels == 7
    _backward(model, 7)
    aux = WithAux()
    finetune(aux, num_classes=9)
    assert aux.fc.out_features == 9 and aux.aux[2].out_features == 9
    assert aux.aux[0].out_features == 4  # a hidden layer of the auxiliary head stays


@pytest.mark.parametrize("kwargs, exc, word", [
    (dict(num_classes=0), ValueError, "num_classes"),
    (dict(num_classes=3, train="some"), ValueError, "train"),
    (dict(num_classes=3, train=["nope"]), ValueError, "nope"),
    (dict(num_classes=3, lr=0.0), ValueError, "lr"),
])
def test_bad_arguments(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        finetune(TinyNet(), **kwargs)
