"""Test setup: every kernel runs on the CPU through Triton's interpreter.

TRITON_INTERPRET must be set before anything imports triton, so it is the first thing here.
"""
import os

os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

import fastconv.ops._runtime as runtime  # noqa: E402


def _poisoned(shape, stride, dtype, device, _allocate=runtime.allocate):
    """Every tensor fastconv allocates for a call to write, filled with NaN (a float one):
    an element a kernel forgets to write then shows up instead of leftover memory."""
    out = _allocate(shape, stride, dtype, device)
    return out.fill_(float("nan")) if out.is_floating_point() else out


runtime.allocate = _poisoned

settings.register_profile("ci", deadline=None, derandomize=True, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _fresh_call_caches():
    """Each test starts with no recorded calls: a test that patches a launcher or the plan sees
    its first call of every signature built anew."""
    from fastconv.ops.launch_cache import clear_caches
    clear_caches()
    yield
    clear_caches()


@pytest.fixture
def no_launch(monkeypatch):
    """Replace the three launchers by functions that fail the test if they are reached: bad
    input must be refused by validation, before any kernel launch."""
    from fastconv.conv import launch as conv2d_launch
    for name in ("conv2d_fprop", "conv2d_dgrad", "conv2d_wgrad"):
        def launched(*args, _name=name, **kwargs):
            pytest.fail(f"conv2d_launch.{_name} was called: validation must come first")
        monkeypatch.setattr(conv2d_launch, name, launched)


@pytest.fixture
def kernel_launches(monkeypatch):
    """(kernel name, grid, constexprs and launch options) of every kernel launch while the
    test runs, in order: fresh and replayed calls alike reach Triton's interpreter here."""
    from triton.runtime import interpreter
    seen = []
    real = interpreter.InterpretedFunction.run

    def run(self, *args, grid, warmup, **kwargs):
        seen.append((self.fn.__name__, tuple(grid), kwargs))
        return real(self, *args, grid=grid, warmup=warmup, **kwargs)
    monkeypatch.setattr(interpreter.InterpretedFunction, "run", run)
    return seen


@pytest.fixture(scope="session", autouse=True)
def _language_patched_once_per_launch():
    """Triton 3.8's interpreter re-patches triton.language on every @triton.jit helper call,
    most of a small program's time; patch it once per launch instead (the same computation:
    see tests/interpreter_speed.py). The overflow sanitizer and the default block sizes
    stay on for the kernel tests."""
    from interpreter_speed import cached_device_calls
    with cached_device_calls():
        yield


# The longest tests first, so that `pytest -n auto` does not end with one worker running them
# while the others are idle: the GPU compile reports (one worker, see test_compile_gpu.py), then
# the model zoo's deepest models.
_FIRST = ("test_compile_gpu.py", "resnext101", "test_models_zoo.py")


def pytest_collection_modifyitems(items):
    def rank(item):
        return next((i for i, key in enumerate(_FIRST) if key in item.nodeid), len(_FIRST))
    items.sort(key=rank)  # stable: the order within each rank is kept
