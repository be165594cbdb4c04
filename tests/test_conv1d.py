"""fastconv.functional.conv1d and fastconv.Conv1d against torch.

conv1d runs on the conv2d kernels through a height-1 view, so what is checked here is the view:
a seeded sweep (output and all three gradients against torch on float64, ATen's convolution
forbidden meanwhile), float64 gradcheck, the module in every padding_mode with its state_dict,
and every bad input refused before any launch with a conv1d() message naming the argument.
"""
import copy
import random
from dataclasses import dataclass
from typing import Optional, Union

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import fastconv
from fastconv.functional import conv1d
from conv_cases import sweep
from helpers import DTYPES, assert_rel_close, aten_forbidden, bad, ints, t

ACCEPTED_ERRORS = (ValueError, TypeError, RuntimeError)
EVEN_SAME = "ignore:Using padding='same' with even kernel lengths"


# ---------------------------------------------------------------------------- the sweep
@dataclass(frozen=True)
class Conv1dCase:
    N: Optional[int]          # None: unbatched input [C, L]
    C: int
    L: int
    K: int
    k: int
    stride: Union[int, tuple]
    padding: Union[str, int, tuple]
    dilation: Union[int, tuple]
    groups: int
    dtype: torch.dtype
    transposed: bool          # input is x.transpose(1, 2) of an [N, L, C] tensor
    bias: bool

    @property
    def id(self) -> str:
        n = "u" if self.N is None else self.N
        return (f"n{n}c{self.C}l{self.L}k{self.K}r{self.k}-st{self.stride}-p{self.padding}"
                f"-d{self.dilation}-g{self.groups}-{str(self.dtype)[6:]}"
                f"{'-T' if self.transposed else ''}{'-bias' if self.bias else ''}").replace(" ", "")

    def tensors(self, seed: int):
        gen = torch.Generator().manual_seed(seed)
        batch = () if self.N is None else (self.N,)
        if self.transposed:
            x = torch.randn(*batch, self.L, self.C, generator=gen).transpose(-1, -2)
        else:
            x = torch.randn(*batch, self.C, self.L, generator=gen)
        fan_in = self.C // self.groups * self.k
        w = torch.randn(self.K, self.C // self.groups, self.k, generator=gen) / fan_in ** 0.5
        b = torch.randn(self.K, generator=gen) if self.bias else None
        return x.to(self.dtype), w.to(self.dtype), None if b is None else b.to(self.dtype)

    @property
    def dilation_int(self) -> int:
        return self.dilation if isinstance(self.dilation, int) else self.dilation[0]

    @property
    def stride_int(self) -> int:
        return self.stride if isinstance(self.stride, int) else self.stride[0]


def _maybe_tuple(rng, v):
    return (v,) if rng.random() < 0.25 else v


def random_case(rng: random.Random) -> Optional[Conv1dCase]:
    kind = rng.choice(["dense", "thin", "thin", "grouped", "depthwise", "depthwise", "pointwise"])
    if kind == "depthwise":
        groups, cg, kg = rng.choice([2, 3, 5, 8]), 1, rng.choice([1, 1, 2])
    elif kind == "grouped":
        groups, cg, kg = rng.choice([2, 3]), rng.choice([2, 5, 16]), rng.choice([3, 16])
    elif kind == "thin":
        groups, cg, kg = 1, rng.choice([1, 2, 3, 7]), rng.choice([1, 4, 16, 19])
    elif kind == "pointwise":
        groups, cg, kg = rng.choice([1, 2]), rng.choice([3, 16, 19]), rng.choice([5, 16])
    else:
        groups, cg, kg = 1, rng.choice([16, 17, 24]), rng.choice([5, 16, 20])
    k = 1 if kind == "pointwise" else rng.choice([1, 2, 3, 3, 4, 5, 7])
    stride = rng.choice([1, 1, 1, 2, 3])
    dilation = rng.choice([1, 1, 2, 3])
    if stride == 1 and rng.random() < 0.35:
        padding = rng.choice(["same", "same", "valid"])
    else:
        padding = _maybe_tuple(rng, rng.randint(0, 3))
    length = rng.randint(1, 15)
    pad = {"valid": 0, "same": None}.get(padding, padding) if isinstance(padding, str) else (
        padding if isinstance(padding, int) else padding[0])
    if pad is not None and length + 2 * pad < dilation * (k - 1) + 1:
        return None
    if padding == "same" and length == 0:
        return None
    return Conv1dCase(rng.choice([None, 1, 2, 3]), cg * groups, length, kg * groups, k,
                      _maybe_tuple(rng, stride), padding, _maybe_tuple(rng, dilation), groups,
                      rng.choice(DTYPES), rng.random() < 0.3, rng.random() < 0.6)


CASES = sweep(110, seed=1701, generate=random_case)


def run_case(case, seed=0):
    x, w, b = case.tensors(seed)
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in (x, w, b)]
    assert leaves[0].stride() == x.stride()  # clone() keeps a transposed input's strides
    if case.transposed and case.C > 1 and case.L > 1:
        assert not leaves[0].is_contiguous()
    with aten_forbidden():
        y = conv1d(leaves[0], leaves[1], leaves[2], case.stride, case.padding, case.dilation,
                   case.groups)
        grad_y = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed + 1)).to(y.dtype)
        y.backward(grad_y)
    refs = [t.detach().double().requires_grad_() if t is not None else None for t in leaves]
    y_ref = F.conv1d(refs[0], refs[1], refs[2], case.stride, case.padding, case.dilation,
                     case.groups)
    y_ref.backward(grad_y.double())
    return y, y_ref, leaves, refs


