"""Helpers shared by the tests: tolerances, comparison, and proof that fastconv's kernels ran."""
import contextlib
import warnings

import torch

from fastconv.numerics import OP_TOLERANCE, rel_err  # noqa: F401  (tests import rel_err)

# relative error ||out - ref|| / ||ref|| against a float64 reference (fastconv.numerics)
TOL = OP_TOLERANCE
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def first_mismatch(out: torch.Tensor, ref: torch.Tensor, tol: float) -> str:
    out, ref = out.detach().double(), ref.detach().double()
    bad = ~torch.isclose(out, ref, rtol=max(tol * 10, 1e-6), atol=tol * ref.abs().max().item() * 10)
    idx = bad.nonzero()
    if len(idx) == 0:
        return "no single element stands out"
    i = tuple(idx[0].tolist())
    return f"{len(idx)} elements differ; first at {i}: got {out[i].item()} want {ref[i].item()}"


def assert_rel_close(out, ref, dtype, what=""):
    tol = TOL[dtype]
    assert out.shape == ref.shape, f"{what}: shape {tuple(out.shape)} != {tuple(ref.shape)}"
    err = rel_err(out, ref)
    assert err < tol, f"{what}: relative error {err:.3e} >= {tol:.0e}; {first_mismatch(out, ref, tol)}"


class ATenRan(AssertionError):
    pass


@contextlib.contextmanager
def aten_forbidden(ops=("convolution", "convolution_backward"), namespace="aten"):
    """Make the listed CPU ops raise while the block runs.

    fastconv must compute everything with its own kernels: if a call silently fell back to ATen
    (or torchvision), the comparison in a test would be ATen against ATen and prove nothing.
    """
    lib = torch.library.Library(namespace, "IMPL")

    def raising(name):
        def fn(*args, **kwargs):
            raise ATenRan(f"{namespace}::{name} ran inside a fastconv call")
        return fn

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "overriding a previously registered kernel"
        for name in ops:
            lib.impl(name, raising(name), "CPU")
    try:
        yield
    finally:
        lib._destroy()


# ---------------------------------------------------------------------------- bad-input tables
def bad(case_id, exc, names, torch_rejects=True, **overrides):
    """One row of a bad-input table: ``overrides`` are callables (or plain values) replacing
    arguments of the test file's valid ``_base()`` call; the call must raise ``exc`` with a
    message naming each of ``names``. ``torch_rejects=False`` marks a deliberate refusal of
    something torch accepts."""
    import pytest
    return pytest.param(overrides, exc, names, torch_rejects, id=case_id)


def t(*shape, **kw):
    """A random tensor, made when the row runs."""
    return lambda: torch.randn(*shape, **kw)


def ints(*shape):
    """A random integer tensor, made when the row runs."""
    return lambda: torch.randint(-3, 4, shape)


class _Scaled:
    """A kernel that launches the real one, then scales the output it wrote (argument
    ``index``) by ``factor``: a kernel that is almost right."""

    def __init__(self, kernel, index: int, factor: float):
        self.kernel, self.index, self.factor = kernel, index, factor

    def __getitem__(self, grid):
        def launch(*args, **meta):
            self.kernel[grid](*args, **meta)
            args[self.index].mul_(self.factor)
        return launch


def slightly_wrong_forward(monkeypatch, factor: float) -> None:
    """Make every conv2d forward from now on scale its output by ``factor`` after the real
    kernels ran: the last launch of each call is wrapped, so a replayed call is wrong too."""
    import dataclasses

    from fastconv.conv import launch as conv2d_launch
    from fastconv.ops.launch_cache import clear_caches
    real = conv2d_launch.conv2d_fprop

    def wrong(x, w, bias, y, *args, **kwargs):
        plan, launches = real(x, w, bias, y, *args, **kwargs)
        last = launches[-1]
        index = next(i for i, a in enumerate(last.args) if a is y)
        launches[-1] = dataclasses.replace(last, kernel=_Scaled(last.kernel, index, factor))
        return plan, launches
    monkeypatch.setattr(conv2d_launch, "conv2d_fprop", wrong)
    clear_caches()


class LaunchView:
    """A live view of ``kernel_launches``, each launch seen through ``project``."""

    def __init__(self, seen, project):
        self.seen, self.project = seen, project

    def _items(self):
        return [p for p in map(self.project, self.seen) if p is not None]

    def __iter__(self):
        return iter(self._items())

    def __getitem__(self, i):
        return self._items()[i]

    def __len__(self):
        return len(self._items())

    def __repr__(self):
        return repr(self._items())


@contextlib.contextmanager
def interpreter_split_k(split: int, wgrad: int = 1):
    """Plan for Triton's interpreter with the fprop / dgrad GEMMs split ``split`` ways and the
    weight gradients ``wgrad`` ways, as given (the interpreter's own target splits nothing;
    a GPU's plan splits where the output has fewer tiles than the GPU has SMs), so that the
    split-K kernels and their reduction run on the CPU."""
    import dataclasses

    from fastconv.ops.target import TARGETS, planning_for
    target = dataclasses.replace(TARGETS["interpreter"], split_k=split, wgrad_split_k=wgrad)
    with planning_for(target):
        yield


# ---------------------------------------------------------------------------- sm_90 compiles
# The kernel tests run under Triton's interpreter (conftest.py sets TRITON_INTERPRET), which
# cannot compile for a GPU; a static check runs its own test file as a script in a process
# without it, which compiles in spawned workers and prints one JSON row per launch.
def print_compiled_rows(compile_one, jobs) -> None:
    """The script's side: ``compile_one(job)`` for each job in two spawned worker processes,
    each row it returns (a dict, or a list of them) printed as a JSON line."""
    import json
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as ex:
        for rows in ex.map(compile_one, jobs):
            for row in rows if isinstance(rows, list) else [rows]:
                print(json.dumps(row), flush=True)


def compiled_rows(script: str) -> list:
    """The test's side: run ``script`` (a test file whose ``__main__`` calls
    ``print_compiled_rows``) without TRITON_INTERPRET and return its rows."""
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, script], env=env, capture_output=True, text=True,
                          timeout=1800, cwd=os.path.dirname(os.path.dirname(script)))
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
