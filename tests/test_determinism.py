"""Determinism: under ``torch.use_deterministic_algorithms(True)`` every backward (conv2d,
depthwise conv2d, conv1d, conv_transpose2d, roi_align, roi_pool) is bitwise reproducible, and no
kernel that uses atomics runs; by default the RoI backwards add with atomics, whose order varies
from run to run.

Triton's interpreter runs the programs of a launch one after another in grid order, which
would make atomics reproducible by accident. So here every launch runs its programs in an
order shuffled with a seed (``shuffled_programs``), as a GPU's scheduler might: a test that
compares two seeds would fail for a backward whose sum depends on the order of its programs.
The convolutions are split along their reductions (split-K in fprop and dgrad, partial sums
in wgrad), and the deterministic RoI backwards into bands of rows, so that programs touching
one element (or one image) run apart from each other there too.
"""
import contextlib
import inspect
import itertools
import random
import re

import pytest
import torch
import torch.nn.functional as F
import torchvision.ops as tvops
import triton
import triton.language as tl

import fastconv.functional as FC
import fastconv.roi.launch as roi_launch
from interpreter_speed import whole_model
from helpers import assert_rel_close, aten_forbidden, interpreter_split_k

TV_OPS = ("roi_align", "_roi_align_backward", "roi_pool", "_roi_pool_backward")


@contextlib.contextmanager
def shuffled_programs(seed: int):
    """Run the programs of every launch in a random order (drawn from ``seed``), not grid order.

    The interpreter sets the grid's size, then steps through (x, y, z) in order, telling its
    builder which program runs; each step is told another program of the grid instead, through
    a permutation drawn per launch. Every program still runs exactly once.
    """
    from triton.runtime import interpreter
    builder = interpreter.interpreter_builder
    assert "set_grid_idx" not in vars(builder), "shuffled_programs does not nest"
    rng = random.Random(seed)
    set_dim, set_idx = builder.set_grid_dim, builder.set_grid_idx
    order = []

    def set_grid_dim(nx, ny, nz):
        set_dim(nx, ny, nz)
        order[:] = itertools.product(range(nx), range(ny), range(nz))
        rng.shuffle(order)

    def set_grid_idx(x, y, z):
        _, ny, nz = builder.grid_dim
        set_idx(*order[(x * ny + y) * nz + z])

    builder.set_grid_dim, builder.set_grid_idx = set_grid_dim, set_grid_idx
    try:
        yield
    finally:
        del builder.set_grid_dim, builder.set_grid_idx


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool):
    before = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(enabled)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn_only)


def _bands_of(rows: int):
    """An ``ordered_bands`` for the interpreter: bands of ``rows`` rows."""
    return lambda n, c, h, cfg, device: (rows, triton.cdiv(h, rows))


@pytest.fixture
def split_everything(monkeypatch):
    """Split-K in every convolution direction under the interpreter (which does not split by
    default): fprop and dgrad 3 ways, wgrad's partial sums 3 ways where its reduction has more
    than one block; the deterministic RoI backwards in bands of 2 rows (5 per 9-row image)."""
    monkeypatch.setattr(roi_launch, "ordered_bands", _bands_of(2))
    with interpreter_split_k(3, wgrad=3):
        yield


@pytest.fixture
def launched(monkeypatch):
    """(Python function, grid) of every kernel launched while the test runs, in launch order."""
    from triton.runtime import interpreter
    launches = []
    start = interpreter.GridExecutor.__call__

    def record(self, *args, **kwargs):
        launches.append((self.fn, self.grid))
        return start(self, *args, **kwargs)
    monkeypatch.setattr(interpreter.GridExecutor, "__call__", record)
    return launches


def jit_sources(fn, seen=None) -> dict:
    """name -> source of a kernel and of every ``@triton.jit`` helper it calls, transitively."""
    seen = {} if seen is None else seen
    if fn.__name__ in seen:
        return seen
    source = inspect.getsource(fn)
    seen[fn.__name__] = source
    for name in set(re.findall(r"\b([A-Za-z_]\w*)\s*\(", source)):
        helper = getattr(fn.__globals__.get(name), "fn", None)
        if callable(helper) and hasattr(helper, "__globals__"):
            jit_sources(helper, seen)
    return seen


def atomics_of(fn) -> list:
    """The kernel or helpers among ``fn``'s that issue atomics."""
    return sorted(name for name, src in jit_sources(fn).items() if "tl.atomic_" in src)


# ---------------------------------------------------------------------------- the harness itself
@triton.jit
def _ticket_kernel(counter_ptr, out_ptr):
    # each program takes the next ticket: the tickets say in which order the programs ran
    tl.store(out_ptr + tl.program_id(0), tl.atomic_add(counter_ptr, 1))