@pytest.mark.filterwarnings(EVEN_SAME)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_conv1d_matches_torch(case):
    y, y_ref, leaves, refs = run_case(case)
    assert y.dtype == case.dtype
    assert_rel_close(y, y_ref, case.dtype, "output")
    for name, leaf, ref in zip(("grad_input", "grad_weight", "grad_bias"), leaves, refs):
        if leaf is not None:
            assert leaf.grad.dtype == case.dtype, name
            assert leaf.grad.shape == leaf.shape, name
            assert_rel_close(leaf.grad, ref.grad, case.dtype, name)
    if not (case.transposed and (case.C == 1 or case.L == 1)):
        # torch's layout. (A transposed input with C == 1 or L == 1 is contiguous and
        # channels-last-like at once; there torch's stride-order heuristic may pick a
        # channels-last output where fastconv, like its conv2d, counts it as contiguous.)
        assert y.is_contiguous() == y_ref.is_contiguous(), (y.stride(), y_ref.stride())


def test_sweep_covers_what_it_claims():
    """The case list is generated, so check what it generated."""
    assert len(CASES) >= 100
    assert {c.dtype for c in CASES} == set(DTYPES)
    count = lambda pred: sum(1 for c in CASES if pred(c))  # noqa: E731
    assert count(lambda c: c.groups > 1) >= 20
    assert count(lambda c: c.groups > 1 and c.C == c.groups) >= 10          # depthwise
    assert count(lambda c: c.C // c.groups >= 16) >= 10                     # implicit GEMM
    assert count(lambda c: c.C // c.groups < 16) >= 30                      # direct
    assert count(lambda c: c.stride_int > 1) >= 20
    assert count(lambda c: c.dilation_int > 1) >= 20
    assert count(lambda c: c.stride_int > 1 and c.dilation_int > 1) >= 5
    assert count(lambda c: c.padding == "same" and c.dilation_int * (c.k - 1) % 2) >= 3
    assert count(lambda c: c.padding == "same") >= 8
    assert count(lambda c: c.padding == "valid") >= 3
    assert count(lambda c: isinstance(c.padding, int) and c.padding > 0) >= 20
    assert count(lambda c: isinstance(c.stride, tuple) or isinstance(c.padding, tuple)) >= 10
    assert count(lambda c: c.N is None) >= 15
    assert count(lambda c: c.transposed) >= 20
    assert count(lambda c: c.bias) >= 30 and count(lambda c: not c.bias) >= 30


# ---------------------------------------------------------------------------- layouts
@pytest.mark.parametrize("make_x, make_w", [
    (lambda: torch.randn(2, 9, 4).transpose(1, 2), lambda: torch.randn(6, 4, 3)),
    (lambda: torch.randn(2, 4, 9), lambda: torch.randn(6, 3, 4).transpose(1, 2)),
    (lambda: torch.randn(2, 18, 4)[:, ::2].transpose(1, 2), lambda: torch.randn(6, 4, 6)[..., ::2]),
    (lambda: torch.randn(9, 4).t(), lambda: torch.randn(6, 4, 3)),
], ids=["transposed-input", "transposed-weight", "strided-both", "unbatched-transposed"])
def test_layouts_match_torch(make_x, make_w):
    """Values and output strides as torch: a permuted input does not make the output
    channels-last (torch makes 3-D input contiguous), a permuted weight does."""
    x, w, b = make_x().requires_grad_(), make_w().requires_grad_(), torch.randn(6).requires_grad_()
    before = [(t.detach().clone(), t.stride()) for t in (x, w)]
    with aten_forbidden():
        y = conv1d(x, w, b, padding=1, stride=2)
        grad_y = torch.randn_like(y)
        y.backward(grad_y)
    refs = [t.detach().double().requires_grad_() for t in (x, w, b)]
    y_ref = F.conv1d(*refs, padding=1, stride=2)
    y_ref.backward(grad_y.double())
    assert y.stride() == y_ref.stride()
    assert_rel_close(y, y_ref, torch.float32, "output")
    for name, t, r in zip(("input", "weight", "bias"), (x, w, b), refs):
        assert_rel_close(t.grad, r.grad, torch.float32, f"grad {name}")
    for t, (values, stride) in zip((x, w), before):
        assert torch.equal(t.detach(), values) and t.stride() == stride


def test_empty_batch():
    x, w, b = (torch.randn(0, 2, 5).requires_grad_(), torch.randn(3, 2, 3).requires_grad_(),
               torch.randn(3))
    with aten_forbidden():
        y = conv1d(x, w, b, padding=1)
        y.sum().backward()
    assert y.shape == (0, 3, 5)
    assert torch.equal(w.grad, torch.zeros_like(w))


def test_zero_input_channels_give_the_bias():
    # as fastconv's conv2d: the sum over zero channels is 0, so the output is the bias
    x, w, b = torch.randn(2, 0, 5), torch.randn(4, 0, 3), torch.randn(4)
    with aten_forbidden():
        y = conv1d(x, w, b, padding=1, stride=2)
    assert torch.equal(y, b.view(1, 4, 1).expand(2, 4, 3))


# ---------------------------------------------------------------------------- gradcheck
GRAD_CASES = [
    # (N, C, L, K, k, stride, padding, dilation, groups)
    (2, 2, 6, 3, 3, 1, 1, 1, 1),          # direct kernels
    (1, 16, 5, 16, 2, 2, 1, 1, 1),        # implicit GEMM, strided
    (1, 4, 7, 4, 2, 1, "same", 3, 1),     # 'same' with an odd total: extra element after
    (1, 3, 8, 6, 3, 2, 2, 2, 3),          # depthwise x2, strided and dilated
    (None, 4, 5, 2, 3, 1, 0, 1, 2),       # unbatched, grouped
]


def _grad_args(case, transposed=False):
    n, c, length, k_out, k, stride, pad, dil, groups = case
    batch = () if n is None else (n,)
    x = torch.randn(*batch, length, c, dtype=torch.float64).transpose(-1, -2) if transposed \
        else torch.randn(*batch, c, length, dtype=torch.float64)
    w = torch.randn(k_out, c // groups, k, dtype=torch.float64)
    b = torch.randn(k_out, dtype=torch.float64)
    return [t.requires_grad_() for t in (x, w, b)], (stride, pad, dil, groups)


@pytest.mark.filterwarnings(EVEN_SAME)
@pytest.mark.parametrize("case", GRAD_CASES)
def test_gradcheck_float64(case):
    tensors, conv = _grad_args(case, transposed=case[0] == 1)
    with aten_forbidden():
        assert torch.autograd.gradcheck(lambda x, w, b: conv1d(x, w, b, *conv), tensors,
                                        eps=1e-6, atol=1e-7, fast_mode=True)


@pytest.mark.filterwarnings(EVEN_SAME)
def test_gradcheck_full_jacobian():
    tensors, conv = _grad_args((1, 2, 4, 2, 2, 1, "same", 1, 1))
    with aten_forbidden():
        assert torch.autograd.gradcheck(lambda x, w, b: conv1d(x, w, b, *conv), tensors,
                                        eps=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------- the module
MODULE_KWARGS = [
    dict(in_channels=4, out_channels=6, kernel_size=3, padding=1),
    dict(in_channels=3, out_channels=6, kernel_size=2, stride=2, padding=2, dilation=2, groups=3),
    dict(in_channels=4, out_channels=4, kernel_size=4, padding="same", groups=2, bias=False),
]


@pytest.mark.filterwarnings(EVEN_SAME)
@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("kwargs", MODULE_KWARGS, ids=["basic", "strided-grouped", "same-even"])
def test_conv1d_module_matches_torch(padding_mode, kwargs):
    ref = nn.Conv1d(**kwargs, padding_mode=padding_mode).double()
    mod = fastconv.Conv1d(**kwargs, padding_mode=padding_mode, dtype=torch.float64)
    assert isinstance(mod, nn.Conv1d) and repr(mod) == "fastconv." + repr(ref)
    assert list(mod.state_dict()) == list(ref.state_dict())
    mod.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, kwargs["in_channels"], 7, dtype=torch.float64)
    xr, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
    with aten_forbidden():
        y = mod(xf)
        y.backward(torch.ones_like(y))
    y_ref = ref(xr)
    y_ref.backward(torch.ones_like(y_ref))
    assert_rel_close(y, y_ref, torch.float64, "output")
    assert_rel_close(xf.grad, xr.grad, torch.float64, "grad_input")
    for (name, p), p_ref in zip(mod.named_parameters(), ref.parameters()):
        assert_rel_close(p.grad, p_ref.grad, torch.float64, f"grad {name}")


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
def test_conv1d_module_state_dict_round_trips(padding_mode):
    kw = dict(in_channels=3, out_channels=4, kernel_size=3, stride=2, padding=1,
              padding_mode=padding_mode)
    ref, mod = nn.Conv1d(**kw), fastconv.Conv1d(**kw)
    fresh_ref, fresh_mod = nn.Conv1d(**kw), fastconv.Conv1d(**kw)
    fresh_ref.load_state_dict(mod.state_dict(), strict=True)
    fresh_mod.load_state_dict(ref.state_dict(), strict=True)
    for a, b in zip(fresh_ref.state_dict().values(), mod.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(fresh_mod.state_dict().values(), ref.state_dict().values()):
        assert torch.equal(a, b)
    x = torch.randn(3, 6)  # unbatched
    with aten_forbidden():
        y = fresh_mod(x)
    assert y.shape == (4, 3)
    assert_rel_close(y, copy.deepcopy(ref).double()(x.double()), torch.float32, "unbatched")


def test_conv1d_module_dtype_and_device():
    mod = fastconv.Conv1d(4, 5, 3, padding=1, device="cpu", dtype=torch.bfloat16)
    assert mod.weight.dtype == torch.bfloat16 and mod.weight.device.type == "cpu"
    x = torch.randn(2, 4, 6, dtype=torch.bfloat16)
    with aten_forbidden():
        y = mod(x)
    ref = F.conv1d(x.double(), mod.weight.double(), mod.bias.double(), padding=1)
    assert y.shape == (2, 5, 6) and y.dtype == torch.bfloat16
    assert_rel_close(y, ref, torch.bfloat16, "output")


# ---------------------------------------------------------------------------- bad input


def test_launch_guard_catches_a_launch(no_launch):
    with pytest.raises(pytest.fail.Exception, match="conv2d_fprop was called"):
        conv1d(torch.randn(1, 2, 5), torch.randn(2, 2, 3))


def _base():
    """A valid call: input [2, 4, 7], weight [6, 4, 3], bias [6], float32."""
    return dict(input=torch.randn(2, 4, 7), weight=torch.randn(6, 4, 3), bias=torch.randn(6))


BAD_INPUTS = [
    # ranks
    bad("input-1d", ValueError, ["input", "2-D or 3-D"], input=t(7)),
    bad("input-4d", ValueError, ["input", "2-D or 3-D"], input=t(2, 4, 7, 1)),
    bad("weight-2d", ValueError, ["weight", "3-D"], weight=t(6, 4)),
    bad("weight-4d", ValueError, ["weight", "3-D"], weight=t(6, 4, 3, 1)),
    # channels and groups
    bad("channels-mismatch", ValueError, ["input", "weight"], weight=t(6, 3, 3)),
    bad("unbatched-channels-mismatch", ValueError, ["input", "weight"], input=t(3, 7)),
    bad("groups-not-dividing-in-channels", ValueError, ["input", "groups"],
        input=t(2, 3, 7), weight=t(6, 1, 3), groups=2),
    bad("groups-not-dividing-out-channels", ValueError, ["groups", "weight"],
        weight=t(5, 2, 3), bias=t(5), groups=2),
    bad("groups-more-than-out-channels", ValueError, ["groups", "weight"],
        weight=t(2, 1, 3), bias=t(2), groups=4),
    bad("groups-0", ValueError, ["groups"], groups=0),
    bad("groups-negative", ValueError, ["groups"], groups=-1),
    bad("groups-float", TypeError, ["groups"], groups=1.0),
    bad("groups-bool", TypeError, ["groups"], groups=True),
    # stride / padding / dilation
    bad("stride-0", ValueError, ["stride"], stride=0),
    bad("stride-negative", ValueError, ["stride"], stride=(-1,)),
    bad("dilation-0", ValueError, ["dilation"], dilation=0),
    bad("dilation-negative", ValueError, ["dilation"], dilation=-2),
    bad("stride-len-2", ValueError, ["stride", "1 value"], stride=(1, 2)),
    bad("stride-empty", ValueError, ["stride"], stride=()),
    bad("padding-len-2", ValueError, ["padding", "1 value"], padding=(1, 1)),
    bad("dilation-len-2", ValueError, ["dilation", "1 value"], dilation=[1, 1]),
    bad("stride-float", TypeError, ["stride"], stride=1.5),
    bad("stride-tuple-with-float", TypeError, ["stride"], stride=(2.0,)),
    bad("stride-bool", TypeError, ["stride"], stride=True),
    bad("padding-float", TypeError, ["padding"], padding=1.0),
    bad("padding-negative", ValueError, ["padding"], padding=-1),
    bad("padding-negative-tuple", ValueError, ["padding"], padding=(-1,)),
    bad("padding-unknown-string", ValueError, ["padding", "'full'"], padding="full"),
    bad("padding-uppercase-SAME", ValueError, ["padding"], padding="SAME"),
    bad("padding-same-stride-2", ValueError, ["padding", "stride"], padding="same", stride=2),
    bad("padding-same-stride-tuple", ValueError, ["padding", "stride"], padding="same",
        stride=(3,)),
    # dtypes
    bad("dtype-weight-float64", TypeError, ["weight", "input"],
        weight=t(6, 4, 3, dtype=torch.float64)),
    bad("dtype-bias-float64", TypeError, ["bias", "input"], bias=t(6, dtype=torch.float64)),
    bad("dtype-input-float16", TypeError, ["weight", "input"],
        input=t(2, 4, 7, dtype=torch.float16)),
    bad("int-input", TypeError, ["input"], input=ints(2, 4, 7)),
    bad("int-weight", TypeError, ["weight"], weight=ints(6, 4, 3)),
    # torch convolves int64 tensors on the CPU; fastconv's kernels are floating point only
    bad("int64-everything", TypeError, ["input"], torch_rejects=False,
        input=ints(2, 4, 7), weight=ints(6, 4, 3), bias=None),
    # the meta device stands in for a second device: torch runs a cpu/meta mixture as a meta
    # computation, fastconv's kernels can't
    bad("device-weight-meta", RuntimeError, ["weight", "input", "device"], torch_rejects=False,
        weight=t(6, 4, 3, device="meta")),
    bad("device-bias-meta", RuntimeError, ["bias", "input", "device"], torch_rejects=False,
        bias=t(6, device="meta")),
    # bias
    bad("bias-wrong-length", ValueError, ["bias"], bias=t(5)),
    bad("bias-2d", ValueError, ["bias"], bias=t(6, 1)),
    bad("bias-list", TypeError, ["bias"], bias=[0.0] * 6),
    # not tensors
    bad("input-list", TypeError, ["input"], input=lambda: torch.randn(2, 4, 7).tolist()),
    bad("input-none", TypeError, ["input"], input=None),
    bad("weight-ndarray", TypeError, ["weight"], weight=lambda: torch.randn(6, 4, 3).numpy()),
    # kernel vs padded input length
    bad("kernel-longer-than-input", ValueError, ["input", "weight", "along L"], input=t(2, 4, 2)),
    bad("kernel-longer-than-padded-input", ValueError, ["padding", "along L"],
        input=t(2, 4, 1), weight=t(6, 4, 5), padding=1),
    bad("kernel-longer-through-dilation", ValueError, ["dilation", "along L"], dilation=4),
    bad("kernel-zero-length", ValueError, ["weight"], weight=t(6, 4, 0)),
    bad("input-L-0", ValueError, ["input", "along L"], input=t(2, 4, 0)),
    bad("input-L-0-padded", ValueError, ["input", "L=0"], input=t(2, 4, 0), weight=t(6, 4, 1),
        padding=1),
    bad("unbatched-input-L-0-padded", ValueError, ["input", "L=0"], input=t(4, 0),
        weight=t(6, 4, 1), padding=1),
]


@pytest.mark.parametrize("overrides, exc, names, torch_rejects", BAD_INPUTS)
def test_bad_input_is_refused_before_launch(no_launch, overrides, exc, names, torch_rejects):
    kwargs = _base()
    kwargs.update({k: v() if callable(v) else v for k, v in overrides.items()})

    with aten_forbidden(), pytest.raises(ACCEPTED_ERRORS) as info:
        conv1d(**kwargs)
    assert info.type is exc, f"raised {info.type.__name__}, expected {exc.__name__}: {info.value}"
    message = str(info.value)
    assert message.startswith("conv1d(): "), message
    assert "conv2d" not in message and " H " not in message and " W " not in message, message
    for name in names:
        assert name in message, f"the message does not name {name!r}: {message}"

    if torch_rejects:  # fastconv must not refuse what torch accepts
        with pytest.raises(ACCEPTED_ERRORS):
            F.conv1d(**kwargs)


@pytest.mark.parametrize("kwargs", [dict(stride=2, padding=1), dict(padding="same", dilation=2),
                                    dict(groups=4)])
def test_opcheck_of_the_op_conv1d_runs(kwargs, monkeypatch):
    """conv1d has no op of its own: it calls fastconv::conv2d on an H=1 view. opcheck that op on
    exactly the arguments conv1d hands it (captured), gradients included."""
    from fastconv.ops import registry
    calls = []
    real = registry.call

    def spy(op, *args):
        if op is torch.ops.fastconv.conv2d.default:
            calls.append(args)
        return real(op, *args)
    monkeypatch.setattr(registry, "call", spy)
    x = torch.randn(2, 8, 9, requires_grad=True)
    w = torch.randn(16, 8 // kwargs.get("groups", 1), 3, requires_grad=True)
    b = torch.randn(16, requires_grad=True)
    fastconv.functional.conv1d(x, w, b, **kwargs)
    monkeypatch.undo()
    assert len(calls) == 1
    torch.library.opcheck(torch.ops.fastconv.conv2d.default, calls[0])
