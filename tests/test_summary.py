"""fastconv.summary and ``fastconv summary``: per-layer tables that agree with the published
figures of the architectures, end to end through the command."""
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

import fastconv
import fastconv.models as M
from fastconv import __main__ as cli
from fastconv.summary import layer_macs, summarize


def _summary(name, size=None):
    size = size or M.default_input_size(name)
    with torch.device("meta"):
        model = M.get_model(name)
    return summarize(model, size, name=name, inputs=M.example_inputs(name, 1, size, device="meta"))


def _close(value, published, rel=0.03):
    return abs(value - published) <= rel * published


def test_vgg16_published_figures():
    s = _summary("vgg16")
    assert _close(s.total_params, 138.36e6, 0.001)
    assert _close(s.total_macs, 15.5e9)
    convs = [layer for layer in s.layers if layer.kind == "Conv2d"]
    # 224x224x64 = 3.2M values after each of the first two convolutions ...
    assert [c.activations for c in convs[:2]] == [224 * 224 * 64] * 2
    # ... down to 7x7x512 = 25K after the last pool
    pools = [layer for layer in s.layers if layer.kind == "MaxPool2d"]
    assert pools[-1].output_shape == (1, 512, 7, 7) and pools[-1].activations == 25088
    assert _close(s.total_activations, 15.2e6)


def test_alexnet_original_conv1_and_lenet5():
    conv1 = _summary("alexnet_original", (3, 227, 227)).layers[0]
    assert conv1.output_shape == (1, 96, 55, 55)
    assert _close(conv1.params, 35e3)
    assert _close(_summary("lenet5").total_params, 61.7e3)


@pytest.mark.parametrize("name, gmacs", [("resnet18", 1.8), ("resnet34", 3.7), ("resnet50", 4.1),
                                         ("resnet101", 7.8), ("resnet152", 11.5)])
def test_resnet_macs(name, gmacs):
    assert _close(_summary(name).total_macs, gmacs * 1e9)


def test_macs_and_activation_rules():
    conv = nn.Conv2d(8, 6, 3, padding=1, groups=2)
    x = torch.zeros(2, 8, 5, 7, device="meta")
    assert layer_macs(conv, (x,), conv.to("meta")(x)) == 2 * 6 * 5 * 7 * 4 * 9
    tconv = fastconv.ConvTranspose2d(4, 6, 2, stride=2).to("meta")
    x = torch.zeros(1, 4, 3, 3, device="meta")
    assert layer_macs(tconv, (x,), tconv(x)) == 4 * 9 * 6 * 4
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(inplace=True), nn.Flatten(),
                          nn.Dropout(), nn.Linear(4 * 9, 5))
    s = summarize(model, (3, 3, 3))
    assert [layer.activations for layer in s.layers] == [36, 0, 0, 0, 5]
    assert s.total_activations == 27 + 36 + 5
    assert s.total_params == sum(p.numel() for p in model.parameters())


def test_every_model_summarises():
    for name in M.list_models():
        s = _summary(name)
        with torch.device("meta"):
            assert s.total_params == sum(p.numel() for p in M.get_model(name).parameters()), name
        assert s.total_macs > 0 and s.layers, name


def _run(*args):
    return subprocess.run([sys.executable, "-m", "fastconv", "summary", *args],
                          capture_output=True, text=True, timeout=600)


def test_summary_command_table_and_plot(tmp_path):
    png = tmp_path / "vgg16.png"
    proc = _run("vgg16", "--plot", str(png))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "features.0" in out and "1x64x224x224" in out and "138,357,544" in out
    assert "15.47G" in out  # the MACs total
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_summary_command_input_and_errors(capsys):
    assert cli.main(["summary", "lenet5", "--input", "1x32x32"]) == 0
    assert "61,706" in capsys.readouterr().out
    assert cli.main(["summary", "no_such_model"]) == 2
    with pytest.raises(SystemExit):
        cli.main(["summary", "lenet5", "--input", "3xx2"])


def test_summary_plot_draws_every_layer_in_order_with_stages_and_totals(tmp_path):
    pytest.importorskip("matplotlib")
    from fastconv.summary import plot_summary
    s = _summary("resnet18")
    shown = plot_summary(s, tmp_path / "r18.png")
    assert (tmp_path / "r18.png").read_bytes().startswith(b"\x89PNG")
    counted = [layer.name for layer in s.layers if layer.params or layer.macs or layer.activations]
    assert shown["rows"] == counted  # call order, nothing dropped but what has nothing to count
    assert shown["omitted"] == len(s.layers) - len(counted) > 0
    names = [stage for stage, _, _ in shown["stages"]]
    assert names[:3] == ["conv1", "bn1", "maxpool"] and "layer1" in names and names[-1] == "fc"
    # the stages tile the rows, in order
    assert [(first, last) for _, first, last in shown["stages"]][0][0] == 0
    assert all(a[2] + 1 == b[1] for a, b in zip(shown["stages"], shown["stages"][1:]))


def test_summary_plot_path_is_checked_before_the_table(capsys):
    assert cli.main(["summary", "lenet5", "--plot", "/nonexistent/dir/x.png"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "argument --plot" in err
