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
