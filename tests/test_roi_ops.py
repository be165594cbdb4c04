"""The RoI ops themselves: golden values, float64 gradcheck, torch.library registration
(opcheck), deterministic backward, and the special cases (NaN boxes, no boxes, no channels).

torchvision's RoI ops are overridden to raise while fastconv runs, so every value checked here
comes from fastconv's kernels.
"""
import inspect

import pytest
import torch
import torchvision.ops as tvops

import fastconv.functional as FC
import fastconv.roi.launch as roi_launch
from helpers import assert_rel_close, aten_forbidden

TV_OPS = ("roi_align", "_roi_align_backward", "roi_pool", "_roi_pool_backward")
ALL_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


def torchvision_forbidden():
    return aten_forbidden(ops=TV_OPS, namespace="torchvision")


@pytest.fixture
def deterministic():
    """torch.use_deterministic_algorithms(True) for the test, restored afterwards."""
    before = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(before, warn_only=warn_only)


# ---------------------------------------------------------------------------- golden values
GOLDEN_X = torch.arange(25.0).view(1, 1, 5, 5)
GOLDEN_BOX = torch.tensor([[0.0, 1.0, 1.0, 3.0, 3.0]])


@pytest.mark.parametrize("sampling_ratio", [-1, 0, 1, 2, 3, 5])
@pytest.mark.parametrize("aligned, first_row", [
    (False, [7.5, 8.0, 8.5, 9.0]),
    (True, [4.5, 5.0, 5.5, 6.0]),
], ids=["unaligned", "aligned"])
def test_roi_align_golden(sampling_ratio, aligned, first_row):
    # on a linear ramp bilinear interpolation is exact, so every sampling ratio gives the same
    # bins: the value at the bin centre, x + 5 y
    with torchvision_forbidden():
        y = FC.roi_align(GOLDEN_X, GOLDEN_BOX, 4, 1.0, sampling_ratio, aligned)
    assert y.shape == (1, 1, 4, 4)
    assert torch.allclose(y[0, 0, 0], torch.tensor(first_row), atol=1e-5), y[0, 0]
    offset = 0.5 if aligned else 0.0
    centres = 1.0 - offset + (torch.arange(4.0) + 0.5) * 0.5
    want = centres[None, :] + 5 * centres[:, None]
    assert torch.allclose(y[0, 0], want, atol=1e-5), y[0, 0]


def test_roi_align_golden_gradient():
    # unaligned, sampling ratio 1: bin (0, 0) samples (y, x) = (1.25, 1.25), weights 9/16,
    # 3/16, 3/16, 1/16 on pixels (1, 1), (1, 2), (2, 1), (2, 2)
    x = GOLDEN_X.clone().requires_grad_()
    grad = torch.zeros(1, 1, 4, 4)
    grad[0, 0, 0, 0] = 1.0
    with torchvision_forbidden():
        FC.roi_align(x, GOLDEN_BOX, 4, 1.0, 1, False).backward(grad)
    want = torch.zeros(5, 5)
    want[1, 1], want[1, 2], want[2, 1], want[2, 2] = 9 / 16, 3 / 16, 3 / 16, 1 / 16
    assert torch.allclose(x.grad[0, 0], want, atol=1e-7), x.grad[0, 0]


ROI_POOL_GOLDEN = [
    # (x, box, output size, scale, output, argmax), worked by hand from DESIGN.md's rules
    # box [1, 1, 3, 3]: 3x3 pixels, bins of 1.5: rows/cols [1, 3) and [2, 4)
    (GOLDEN_X, [0, 1, 1, 3, 3], (2, 2), 1.0,
     [[12, 13], [17, 18]], [[12, 13], [17, 18]]),
    # scale 0.5: x1 0.45 -> 0, y1 0.55 -> 1, x2 2.5 -> 3 (half away from zero), y2 1.5 -> 2;
    # 2 rows by 4 columns; bins of 1 x 4/3: columns [0, 2), [1, 3), [2, 4); a descending ramp
    # puts each maximum at its bin's first pixel
    (-GOLDEN_X, [0, 0.9, 1.1, 5.0, 3.0], (2, 3), 0.5,
     [[-5, -6, -7], [-10, -11, -12]], [[5, 6, 7], [10, 11, 12]]),
    # box [3, 3, 9, 9] runs off the image: 7 pixels, bins of 3.5; only bin (0, 0) keeps pixels
    # (rows and columns [3, 5)); the others are empty: 0 with argmax -1
    (GOLDEN_X, [0, 3, 3, 9, 9], (2, 2), 1.0,
     [[24, 0], [0, 0]], [[24, -1], [-1, -1]]),
    # inverted box [3, 3, 1, 1]: size max(1 - 3 + 1, 1) = 1, every bin reads pixel (3, 3)
    (GOLDEN_X, [0, 3, 3, 1, 1], (2, 2), 1.0,
     [[18, 18], [18, 18]], [[18, 18], [18, 18]]),
]