def _tickets(programs: int) -> torch.Tensor:
    counter = torch.zeros(1, dtype=torch.int32)
    out = torch.full((programs,), -1, dtype=torch.int32)
    _ticket_kernel[(programs,)](counter, out)
    return out


def test_shuffled_programs_runs_every_program_once_in_another_order():
    in_order = _tickets(23)
    assert in_order.tolist() == list(range(23)), "the interpreter runs programs in grid order"
    with shuffled_programs(1):
        first, second = _tickets(23), _tickets(23)
    with shuffled_programs(1):
        again = _tickets(23)
    for order in (first, second):
        assert sorted(order.tolist()) == list(range(23))
        assert order.tolist() != list(range(23))
    assert first.tolist() != second.tolist(), "each launch draws its own order"
    assert torch.equal(first, again), "the same seed gives the same orders"
    assert _tickets(5).tolist() == list(range(5)), "grid order is restored afterwards"


def test_atomic_kernels_are_recognised(launched):
    """The check for atomics sees through helpers: the RoI backwards' default kernels."""
    from fastconv import kernels
    assert atomics_of(kernels.roi_align_bwd_kernel.fn) == ["roi_align_bwd_kernel"]
    assert atomics_of(kernels.roi_pool_bwd_kernel.fn) == ["roi_pool_bwd_kernel"]
    assert atomics_of(_ticket_kernel.fn) == ["_ticket_kernel"]
    assert "load_roi" in jit_sources(kernels.roi_pool_bwd_kernel.fn)


# ---------------------------------------------------------------------------- the ops
def _overlapping_rois(n_images: int, h: int, w: int, k: int, seed: int) -> torch.Tensor:
    """``k`` boxes crowded over the middle of the images: many of them share every pixel."""
    gen = torch.Generator().manual_seed(seed)
    lo = torch.rand(k, 2, generator=gen) * torch.tensor([w, h]) * 0.3
    size = torch.rand(k, 2, generator=gen) * torch.tensor([w, h]) * 0.4 + torch.tensor([w, h]) * 0.3
    batch = torch.randint(0, n_images, (k, 1), generator=gen).float()
    return torch.cat([batch, lo, lo + size], 1)


def _case(name: str):
    """(fastconv function, torch reference, its tensor arguments) of one op."""
    gen = torch.Generator().manual_seed(11)

    def randn(*shape, scale=1.0):
        return torch.randn(*shape, generator=gen) * scale
    if name == "conv2d":
        # 2 x 9 x 17 output pixels: more than one reduction block of the weight gradient
        return (lambda x, w, b: FC.conv2d(x, w, b, stride=(2, 1), padding=1),
                lambda x, w, b: F.conv2d(x, w, b, stride=(2, 1), padding=1),
                (randn(2, 48, 17, 17), randn(16, 48, 3, 3, scale=0.05), randn(16)))
    if name == "depthwise":
        # the direct kernels; 2 x 9 x 33 output pixels: more than one reduction block of the
        # weight gradient under the interpreter
        return (lambda x, w, b: FC.conv2d(x, w, b, stride=(2, 1), padding=1, groups=16),
                lambda x, w, b: F.conv2d(x, w, b, stride=(2, 1), padding=1, groups=16),
                (randn(2, 16, 17, 33), randn(16, 1, 3, 3, scale=0.3), randn(16)))
    if name == "thin_groups":
        # the direct kernels with 2 channels per group, a dilated 5x5 window at stride 2, in
        # channels_last: the weight gradient's program sums every tap of one input channel
        x = randn(2, 8, 13, 15).contiguous(memory_format=torch.channels_last)
        return (lambda x, w: FC.conv2d(x, w, stride=2, padding=4, dilation=2, groups=4),
                lambda x, w: F.conv2d(x, w, stride=2, padding=4, dilation=2, groups=4),
                (x, randn(8, 2, 5, 5, scale=0.2)))
    if name == "conv1d":
        return (lambda x, w: FC.conv1d(x, w, padding=1), lambda x, w: F.conv1d(x, w, padding=1),
                (randn(3, 32, 11), randn(16, 32, 3, scale=0.1)))
    if name == "conv_transpose2d":
        return (lambda x, w: FC.conv_transpose2d(x, w, stride=2, padding=1),
                lambda x, w: F.conv_transpose2d(x, w, stride=2, padding=1),
                (randn(2, 48, 4, 3), randn(48, 16, 3, 3, scale=0.05)))
    rois = _overlapping_rois(2, 9, 10, 12, seed=5)
    x = randn(2, 3, 9, 10)
    if name == "roi_align":
        return (lambda x: FC.roi_align(x, rois, (3, 2), 1.0, 2, True),
                lambda x: tvops.roi_align(x, rois.double(), (3, 2), 1.0, 2, True), (x,))
    return (lambda x: FC.roi_pool(x, rois, (2, 3), 1.0),
            lambda x: tvops.roi_pool(x, rois.double(), (2, 3), 1.0), (x,))


