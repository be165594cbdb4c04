"""``fastconv.models.get_model(name, weights=...)``: torchvision's weight enums and names for
every zoo model torchvision has (the download replaced by a torchvision model's state_dict:
there is no internet here), a local state_dict file for any model, and the errors."""
import re
import urllib.error

import pytest
import torch
import torchvision

import fastconv.models as M
from fastconv.models.pretrained import torchvision_weights

WITH_TORCHVISION_WEIGHTS = [n for n in M.list_models() if torchvision_weights(n) is not None]


def _torchvision_state(name, device="cpu", old_densenet_keys=False):
    """What the download would return: torchvision's model as its builder makes it for its
    weights (GoogLeNet and Inception v3 with their auxiliary classifiers)."""
    extra = {"aux_logits": True, "init_weights": False} if name in ("googlenet",
                                                                   "inception_v3") else {}
    with torch.device(device):
        state = torchvision.models.get_model(name, weights=None, **extra).state_dict()
    if old_densenet_keys:  # the published DenseNet files: 'denselayer1.norm.1.weight'
        state = {re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.(weight|bias|running)",
                        r"\1.\2.\3", k): v for k, v in state.items()}
        assert "features.denseblock1.denselayer1.norm.1.weight" in state
    return state


@pytest.fixture
def fake_download(monkeypatch):
    """torch.hub.load_state_dict_from_url -> a torchvision model's state_dict; records URLs."""
    urls = []

    def load(url, *args, **kwargs):
        urls.append(url)
        return load.state
    load.state = None
    load.urls = urls
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", load)
    return load


def test_the_zoo_has_torchvision_weights_where_torchvision_does():
    assert {"alexnet", "vgg16_bn", "resnet50", "resnext101_64x4d", "wide_resnet50_2",
            "densenet121", "googlenet", "inception_v3", "mobilenet_v2",
            "shufflenet_v2_x1_0"} <= set(WITH_TORCHVISION_WEIGHTS)
    assert "lenet5" not in WITH_TORCHVISION_WEIGHTS and "unet" not in WITH_TORCHVISION_WEIGHTS


@pytest.mark.parametrize("weights", ["IMAGENET1K_V1", "DEFAULT", "ResNet18_Weights.IMAGENET1K_V1",
                                     torchvision.models.ResNet18_Weights.IMAGENET1K_V1])
def test_resnet18_weights_by_enum_or_name(weights, fake_download):
    fake_download.state = _torchvision_state("resnet18")
    model = M.get_model("resnet18", weights=weights)
    assert fake_download.urls == [torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url]
    got = model.state_dict()
    assert got.keys() == fake_download.state.keys()
    assert all(torch.equal(got[k], v) for k, v in fake_download.state.items())
    assert type(model).__module__.startswith("fastconv.")


@pytest.mark.parametrize("name", WITH_TORCHVISION_WEIGHTS)
def test_every_torchvision_weight_loads(name, fake_download):
    """Shapes and names on the meta device (instant even for VGG-19): strict loading of the
    default weights, with torchvision's adjustments (aux classifiers, DenseNet's old keys)."""
    fake_download.state = _torchvision_state(name, "meta",
                                             old_densenet_keys=name.startswith("densenet"))
    with torch.device("meta"):
        model = M.get_model(name, weights="DEFAULT")
    assert fake_download.urls == [torchvision_weights(name).DEFAULT.url]
    if name == "googlenet":  # as torchvision: input transform on, aux heads dropped
        assert model.transform_input and not model.aux_logits and model.aux1 is None
    if name == "inception_v3":
        assert model.transform_input and model.aux_logits


def test_pretrained_googlenet_runs_like_torchvisions(fake_download):
    torch.manual_seed(0)
    reference = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True,
                                             transform_input=True).eval()
    fake_download.state = reference.state_dict()
    model = M.get_model("googlenet", weights="IMAGENET1K_V1").eval()
    x = torch.randn(1, 3, 40, 40, dtype=torch.float64)
    torch.testing.assert_close(model.double()(x), reference.double()(x))


def test_weights_from_a_file(tmp_path):
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    for weights in (path, str(path)):
        model = M.get_model("resnet18", weights=weights)
        assert all(torch.equal(model.state_dict()[k], v)
                   for k, v in reference.state_dict().items())
    # any model, torchvision or not, and a checkpoint dict wrapping the state_dict
    lenet = M.get_model("lenet5")
    torch.save({"epoch": 3, "state_dict": lenet.state_dict()}, tmp_path / "lenet.pt")
    loaded = M.get_model("lenet5", weights=tmp_path / "lenet.pt")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in lenet.state_dict().items())


def test_weight_errors(tmp_path, fake_download):
    with pytest.raises(FileNotFoundError, match="no such file"):
        M.get_model("resnet18", weights=tmp_path / "missing.pth")
    torch.save(M.get_model("lenet5").state_dict(), tmp_path / "lenet.pth")
    with pytest.raises(ValueError, match="does not fit resnet18"):
        M.get_model("resnet18", weights=tmp_path / "lenet.pth")
    with pytest.raises(ValueError, match="torchvision has no weights for lenet5"):
        M.get_model("lenet5", weights="DEFAULT")
    with pytest.raises(ValueError, match="IMAGENET1K_V1"):  # lists what there is
        M.get_model("resnet18", weights="IMAGENET22K")
    with pytest.raises(TypeError, match="ResNet18_Weights"):
        M.get_model("resnet18", weights=torchvision.models.ResNet50_Weights.DEFAULT)
    with pytest.raises(ValueError, match="finetune"):
        M.get_model("resnet18", weights="DEFAULT", num_classes=10)
    assert fake_download.urls == []


def test_offline_error_names_the_url_and_the_file_alternative(monkeypatch):
    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError) as info:
        M.get_model("resnet18", weights="DEFAULT")
    message = str(info.value)
    assert torchvision.models.ResNet18_Weights.DEFAULT.url in message
    assert "weights='/path/to/resnet18-f37072fd.pth'" in message


def test_unknown_model_lists_the_known_names():
    with pytest.raises(ValueError) as info:
        M.get_model("resnet19")
    message = str(info.value)
    assert "resnet18" in message and "lenet5" in message and "unet" in message