@pytest.mark.parametrize("x, box, size, scale, want, want_argmax", ROI_POOL_GOLDEN,
                         ids=["inside", "scale-0.5-rounding", "partly-outside", "inverted"])
def test_roi_pool_golden(x, box, size, scale, want, want_argmax):
    rois = torch.tensor([box], dtype=torch.float32)
    with torchvision_forbidden():
        y = FC.roi_pool(x, rois, size, scale)
        out, argmax = torch.ops.fastconv.roi_pool(x, rois, scale, *size)
    want = torch.tensor(want, dtype=torch.float32)[None, None]
    assert torch.equal(y, want), y
    assert torch.equal(out, want), out
    assert torch.equal(argmax, torch.tensor(want_argmax, dtype=torch.int32)[None, None]), argmax
    # the hand-worked values are torchvision's too
    assert torch.equal(tvops.roi_pool(x, rois, size, scale), want)


def test_roi_pool_golden_gradient():
    # the gradient goes to each bin's maximum; overlapping bins add up (pixel (3, 3) is the
    # maximum of all four bins of the inverted box)
    x = GOLDEN_X.clone().requires_grad_()
    rois = torch.tensor([[0, 1, 1, 3, 3], [0, 3, 3, 1, 1.0]])
    grad = torch.arange(1.0, 9.0).view(2, 1, 2, 2)
    with torchvision_forbidden():
        FC.roi_pool(x, rois, 2, 1.0).backward(grad)
    want = torch.zeros(25)
    want[[12, 13, 17, 18]] = torch.tensor([1.0, 2.0, 3.0, 4.0])
    want[18] += 5 + 6 + 7 + 8
    assert torch.equal(x.grad.flatten(), want), x.grad


# ---------------------------------------------------------------------------- gradcheck
def _gradcheck_rois():
    # overlapping, partly outside, tiny, inverted and degenerate boxes over two images
    return torch.tensor([[0, 0.3, 0.7, 4.2, 3.1],
                         [1, -1.3, 1.1, 2.9, 6.4],
                         [1, 2.6, 0.4, 3.1, 1.2],
                         [0, 4.7, 3.9, 1.2, 0.8],
                         [0, 2.2, 1.5, 2.2, 3.5]], dtype=torch.float64)


@pytest.mark.parametrize("aligned", [False, True], ids=["unaligned", "aligned"])
@pytest.mark.parametrize("sampling_ratio", [-1, 0, 2, 3], ids=lambda s: f"sr{s}")
@pytest.mark.parametrize("scale", [1.0, 0.7], ids=lambda s: f"s{s}")
def test_roi_align_gradcheck(aligned, sampling_ratio, scale):
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    rois = _gradcheck_rois()
    with torchvision_forbidden():
        assert torch.autograd.gradcheck(
            lambda x: FC.roi_align(x, rois, (3, 2), scale, sampling_ratio, aligned), (x,),
            eps=1e-6, atol=1e-7, fast_mode=True)


def test_roi_align_gradcheck_full_jacobian():
    x = torch.randn(1, 1, 3, 4, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 0.4, 0.2, 3.1, 2.5], [0, -0.6, 1.0, 1.5, 3.8]], dtype=torch.float64)
    with torchvision_forbidden():
        assert torch.autograd.gradcheck(
            lambda x: FC.roi_align(x, rois, 2, 1.0, -1, True), (x,), eps=1e-6, atol=1e-7)