def _gradients(name: str, seed: int):
    """Every gradient of the op's forward and backward, with its programs run in the order of
    ``seed``, and torch's gradients in float64."""
    fn, ref_fn, tensors = _case(name)
    refs = [t.double().requires_grad_() for t in tensors]
    ref = ref_fn(*refs)
    grad = torch.randn(ref.shape, generator=torch.Generator().manual_seed(3))
    ref.backward(grad.double())
    leaves = [t.clone().requires_grad_() for t in tensors]
    forbidden = aten_forbidden(ops=TV_OPS, namespace="torchvision") if name.startswith("roi") \
        else aten_forbidden()
    # the interpreter's faster mode (no overflow sanitizer: the kernel tests keep it) with the
    # kernel tests' block sizes
    with forbidden, shuffled_programs(seed), whole_model(block_scale=1):
        fn(*leaves).backward(grad)
    return [t.grad for t in leaves], [t.grad for t in refs]


OPS = ["conv2d", "depthwise", "thin_groups", "conv1d", "conv_transpose2d", "roi_align",
       "roi_pool"]


@pytest.mark.parametrize("name", OPS)
def test_deterministic_backward_is_bitwise_reproducible_whatever_the_program_order(
        name, split_everything, launched):
    with deterministic_algorithms(True):
        first, refs = _gradients(name, seed=1)
        second, _ = _gradients(name, seed=2)
    for i, (a, b, ref) in enumerate(zip(first, second, refs)):
        assert torch.equal(a, b), f"{name}: gradient {i} differs between two program orders " \
            f"(max |diff| {(a - b).abs().max().item():.3e})"
        assert_rel_close(a, ref, torch.float32, f"{name} gradient {i}")
    names = {fn.__name__ for fn, _ in launched}
    with_atomics = {fn.__name__: atomics_of(fn) for fn, _ in launched if atomics_of(fn)}
    assert not with_atomics, f"{name}: kernels with atomics ran under deterministic " \
        f"algorithms: {with_atomics}"
    if name.startswith("roi"):  # in bands: 2 images x 1 channel tile x 5 bands
        assert [grid for fn, grid in launched
                if fn.__name__ == f"{name}_bwd_ordered_kernel"] == [(10,)] * 2, launched
    elif name in ("depthwise", "thin_groups"):
        # the direct kernels, which never split fprop or dgrad; the weight gradient's ranges
        # of tiles are added by the split-K reduction
        assert {"conv2d_dgrad_direct_kernel", "conv2d_wgrad_direct_kernel",
                "conv2d_split_reduce_kernel"} <= names, names
    else:  # the splits the test asked for did run: split-K and its reduction
        assert "conv2d_split_reduce_kernel" in names, names
    if name in ("conv2d", "depthwise", "thin_groups"):
        # and the weight gradient's partial sums (grid axis 1)
        assert any("wgrad" in fn.__name__ and grid[1] > 1 for fn, grid in launched), launched


@pytest.mark.parametrize("name", ["roi_align", "roi_pool"])
def test_default_roi_backward_uses_atomics_and_depends_on_the_program_order(name, launched):
    """Not a requirement but the reason for the deterministic mode, and the proof that the
    test above could fail: with atomics, two program orders add in two orders."""
    with deterministic_algorithms(False):
        first, refs = _gradients(name, seed=1)
        second, _ = _gradients(name, seed=2)
    (a,), (b,), (ref,) = first, second, refs
    assert not torch.equal(a, b), f"{name}: the atomic backward gave the same bits twice"
    for g in (a, b):  # both are right, to rounding
        assert_rel_close(g, ref, torch.float32, f"{name} gradient")
    assert atomics_of(launched[-1][0]) == [f"{name}_bwd_kernel"]


@pytest.mark.parametrize("rows", [1, 4, 9])
@pytest.mark.parametrize("name", ["roi_align", "roi_pool"])
def test_ordered_roi_backward_gives_the_same_bits_in_any_bands(name, rows, monkeypatch):
    """Bands of rows divide the deterministic RoI backward's work without changing the adds any
    element gets, nor their order: the gradient is the same, bit for bit, as one band per
    image (the interpreter's default), for bands of 1, 4 (the last one short) and 9 rows."""
    with deterministic_algorithms(True):
        whole, ref = _gradients(name, seed=1)
        monkeypatch.setattr(roi_launch, "ordered_bands", _bands_of(rows))
        banded, _ = _gradients(name, seed=2)
    assert torch.equal(whole[0], banded[0]), (whole[0] - banded[0]).abs().max()
    assert_rel_close(banded[0], ref[0], torch.float32, f"{name} gradient, bands of {rows}")
