"""What a PyTorch user tries first: ``import fastconv`` then the attributes the README shows,
``fastconv --version``, and pretrained weights through ``get_model``."""
import subprocess
import sys

import fastconv


def _fresh(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter: in this process other tests have already imported
    fastconv's subpackages, which would hide a missing import."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env={**__import__("os").environ, "TRITON_INTERPRET": "1"})


def test_import_fastconv_exposes_models():
    proc = _fresh("import fastconv\n"
                  "m = fastconv.models.get_model('lenet5')\n"
                  "print(type(m).__name__, len(fastconv.models.list_models()))")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] == "LeNet5"
    assert "models" in dir(fastconv)


def test_unknown_attribute_is_still_an_attribute_error():
    try:
        fastconv.no_such_thing
    except AttributeError as e:
        assert "no_such_thing" in str(e)
    else:
        raise AssertionError("fastconv.no_such_thing did not raise")


def test_converted_model_prints_as_fastconv():
    import torch.nn as nn
    import torchvision
    model = fastconv.convert(nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.Conv1d(2, 2, 1), nn.ConvTranspose2d(2, 2, 2),
        torchvision.ops.RoIAlign(7, 0.5, 2), torchvision.ops.RoIPool(7, 1.0),
        torchvision.ops.MultiScaleRoIAlign(["0"], 7, 2)))
    lines = [line.split(": ", 1)[1] for line in str(model).splitlines()[1:-1]]
    assert lines == [
        "fastconv.Conv2d(3, 8, kernel_size=(3, 3), stride=(1, 1))",
        "fastconv.Conv1d(2, 2, kernel_size=(1,), stride=(1,))",
        "fastconv.ConvTranspose2d(2, 2, kernel_size=(2, 2), stride=(1, 1))",
        "fastconv.RoIAlign(output_size=7, spatial_scale=0.5, sampling_ratio=2, aligned=False)",
        "fastconv.RoIPool(output_size=7, spatial_scale=1.0)",
        "fastconv.MultiScaleRoIAlign(featmap_names=['0'], output_size=(7, 7), sampling_ratio=2)"]
    assert str(fastconv.unconvert(model)[0]).startswith("Conv2d(")

    class MyConv(fastconv.Conv2d):
        pass
    assert repr(MyConv(1, 1, 1)).startswith("MyConv(")


def test_version_option(capsys):
    from fastconv import __main__ as cli
    try:
        cli.main(["--version"])
    except SystemExit as e:
        assert e.code in (0, None)
    else:
        raise AssertionError("--version did not exit")
    out = capsys.readouterr().out
    assert out.startswith(f"fastconv {fastconv.__version__} (torch ") and "triton" in out


def test_license_and_type_marker_ship():
    import tomllib
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    assert "Copyright (c) 2026, the fastconv authors" in (root / "LICENSE").read_text()
    assert (Path(fastconv.__file__).parent / "py.typed").is_file()
    project = tomllib.loads((root / "pyproject.toml").read_text())
    assert "py.typed" in project["tool"]["setuptools"]["package-data"]["fastconv"]
    assert project["project"]["license"] == "BSD-3-Clause"
    assert project["project"]["version"] == fastconv.__version__


def test_interpreter_speedups_step_aside_on_an_unknown_triton(monkeypatch):
    """cached_device_calls copies Triton 3.8's interpreter internals: on another release it
    warns and leaves the interpreter's methods alone."""
    import warnings

    from triton.runtime import interpreter

    import interpreter_speed
    monkeypatch.setattr(interpreter_speed, "_triton_version", lambda: (3, 9))
    monkeypatch.setattr(interpreter_speed._state, "warned", False, raising=False)
    before = interpreter.GridExecutor.__call__, interpreter.InterpretedFunction.__call__
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with interpreter_speed.cached_device_calls():
            assert (interpreter.GridExecutor.__call__,
                    interpreter.InterpretedFunction.__call__) == before
    assert any("3.9" in str(w.message) for w in caught)