def _distinct(*shape):
    """float64 values without ties, at least 0.5 apart: a perturbation of eps never changes
    which pixel is a bin's maximum."""
    n = 1
    for s in shape:
        n *= s
    return (torch.randperm(n).double() * 0.5).view(shape).requires_grad_()


@pytest.mark.parametrize("scale", [1.0, 0.7], ids=lambda s: f"s{s}")
def test_roi_pool_gradcheck(scale):
    x = _distinct(2, 3, 5, 6)
    rois = _gradcheck_rois()
    with torchvision_forbidden():
        assert torch.autograd.gradcheck(lambda x: FC.roi_pool(x, rois, (3, 2), scale), (x,),
                                        eps=1e-6, atol=1e-7, fast_mode=True)


def test_roi_pool_gradcheck_full_jacobian():
    x = _distinct(1, 1, 3, 4)
    rois = torch.tensor([[0, 0, 0, 3, 2], [0, 1, 1, 2, 2]], dtype=torch.float64)
    with torchvision_forbidden():
        assert torch.autograd.gradcheck(lambda x: FC.roi_pool(x, rois, 2, 1.0), (x,),
                                        eps=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------- opcheck
def _op_args(dtype, channels_last, requires_grad):
    x = torch.randn(2, 3, 5, 6).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    rois = torch.tensor([[0, 0.3, 0.7, 4.2, 3.1], [1, -1.3, 1.1, 2.9, 6.4],
                         [1, 4.7, 3.9, 1.2, 0.8]]).to(dtype)
    return x.requires_grad_(requires_grad), rois


OPCHECK_VARIANTS = [(torch.float32, False), (torch.float32, True), (torch.float16, False),
                    (torch.bfloat16, True), (torch.float64, False)]
OPCHECK_IDS = ["f32", "f32-cl", "f16", "bf16-cl", "f64"]


@pytest.mark.parametrize("dtype, channels_last", OPCHECK_VARIANTS, ids=OPCHECK_IDS)
@pytest.mark.parametrize("aligned", [False, True], ids=["unaligned", "aligned"])
def test_opcheck_roi_align(dtype, channels_last, aligned):
    x, rois = _op_args(dtype, channels_last, requires_grad=True)
    torch.library.opcheck(torch.ops.fastconv.roi_align.default,
                          (x, rois, 0.5, 3, 2, -1 if aligned else 2, aligned))


@pytest.mark.parametrize("dtype, channels_last", OPCHECK_VARIANTS, ids=OPCHECK_IDS)
def test_opcheck_roi_pool(dtype, channels_last):
    x, rois = _op_args(dtype, channels_last, requires_grad=True)
    torch.library.opcheck(torch.ops.fastconv.roi_pool.default, (x, rois, 0.5, 3, 2))


@pytest.mark.parametrize("deterministic", [False, True], ids=["atomic", "ordered"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "cl"])
def test_opcheck_gradient_ops(channels_last, deterministic):
    x, rois = _op_args(torch.float32, channels_last, requires_grad=False)
    y = torch.ops.fastconv.roi_align(x, rois, 0.5, 3, 2, 2, True)
    dy = torch.randn_like(y)
    torch.library.opcheck(torch.ops.fastconv.roi_align_backward.default,
                          (dy, rois, list(x.shape), 0.5, 3, 2, 2, True, channels_last,
                           deterministic))
    y, argmax = torch.ops.fastconv.roi_pool(x, rois, 0.5, 3, 2)
    torch.library.opcheck(torch.ops.fastconv.roi_pool_backward.default,
                          (torch.randn_like(y), rois, argmax, list(x.shape), channels_last,
                           deterministic))


def test_gradient_ops_match_torchvision():
    """The backward ops called directly (both orderings, the ordered one also in bands of one
    row, both memory formats) give torchvision's gradient, in the memory format asked for."""
    x, rois = _op_args(torch.float32, False, requires_grad=False)
    x_align = x.double().requires_grad_()
    y_ref = tvops.roi_align(x_align, rois.double(), (3, 2), 0.5, 2, True)
    dy = torch.randn(y_ref.shape)
    y_ref.backward(dy.double())
    x_pool = x.double().requires_grad_()
    tvops.roi_pool(x_pool, rois.double(), (3, 2), 0.5).backward(dy.double())
    with torchvision_forbidden():
        _, argmax = torch.ops.fastconv.roi_pool(x, rois, 0.5, 3, 2)
    for channels_last in (False, True):
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        for det, band_rows in ((False, None), (True, None), (True, 1)):
            what = f"channels_last={channels_last} deterministic={det} band_rows={band_rows}"
            with torchvision_forbidden(), pytest.MonkeyPatch.context() as patch:
                if band_rows:
                    patch.setattr(roi_launch, "ordered_bands",
                                  lambda n, c, h, cfg, device: (band_rows, h // band_rows))
                g = torch.ops.fastconv.roi_align_backward(dy, rois, list(x.shape), 0.5, 3, 2, 2,
                                                          True, channels_last, det)
                gp = torch.ops.fastconv.roi_pool_backward(dy, rois, argmax, list(x.shape),
                                                          channels_last, det)
            for grad in (g, gp):
                assert grad.dtype == torch.float32 and grad.shape == x.shape, what
                assert grad.is_contiguous(memory_format=fmt), f"{what}: strides {grad.stride()}"
            assert_rel_close(g, x_align.grad, torch.float32, f"roi_align_backward {what}")
            assert_rel_close(gp, x_pool.grad, torch.float32, f"roi_pool_backward {what}")


# ---------------------------------------------------------------------------- determinism
def _overlapping_boxes(K, N, H, W, seed, dtype=torch.float32):
    """K boxes piled onto the same few pixels of each image: many adds per input element."""
    gen = torch.Generator().manual_seed(seed)
    centre = torch.tensor([W / 2, H / 2])
    lo = centre - torch.rand(K, 2, generator=gen) * 2.5
    hi = centre + torch.rand(K, 2, generator=gen) * 2.5
    batch = torch.arange(K) % N
    return torch.cat([batch[:, None].double(), lo.double(), hi.double()], 1).to(dtype)


def _backward(op, x, rois, times=2):
    grads = []
    for _ in range(times):
        leaf = x.detach().clone().requires_grad_()
        with torchvision_forbidden():
            y = op(leaf, rois)
            y.backward(torch.ones_like(y) + torch.arange(y.numel()).view(y.shape).to(y.dtype) / 7)
        grads.append(leaf.grad)
    return grads


ROI_OPS = {
    "align": lambda x, rois: FC.roi_align(x, rois, (2, 3), 1.0, 2, True),
    "align-adaptive": lambda x, rois: FC.roi_align(x, rois, 2, 1.0, -1, False),
    "pool": lambda x, rois: FC.roi_pool(x, rois, (2, 3), 1.0),
}


@pytest.mark.parametrize("name", list(ROI_OPS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["f32", "f16"])
def test_deterministic_backward_is_bitwise_reproducible(deterministic, name, dtype):
    x = torch.randn(2, 5, 6, 7).to(dtype)
    rois = _overlapping_boxes(10, 2, 6, 7, seed=3, dtype=dtype)
    first, second = _backward(ROI_OPS[name], x, rois)
    assert torch.equal(first, second), "two deterministic backward runs differ"
    assert torch.isfinite(first).all()


@pytest.mark.parametrize("name", list(ROI_OPS))
def test_deterministic_gradient_matches_the_default_one(name):
    x = torch.randn(2, 5, 6, 7)
    rois = _overlapping_boxes(10, 2, 6, 7, seed=4)
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(False)
    try:
        default, = _backward(ROI_OPS[name], x, rois, times=1)
        torch.use_deterministic_algorithms(True)
        ordered, = _backward(ROI_OPS[name], x, rois, times=1)
    finally:
        torch.use_deterministic_algorithms(before)
    assert_rel_close(ordered, default.double(), torch.float32, "deterministic vs default")


def test_deterministic_flag_reaches_the_backward_op(deterministic, monkeypatch):
    """Under deterministic algorithms the autograd formula asks the op for the ordered
    backward (and not otherwise)."""
    from fastconv.roi import launch as roi_launch
    seen = []
    for name in ("roi_align_backward", "roi_pool_backward"):
        real = getattr(roi_launch, name + "_launch")

        def spy(*args, _real=real, _name=name, **kwargs):
            bound = inspect.signature(_real).bind(*args, **kwargs)
            seen.append((_name, bound.arguments["deterministic"]))
            return _real(*args, **kwargs)
        monkeypatch.setattr(roi_launch, name + "_launch", spy)
    x = torch.randn(1, 2, 4, 4)
    rois = _overlapping_boxes(3, 1, 4, 4, seed=5)
    for op in (ROI_OPS["align"], ROI_OPS["pool"]):
        leaf = x.clone().requires_grad_()
        with torchvision_forbidden():
            op(leaf, rois).sum().backward()
    torch.use_deterministic_algorithms(False)
    for op in (ROI_OPS["align"], ROI_OPS["pool"]):
        leaf = x.clone().requires_grad_()
        with torchvision_forbidden():
            op(leaf, rois).sum().backward()
    assert seen == [("roi_align_backward", True), ("roi_pool_backward", True),
                    ("roi_align_backward", False), ("roi_pool_backward", False)], seen


# ---------------------------------------------------------------------------- NaN boxes
NAN = float("nan")
NAN_BOXES = [[0, NAN, 1.0, 3.0, 3.0], [1, 0.5, NAN, 2.0, 3.0], [0, 0.5, 1.0, NAN, 3.0],
             [1, 0.5, 1.0, 2.0, NAN], [0, NAN, NAN, NAN, NAN]]


@pytest.mark.parametrize("op", ["align", "align-aligned", "align-sr2", "pool"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_nan_boxes_give_zeros(op, dtype):
    # torchvision itself crashes on NaN boxes, so the reference is written out: zeros, and a
    # finite gradient; a valid box among them still gets torchvision's values
    x = torch.randn(2, 3, 5, 6).to(dtype).requires_grad_()
    valid = [1, 0.5, 1.2, 4.0, 3.5]
    rois = torch.tensor(NAN_BOXES + [valid]).to(dtype)
    call = {
        "align": lambda x, r: FC.roi_align(x, r, (2, 3), 1.0),
        "align-aligned": lambda x, r: FC.roi_align(x, r, (2, 3), 0.5, -1, True),
        "align-sr2": lambda x, r: FC.roi_align(x, r, (2, 3), 1.0, 2),
        "pool": lambda x, r: FC.roi_pool(x, r, (2, 3), 1.0),
    }[op]
    with torchvision_forbidden():
        y = call(x, rois)
        y.backward(torch.ones_like(y))
    assert y.shape == (6, 3, 2, 3) and y.dtype == dtype
    assert torch.equal(y[:5], torch.zeros_like(y[:5])), y[:5]
    assert torch.isfinite(x.grad).all()

    x_ref = x.detach().double().requires_grad_()
    if op == "pool":
        y_ref = tvops.roi_pool(x_ref, rois[5:].double(), (2, 3), 1.0)
    elif op == "align":
        y_ref = tvops.roi_align(x_ref, rois[5:].double(), (2, 3), 1.0)
    elif op == "align-aligned":
        y_ref = tvops.roi_align(x_ref, rois[5:].double(), (2, 3), 0.5, -1, True)
    else:
        y_ref = tvops.roi_align(x_ref, rois[5:].double(), (2, 3), 1.0, 2)
    y_ref.backward(torch.ones_like(y_ref))
    assert_rel_close(y[5:], y_ref, dtype, "valid box among NaN boxes")
    assert_rel_close(x.grad, x_ref.grad, dtype, "gradient of the valid box alone")


# ---------------------------------------------------------------------------- empty cases
@pytest.mark.parametrize("as_list", [False, True], ids=["tensor", "list"])
@pytest.mark.parametrize("op", ["align", "pool"])
def test_no_boxes(op, as_list):
    x = torch.randn(2, 3, 5, 4).requires_grad_()
    boxes = [torch.zeros(0, 4), torch.zeros(0, 4)] if as_list else torch.zeros(0, 5)
    with torchvision_forbidden():
        if op == "align":
            y = FC.roi_align(x, boxes, (2, 3), 0.5, 2, True)
        else:
            y = FC.roi_pool(x, boxes, (2, 3), 0.5)
        y.sum().backward()
    assert y.shape == (0, 3, 2, 3) and y.dtype == x.dtype
    assert x.grad is not None and x.grad.shape == x.shape
    assert torch.equal(x.grad, torch.zeros_like(x)), "gradient of no boxes"


@pytest.mark.parametrize("op", ["align", "pool"])
def test_zero_channels(op):
    x = torch.randn(2, 0, 5, 4).requires_grad_()
    rois = torch.tensor([[0, 0.5, 0.5, 3.0, 4.0], [1, 1.0, 0.0, 2.0, 2.0]])
    with torchvision_forbidden():
        if op == "align":
            y = FC.roi_align(x, rois, (2, 3), 1.0)
        else:
            y = FC.roi_pool(x, rois, (2, 3), 1.0)
        y.sum().backward()
    want = (tvops.roi_align(x.detach(), rois, (2, 3)) if op == "align"
            else tvops.roi_pool(x.detach(), rois, (2, 3)))
    assert y.shape == want.shape == (2, 0, 2, 3)
    assert x.grad is not None and x.grad.shape == x.shape


@pytest.mark.parametrize("op", ["align", "pool"])
def test_empty_batch_and_no_boxes(op):
    x = torch.randn(0, 3, 5, 4).requires_grad_()
    with torchvision_forbidden():
        if op == "align":
            y = FC.roi_align(x, torch.zeros(0, 5), 2)
        else:
            y = FC.roi_pool(x, torch.zeros(0, 5), 2)
        y.sum().backward()
    assert y.shape == (0, 3, 2, 2)
    assert x.grad is not None and x.grad.shape == x.shape


# ---------------------------------------------------------------------------- dtypes, layouts
def _layouts():
    return {
        "nchw": lambda x: x,
        "channels_last": lambda x: x.contiguous(memory_format=torch.channels_last),
        "sliced": lambda x: torch.cat([x, x], 1)[:, ::2],
        "transposed": lambda x: x.transpose(2, 3).contiguous().transpose(2, 3),
    }


@pytest.mark.parametrize("layout", list(_layouts()))
@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("op", ["align", "pool"])
def test_output_dtype_and_layout(op, dtype, layout):
    x = _layouts()[layout](torch.randn(2, 3, 5, 6).to(dtype))
    rois = torch.tensor([[1, 0.5, 0.5, 4.0, 3.0], [0, -1.0, 2.0, 3.0, 7.0]]).to(dtype)
    with torchvision_forbidden():
        if op == "align":
            y = FC.roi_align(x, rois, (3, 2), 0.5, -1, True)
        else:
            y = FC.roi_pool(x, rois, (3, 2), 0.5)
    assert y.dtype == dtype
    assert y.shape == (2, 3, 3, 2)
    assert y.is_contiguous(), f"output strides {y.stride()} for a {layout} input"
    assert not torch.isnan(y).any()


# ---------------------------------------------------------------------------- arguments intact
@pytest.mark.parametrize("as_list", [False, True], ids=["tensor", "list"])
@pytest.mark.parametrize("op", ["align", "pool"])
def test_arguments_are_not_modified(op, as_list):
    x = torch.randn(2, 3, 5, 6).contiguous(memory_format=torch.channels_last).requires_grad_()
    rois = torch.tensor([[1, 0.5, 0.5, 4.0, 3.0], [0, -1.0, 2.0, 3.0, 7.0],
                         [1, 3.0, 3.0, 1.0, 1.0]])
    boxes = [rois[rois[:, 0] == 0, 1:], rois[rois[:, 0] == 1, 1:]] if as_list else rois
    tensors = [x] + (boxes if as_list else [boxes])
    before = [(t.detach().clone(), t.stride(), t.storage_offset(), t.data_ptr()) for t in tensors]
    with torchvision_forbidden():
        if op == "align":
            y = FC.roi_align(x, boxes, 2, 0.5, 2, False)
        else:
            y = FC.roi_pool(x, boxes, 2, 0.5)
        y.backward(torch.randn_like(y))
    for i, (t, (values, stride, offset, ptr)) in enumerate(zip(tensors, before)):
        assert torch.equal(t.detach(), values), f"argument {i} values changed"
        assert (t.stride(), t.storage_offset(), t.data_ptr()) == (stride, offset, ptr), (
            f"argument {i} strides/storage changed")
