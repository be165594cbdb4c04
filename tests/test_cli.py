"""The ``fastconv`` command: verify end to end, including its exit code on a mismatch."""
import json
import os
import subprocess
import sys

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
