"""The ``fastconv`` command: verify end to end, including its exit code on a mismatch."""
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

import fastconv
from fastconv import __main__ as cli
from fastconv.models import _registry
from helpers import slightly_wrong_forward


def _tiny_model(num_classes=4):
    return nn.Sequential(fastconv.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         fastconv.Conv2d(16, 16, 3, stride=2, groups=2), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(16, num_classes))


def test_verify_resnet18_json(capsys):
    assert cli.main(["verify", "--models", "resnet18", "--batch", "1", "--size", "16", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in rows] == ["resnet18"]
    row = rows[0]
    assert row["passed"] and row["input"] == "1x3x16x16" and row["params"] == 11689512
    assert 0 < row["output_err"] < 1e-4 and 0 < row["param_grad_err"] < 1e-4
    assert row["backend"] == "interpreter (CPU)"


def test_verify_table_and_mismatch_exit_code(monkeypatch, capsys):
    monkeypatch.setitem(_registry._BUILDERS, "tiny", _tiny_model)
    assert cli.main(["verify", "--models", "tiny", "--size", "8"]) == 0
    out = capsys.readouterr().out
    assert "tiny" in out and "ok" in out and "d params" in out

    slightly_wrong_forward(monkeypatch, 1.001)  # almost right must still fail verification
    assert cli.main(["verify", "--models", "tiny", "--size", "8"]) == 1
    assert "MISMATCH" in capsys.readouterr().out


def test_verify_zoo_models_without_a_torchvision_twin(capsys):
    """lenet5 is verified against itself unconverted (ATen), the box head against torchvision's
    RoIPool; resnet18 above against torchvision's model."""
    assert cli.main(["verify", "--models", "lenet5", "fast_rcnn_box_head", "--batch", "1",
                     "--json"]) == 0
    rows = {r["model"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["lenet5"]["input"] == "1x1x32x32" and rows["lenet5"]["params"] == 61706
    assert rows["fast_rcnn_box_head"]["passed"]
    assert all(r["output_err"] < 1e-4 for r in rows.values())
    # different arithmetic, so not bitwise equal (RoIPool's maxima are exact, they can be)
    assert rows["lenet5"]["output_err"] > 0


def test_verify_unknown_model(capsys):
    assert cli.main(["verify", "--models", "nosuchnet"]) == 2
    assert "nosuchnet" in capsys.readouterr().out


def test_command_switches_to_the_interpreter_without_a_gpu():
    """Run as a user would, with no TRITON_INTERPRET: the command must set it and say so."""
    if torch.cuda.is_available():
        return
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "fastconv", "verify", "--models", "tiny_cli",
                           "--json"], env=env, capture_output=True, text=True, timeout=300)
    # an unknown model is enough to see the switch without the cost of a whole run
    assert proc.returncode == 2, proc.stderr
    # the notice is a diagnostic: on stderr, so that --json output stays parseable
    notice = " ".join(proc.stderr.split())
    assert "TRITON_INTERPRET=1" in notice and "interpreter" in notice, proc.stderr
    assert "TRITON_INTERPRET" not in proc.stdout


# ------------------------------------------------------------- progress and the default set
def test_verify_prints_each_model_as_it_finishes_into_a_pipe():
    """stdout is a pipe here, so block-buffered: the first model's line must still arrive while
    the second model is running (flushed), with an estimate of the time left."""
    proc = subprocess.Popen([sys.executable, "-m", "fastconv", "verify", "--models", "lenet5",
                             "resnet18", "--jobs", "1"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "TRITON_INTERPRET": "1"})
    try:
        header = proc.stdout.readline()
        assert "verifying 2 models" in header and "lenet5 resnet18" in header
        first = proc.stdout.readline()
        still_running = proc.poll() is None
        rest = proc.stdout.read()
    finally:
        proc.wait(timeout=300)
    assert first.startswith("[1/2] lenet5") and " ok " in first and "left)" in first, first
    assert still_running, "the first model's line only came when the command ended"
    assert "[2/2] resnet18" in rest and "2 of 2 models agree" in rest
    assert proc.returncode == 0


def test_verify_default_set_covers_every_family(monkeypatch):
    """Under the interpreter the default is a handful of small models that between them run
    every kernel family; --all is the whole zoo."""
    from fastconv import verify as V
    from fastconv.models import get_model, list_models
    chosen = V.default_models(torch.device("cpu"))
    assert 5 <= len(chosen) < len(list_models())
    assert V.default_models(torch.device("cuda")) == list_models()
    kinds = set()
    for name in chosen:
        with torch.device("meta"):
            model = get_model(name)
        for m in model.modules():
            if isinstance(m, nn.ConvTranspose2d):
                kinds.add("transposed")
            elif isinstance(m, nn.Conv2d):
                if m.groups > 1 and m.groups == m.in_channels:
                    kinds.add("depthwise")
                elif m.groups > 1:
                    kinds.add("grouped")
                kinds.add("1x1" if m.kernel_size == (1, 1) else "kxk")
            kinds.add(type(m).__name__)
    assert {"transposed", "depthwise", "grouped", "1x1", "kxk", "RoIAlign", "RoIPool"} <= kinds

    seen = []
    monkeypatch.setattr(V, "verify", lambda names, *a, **k: seen.append(list(names)) or [])
    assert cli.main(["verify"]) == 0
    assert cli.main(["verify", "--all"]) == 0
    assert seen == [chosen, list_models()]


def test_time_left_estimate():
    # lenet5 (cost 1) took 10 s: resnet18 (cost 3) is about 30 s more
    assert cli._estimate_left(["lenet5"], ["resnet18"], 10.0, 1) == 30.0
    # models without a measured cost count as the mean of those done
    assert cli._estimate_left(["a", "b"], ["c"], 10.0, 1) == 5.0
    # two at a time: the longest model left (unet, 13) ran beside lenet5 and is half done
    assert cli._estimate_left(["lenet5"], ["unet", "resnet18"], 7.5, 2) == 7.5 * 9.5 / 7.5


# ------------------------------------------------------------------------------ bad input
def _exit_code(argv):
    try:
        return cli.main(argv)
    except SystemExit as e:
        return e.code


@pytest.mark.parametrize("argv, option", [
    (["summary", "lenet5", "--input", "3x32x32"], "--input"),      # lenet5 takes 1 channel
    (["summary", "resnet50", "--input", "3x224"], "--input"),      # not CxHxW
    (["summary", "vgg16", "--input", "3x16x16"], "--input"),       # too small for 5 pools
    (["summary", "lenet5", "--input", "1x0x32"], "--input"),
    (["summary", "vgg16", "--plot", "/nonexistent/dir/x.png"], "--plot"),
    (["summary", "lenet5", "--batch", "0"], "--batch"),
    (["verify", "--size", "8"], "--size"),                          # lenet5 needs 32
    (["verify", "--batch", "0"], "--batch"),
    (["verify", "--jobs", "-1"], "--jobs"),
    (["verify", "--size", "x"], "--size"),
    (["verify", "--dtype", "float8"], "--dtype"),
    (["verify", "--all", "--models", "lenet5"], "--all"),
])
def test_bad_input_is_one_line_and_exit_code_2(argv, option, capsys):
    assert _exit_code(argv) == 2
    out, err = capsys.readouterr()
    assert out == "", "nothing may be printed before the refusal"
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"argument {option}" in lines[0], err
    assert "Traceback" not in err
