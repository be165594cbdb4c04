"""fastconv's conv_transpose2d: functional, op and module, against torch.

- a seeded randomised sweep of valid configurations: output and every gradient against
  torch.nn.functional.conv_transpose2d on the same values upcast to float64, with ATen's
  convolution (which torch's conv_transpose2d also goes through) overridden to raise while
  fastconv runs, so a pass cannot come from a silent fallback;
- float64 gradcheck and torch.library.opcheck of the ops;
- fastconv.ConvTranspose2d as a drop-in nn.ConvTranspose2d, ``output_size`` included;
- bad input refused before any launch, with an error naming the argument.
"""
import random
from dataclasses import dataclass
from typing import Tuple

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import fastconv
import fastconv.ops._runtime as runtime
from fastconv.functional import conv_transpose2d
from fastconv.conv import launch as conv2d_launch
from fastconv.conv.plan import THIN
from conv_cases import sweep
from helpers import ATenRan, DTYPES, assert_rel_close, aten_forbidden, bad, ints, t

ACCEPTED_ERRORS = (ValueError, TypeError, RuntimeError)
CL = torch.channels_last


def out_size(size, k, s, p, op, d):
    return (size - 1) * s - 2 * p + d * (k - 1) + op + 1


# ---------------------------------------------------------------------------- cases
@dataclass(frozen=True)
class Case:
    N: int              # 0 means unbatched (a 3-D input)
    C: int              # input channels
    H: int
    W: int
    K: int              # output channels
    R: int
    S: int
    stride: Tuple[int, int]
    padding: Tuple[int, int]
    output_padding: Tuple[int, int]
    dilation: Tuple[int, int]
    groups: int
    dtype: torch.dtype
    channels_last: bool
    weight_channels_last: bool
    bias: bool

    @property
    def id(self) -> str:
        pair = lambda t: "x".join(map(str, t))  # noqa: E731
        return (f"n{self.N}c{self.C}h{self.H}w{self.W}k{self.K}r{self.R}s{self.S}"
                f"-st{pair(self.stride)}-p{pair(self.padding)}-op{pair(self.output_padding)}"
                f"-d{pair(self.dilation)}-g{self.groups}-{str(self.dtype)[6:]}"
                f"{'-cl' if self.channels_last else ''}{'-wcl' if self.weight_channels_last else ''}"
                f"{'-bias' if self.bias else ''}")

    def out_hw(self):
        return tuple(out_size(*a) for a in zip((self.H, self.W), (self.R, self.S), self.stride,
                                               self.padding, self.output_padding, self.dilation))

    def tensors(self, seed: int):
        gen = torch.Generator().manual_seed(seed)
        shape = (self.C, self.H, self.W) if self.N == 0 else (self.N, self.C, self.H, self.W)
        x = torch.randn(*shape, generator=gen)
        fan_in = self.C // self.groups * self.R * self.S
        w = torch.randn(self.C, self.K // self.groups, self.R, self.S, generator=gen) / fan_in ** 0.5
        b = torch.randn(self.K, generator=gen) if self.bias else None
        x, w = x.to(self.dtype), w.to(self.dtype)
        b = b.to(self.dtype) if b is not None else None
        if self.channels_last and self.N:
            x = x.contiguous(memory_format=CL)
        if self.weight_channels_last:
            w = w.contiguous(memory_format=CL)
        return x, w, b


def random_case(rng: random.Random):
    kind = rng.choice(["dense", "thin", "thin", "grouped", "depthwise", "pointwise"])
    if kind == "depthwise":
        groups = rng.choice([2, 3, 5])
        cg, kg = 1, rng.choice([1, 1, 2])
    elif kind == "grouped":
        groups = rng.choice([2, 3])
        cg, kg = rng.choice([1, 3, 16, 17]), rng.choice([2, 5, 16])
    elif kind == "thin":
        groups, cg, kg = 1, rng.choice([1, 2, 3, 7]), rng.choice([1, 4, 16, 19])
    elif kind == "pointwise":
        groups, cg, kg = rng.choice([1, 2]), rng.choice([3, 16, 19]), rng.choice([2, 16, 17])
    else:
        groups, cg, kg = 1, rng.choice([16, 17, 24, 32]), rng.choice([3, 16, 17, 20])
    if kind == "pointwise":
        r = s = 1
    else:
        r, s = rng.choice([(1, 1), (2, 2), (3, 3), (3, 3), (1, 3), (3, 1), (2, 3), (4, 2)])
    stride = (rng.choice([1, 1, 2, 3]), rng.choice([1, 2, 2, 3]))
    dilation = (rng.choice([1, 1, 1, 2, 3]), rng.choice([1, 1, 2]))
    padding = (rng.randint(0, 2), rng.randint(0, 2))
    # output_padding: anything below the stride or the dilation of its axis (torch's rule)
    output_padding = tuple(rng.randint(0, max(st, d) - 1) if rng.random() < 0.5 else 0
                           for st, d in zip(stride, dilation))
    n = rng.choice([0, 1, 1, 2, 2, 3]) if rng.random() < 0.9 else 0
    h, w = rng.randint(1, 6), rng.randint(1, 6)
    case = Case(n, cg * groups, h, w, kg * groups, r, s, stride, padding, output_padding,
                dilation, groups, rng.choice(DTYPES), rng.random() < 0.4, rng.random() < 0.12,
                rng.random() < 0.6)
    p_out, q_out = case.out_hw()
    # keep the interpreted launches small: every output pixel is a program row, and the direct
    # kernels loop over (channels per group) * R * S taps one at a time
    if p_out < 1 or q_out < 1 or max(n, 1) * p_out * q_out > 160:
        return None
    if any(ch < THIN and ch * r * s > 48 for ch in (cg, kg)):
        return None
    return case


CASES = sweep(110, seed=2027, generate=random_case)


def _leaves(tensors, dtype=None):
    return [None if t is None else (t.detach().clone() if dtype is None else t.detach().to(dtype))
            .requires_grad_() for t in tensors]


def run_case(case: Case, seed=0):
    x, w, b = case.tensors(seed)
    conv = (case.stride, case.padding, case.output_padding, case.groups, case.dilation)
    leaves = _leaves((x, w, b))
    with aten_forbidden():
        y = conv_transpose2d(*leaves, *conv)
        grad_y = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed + 1)).to(y.dtype)
        y.backward(grad_y)
    refs = _leaves((x, w, b), torch.float64)
    y_ref = F.conv_transpose2d(*refs, *conv)
    y_ref.backward(grad_y.double())
    return y, y_ref, leaves, refs


# ---------------------------------------------------------------------------- the sweep
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_conv_transpose2d_matches_torch(case):
    y, y_ref, leaves, refs = run_case(case)
    assert y.dtype == case.dtype
    assert_rel_close(y, y_ref, case.dtype, "output")
    for name, leaf, ref in zip(("grad_input", "grad_weight", "grad_bias"), leaves, refs):
        if leaf is not None:
            assert leaf.grad is not None, name
            assert leaf.grad.dtype == case.dtype, name
            assert_rel_close(leaf.grad, ref.grad, case.dtype, name)
    if case.N:  # the output's memory format is torch's
        for fmt in (torch.contiguous_format, CL):
            assert y.is_contiguous(memory_format=fmt) == y_ref.is_contiguous(memory_format=fmt), (
                fmt, y.stride(), y_ref.stride())
        # and the fake (meta) implementation gives exactly the real one's shape and strides
        meta = [None if t is None else t.detach().to("meta") for t in leaves]
        fake = torch.ops.fastconv.conv_transpose2d(
            *meta, list(case.stride), list(case.padding), list(case.output_padding),
            case.groups, list(case.dilation))
        assert (fake.shape, fake.stride()) == (y.shape, y.stride())


def test_sweep_covers_what_it_should():
    """The case list is generated, so check what it generated: both kernel families in each
    direction (forward = dgrad reduces over C_in/g, grad_input = fprop over C_out/g), every
    dtype, both layouts, groups, dilation with stride, both kinds of output_padding."""
    def count(pred):
        return sum(1 for c in CASES if pred(c))
    assert count(lambda c: c.C // c.groups < THIN) >= 30           # forward: direct dgrad
    assert count(lambda c: c.C // c.groups >= THIN) >= 20          # forward: GEMM dgrad
    assert count(lambda c: c.K // c.groups < THIN) >= 30           # grad_input: direct fprop
    assert count(lambda c: c.K // c.groups >= THIN) >= 20          # grad_input: GEMM fprop
    assert {c.dtype for c in CASES} == set(DTYPES)
    assert count(lambda c: c.channels_last and c.N) >= 30
    assert count(lambda c: c.weight_channels_last) >= 8
    assert count(lambda c: c.groups > 1) >= 25
    assert count(lambda c: c.groups > 1 and c.groups == c.C) >= 8  # depthwise
    assert count(lambda c: c.dilation != (1, 1) and c.stride != (1, 1)) >= 20
    assert count(lambda c: any(c.output_padding)) >= 30
    # output_padding >= stride is allowed while it is below the dilation
    assert count(lambda c: any(op >= s for op, s in zip(c.output_padding, c.stride))) >= 5
    assert count(lambda c: c.N == 0) >= 8
    assert count(lambda c: 1 in c.out_hw()) >= 3
    assert count(lambda c: c.bias) >= 50


def test_aten_forbidden_catches_torch_conv_transpose2d():
    """torch's own conv_transpose2d goes through aten::convolution, so the override in the
    sweep would catch a fallback to it."""
    x, w = torch.randn(1, 2, 3, 3), torch.randn(2, 2, 2, 2)
    with aten_forbidden(), pytest.raises(ATenRan):
        F.conv_transpose2d(x, w)
    xg = x.clone().requires_grad_()
    y = F.conv_transpose2d(xg, w)
    with aten_forbidden(), pytest.raises(ATenRan):
        y.sum().backward()


# ---------------------------------------------------------------------------- op: gradcheck, opcheck
# (N, C_in, H, W, C_out, kH, kW, stride, padding, output_padding, dilation, groups)
GRAD_CASES = [
    (2, 2, 3, 2, 3, 2, 2, 2, 0, 1, 1, 1),        # direct kernels, output_padding < stride
    (1, 16, 2, 2, 16, 2, 2, 2, 1, 1, 1, 1),      # GEMM kernels everywhere, strided
    (1, 4, 2, 3, 6, 2, 3, 1, 1, 1, 2, 2),        # grouped, output_padding >= stride (< dilation)
    (1, 3, 3, 3, 6, 3, 3, 2, 1, 0, 1, 3),        # depthwise, channel multiplier 2
    (1, 17, 2, 2, 3, 1, 1, 3, 0, 2, 1, 1),       # 1x1, stride 3, output_padding 2
]


def _args(case, dtype=torch.float64, requires_grad=True, bias=True, channels_last=False):
    n, c, h, w, k, r, s, stride, pad, op, dil, groups = case
    x = torch.randn(n, c, h, w, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=CL)
    wt = torch.randn(c, k // groups, r, s, dtype=dtype)
    b = torch.randn(k, dtype=dtype) if bias else None
    for t in (x, wt, b):
        if t is not None:
            t.requires_grad_(requires_grad)
    return x, wt, b, [stride] * 2, [pad] * 2, [op] * 2, groups, [dil] * 2


@pytest.mark.parametrize("case", GRAD_CASES)
def test_gradcheck_float64(case):
    x, w, b, *conv = _args(case, channels_last=case[0] == 1)
    with aten_forbidden():
        assert torch.autograd.gradcheck(
            lambda x, w, b: torch.ops.fastconv.conv_transpose2d(x, w, b, *conv),
            (x, w, b), eps=1e-6, atol=1e-7, fast_mode=True)


def test_gradcheck_full_jacobian():
    # 9 inputs, 9 outputs; output_padding 1 >= stride 1 (allowed by dilation 2), cropped by 1
    x, w, b, *conv = _args((1, 1, 2, 2, 1, 2, 2, 1, 1, 1, 2, 1))
    with aten_forbidden():
        assert torch.autograd.gradcheck(
            lambda x, w, b: torch.ops.fastconv.conv_transpose2d(x, w, b, *conv),
            (x, w, b), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("case,dtype,channels_last,bias", [
    (GRAD_CASES[0], torch.float32, False, True),
    (GRAD_CASES[1], torch.bfloat16, True, True),
    (GRAD_CASES[2], torch.float16, True, False),
    (GRAD_CASES[4], torch.float64, False, True)], ids=["f32", "bf16-cl", "f16-cl", "f64"])
def test_opcheck(case, dtype, channels_last, bias):
    args = _args(case, dtype, requires_grad=True, bias=bias, channels_last=channels_last)
    torch.library.opcheck(torch.ops.fastconv.conv_transpose2d.default, args)


def test_opcheck_input_grad_op():
    x, w, b, stride, pad, op, groups, dil = _args(GRAD_CASES[2], torch.float32,
                                                  requires_grad=False)
    y = torch.ops.fastconv.conv_transpose2d(x, w, b, stride, pad, op, groups, dil)
    dy = torch.randn_like(y)
    torch.library.opcheck(torch.ops.fastconv.conv_transpose2d_input_grad.default,
                          (dy, w, list(x.shape), stride, pad, dil, groups))


def test_only_requested_gradients_are_computed(monkeypatch):
    """The forward is one dgrad launch; a frozen input costs no fprop launch."""
    calls = []
    for name in ("conv2d_fprop", "conv2d_dgrad", "conv2d_wgrad"):
        real = getattr(conv2d_launch, name)
        monkeypatch.setattr(conv2d_launch, name,
                            lambda *a, _real=real, _n=name, **k: calls.append(_n) or _real(*a, **k))
    x, w, b, *conv = _args(GRAD_CASES[0], torch.float32, requires_grad=False)
    w.requires_grad_()
    conv_transpose2d(x, w, b, *conv).sum().backward()
    assert calls == ["conv2d_dgrad", "conv2d_wgrad"]


# ---------------------------------------------------------------------------- edge cases torch accepts
def run_both(x, w, b, **conv):
    """fastconv in float32 (ATen's convolution forbidden) and torch in float64, forward and
    backward, compared."""
    leaves = _leaves((x, w, b))
    with aten_forbidden():
        y = conv_transpose2d(*leaves, **conv)
        grad_y = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
        y.backward(grad_y)
    refs = _leaves((x, w, b), torch.float64)
    y_ref = F.conv_transpose2d(*refs, **conv)
    y_ref.backward(grad_y.double())
    assert_rel_close(y, y_ref, torch.float32, "output")
    for name, t, ref in zip(("input", "weight", "bias"), leaves, refs):
        if t is not None:
            assert_rel_close(t.grad, ref.grad, torch.float32, f"grad {name}")
    return y, y_ref


def test_empty_batch():
    y, _ = run_both(torch.randn(0, 2, 3, 4), torch.randn(2, 3, 2, 2), torch.randn(3), stride=2)
    assert y.shape == (0, 3, 6, 8)


@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no-bias"])
def test_unbatched_input(with_bias):
    x, w = torch.randn(2, 3, 4), torch.randn(2, 3, 3, 3)
    y, _ = run_both(x, w, torch.randn(3) if with_bias else None, stride=2, padding=1,
                    output_padding=1)
    assert y.shape == (3, 6, 8)


def test_padding_beyond_the_kernel_crops_the_output():
    # padding larger than dilation * (k - 1): the output is cropped, no negative input padding
    y, _ = run_both(torch.randn(1, 2, 5, 4), torch.randn(2, 3, 1, 2), torch.randn(3),
                    padding=(2, 1), stride=(1, 2))
    assert y.shape == (1, 3, 1, 6)


def test_one_pixel_output():
    y, _ = run_both(torch.randn(2, 3, 2, 1), torch.randn(3, 2, 2, 2), torch.randn(2),
                    padding=(1, 0), output_padding=(0, 0), dilation=(1, 1))
    assert y.shape == (2, 2, 1, 2)
    y, _ = run_both(torch.randn(2, 3, 1, 1), torch.randn(3, 2, 1, 1), None)
    assert y.shape == (2, 2, 1, 1)


@pytest.mark.parametrize("c_in, c_out, output_padding, dilation, channels_last", [
    (16, 16, (1, 0), (2, 1), False),
    (16, 16, (0, 1), (1, 2), True),
    (16, 3, (1, 1), (2, 2), True),
    (3, 16, (1, 1), (2, 2), False),
    (16, 17, (1, 1), (3, 2), False),
])
def test_pointwise_with_output_padding(c_in, c_out, output_padding, dilation, channels_last):
    """1x1 kernel, stride 1, no padding, but output_padding (allowed by the dilation): the output
    is larger than the input, so the pixels can't be paired by flat index as the 1x1 GEMM does;
    the output_padding rows/columns get only the bias."""
    x = torch.randn(2, c_in, 3, 4)
    if channels_last:
        x = x.contiguous(memory_format=CL)
    y, _ = run_both(x, torch.randn(c_in, c_out, 1, 1), torch.randn(c_out),
                    output_padding=output_padding, dilation=dilation)
    assert y.shape[2:] == (3 + output_padding[0], 4 + output_padding[1])


def test_channels_last_weight_with_nchw_input():
    x, w = torch.randn(2, 2, 3, 4), torch.randn(2, 3, 3, 3).contiguous(memory_format=CL)
    y, y_ref = run_both(x, w, torch.randn(3), stride=2)
    assert y.is_contiguous(memory_format=CL) == y_ref.is_contiguous(memory_format=CL)


def test_arguments_are_not_modified():
    x = torch.randn(2, 4, 6, 5)[:, ::2, 1:-1].requires_grad_()  # sliced views
    w = torch.randn(2, 3, 3, 5)[..., 1:4].requires_grad_()
    b = torch.randn(6)[::2].requires_grad_()                    # strided bias
    before = [(t.detach().clone(), t.stride(), t.storage_offset()) for t in (x, w, b)]
    with aten_forbidden():
        y = conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1)
        y.backward(torch.ones_like(y))
    for name, t, (values, stride, offset) in zip(("input", "weight", "bias"), (x, w, b), before):
        assert torch.equal(t.detach(), values), f"{name} values changed"
        assert (t.stride(), t.storage_offset()) == (stride, offset), f"{name} strides changed"
    y_ref = F.conv_transpose2d(x.double(), w.double(), b.double(), 2, 1, 1)
    assert_rel_close(y, y_ref, torch.float32, "output")


def test_cpu_tensors_without_interpreter_are_refused(monkeypatch, no_launch):
    monkeypatch.setattr(runtime, "INTERPRETING", False)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        conv_transpose2d(torch.randn(1, 2, 3, 3), torch.randn(2, 2, 2, 2))


# ---------------------------------------------------------------------------- module
@pytest.mark.parametrize("kwargs", [
    dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=1, output_padding=1),
    dict(in_channels=6, out_channels=4, kernel_size=(2, 3), stride=(1, 2), padding=(0, 1),
         output_padding=(1, 0), dilation=(2, 1), groups=2, bias=False),
    dict(in_channels=16, out_channels=3, kernel_size=1, stride=3),
])
def test_module_matches_torch(kwargs):
    ref = nn.ConvTranspose2d(**kwargs).double()
    mod = fastconv.ConvTranspose2d(**kwargs, dtype=torch.float64)
    mod.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, kwargs["in_channels"], 3, 4, dtype=torch.float64)
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


def test_module_is_an_nn_conv_transpose2d_with_the_same_state():
    args = (3, 8, 3)
    kw = dict(stride=2, padding=1, output_padding=1, groups=1, dilation=1)
    torch.manual_seed(1)
    ref = nn.ConvTranspose2d(*args, **kw)
    torch.manual_seed(1)
    mod = fastconv.ConvTranspose2d(*args, **kw)
    assert isinstance(mod, nn.ConvTranspose2d)
    assert repr(mod) == "fastconv." + repr(ref)
    assert list(mod.state_dict()) == list(ref.state_dict())
    fresh_ref = nn.ConvTranspose2d(*args, **kw)
    fresh_ref.load_state_dict(mod.state_dict(), strict=True)
    fresh_mod = fastconv.ConvTranspose2d(*args, **kw)
    fresh_mod.load_state_dict(ref.state_dict(), strict=True)
    for a, b in zip(fresh_ref.state_dict().values(), fresh_mod.state_dict().values()):
        assert torch.equal(a, b)
    assert fastconv.nn.ConvTranspose2d is fastconv.ConvTranspose2d


@pytest.mark.parametrize("output_size", [
    [5, 7], [6, 8], (1, 2, 6, 7), torch.Size([5, 8])], ids=["min", "max", "4-d", "size"])
def test_module_output_size(output_size):
    # input 3x4, kernel 3, stride 2, padding 1: sizes 5..6 by 7..8 are reachable
    ref = nn.ConvTranspose2d(2, 2, 3, stride=2, padding=1).double()
    mod = fastconv.ConvTranspose2d(2, 2, 3, stride=2, padding=1, dtype=torch.float64)
    mod.load_state_dict(ref.state_dict())
    x = torch.randn(1, 2, 3, 4, dtype=torch.float64)
    with aten_forbidden():
        y = mod(x, output_size=output_size)
    y_ref = ref(x, output_size=output_size)
    assert y.shape == y_ref.shape and tuple(y.shape[2:]) == tuple(output_size[-2:])
    assert_rel_close(y, y_ref, torch.float64, "output")


def test_module_output_size_unbatched_and_dtype():
    mod = fastconv.ConvTranspose2d(2, 3, 2, stride=3, dtype=torch.bfloat16)
    assert mod.weight.dtype == torch.bfloat16
    x = torch.randn(2, 2, 3, dtype=torch.bfloat16)
    with aten_forbidden():
        y = mod(x, output_size=[6, 9])
    # input 2x3, kernel 2, stride 3: sizes 5..7 by 8..10 are reachable
    ref = F.conv_transpose2d(x.double(), mod.weight.double(), mod.bias.double(), stride=3,
                             output_padding=(1, 1))
    assert y.shape == (3, 6, 9) and y.dtype == torch.bfloat16
    assert_rel_close(y, ref, torch.bfloat16, "output")


@pytest.mark.parametrize("output_size", [[4, 7], [5, 9], [5, 7, 1]], ids=["small", "large", "3"])
def test_module_bad_output_size(output_size, no_launch):
    mod = fastconv.ConvTranspose2d(2, 2, 3, stride=2, padding=1)
    ref = nn.ConvTranspose2d(2, 2, 3, stride=2, padding=1)
    x = torch.randn(1, 2, 3, 4)
    with pytest.raises(ValueError) as info:
        mod(x, output_size=output_size)
    with pytest.raises(ValueError) as info_ref:
        ref(x, output_size=output_size)
    assert str(info.value) == str(info_ref.value)


def test_module_refuses_other_padding_modes(no_launch):
    with pytest.raises(ValueError, match="padding_mode|zeros"):
        nn.ConvTranspose2d(2, 2, 3, padding_mode="reflect")  # torch refuses it at construction
    mod = fastconv.ConvTranspose2d(2, 2, 3)
    mod.padding_mode = "reflect"
    with pytest.raises(ValueError, match="zeros"):
        mod(torch.randn(1, 2, 3, 3))


# ---------------------------------------------------------------------------- bad input


def test_launch_guard_catches_a_launch(no_launch):
    with pytest.raises(pytest.fail.Exception, match="conv2d_dgrad was called"):
        conv_transpose2d(torch.randn(1, 2, 3, 3), torch.randn(2, 2, 1, 1))


def _base():
    """A valid call: input [2, 4, 5, 5], weight [4, 3, 3, 3] (3 output channels), bias [3]."""
    return dict(input=torch.randn(2, 4, 5, 5), weight=torch.randn(4, 3, 3, 3),
                bias=torch.randn(3))


BAD_INPUTS = [
    # output_padding: torch's rule is "smaller than the stride or the dilation", per axis
    bad("output_padding-1-stride-1", ValueError, ["output_padding", "stride", "dilation"],
        output_padding=1),
    bad("output_padding-equal-stride-and-dilation", ValueError, ["output_padding"],
        output_padding=2, stride=2, dilation=2),
    bad("output_padding-above-both", ValueError, ["output_padding"],
        output_padding=3, stride=2, dilation=3),
    bad("output_padding-W-only", ValueError, ["output_padding"],
        output_padding=(0, 1), stride=(2, 1)),
    bad("output_padding-H-dilation-only", ValueError, ["output_padding"],
        output_padding=(2, 0), stride=(1, 1), dilation=(2, 1)),
    bad("output_padding-negative", ValueError, ["output_padding"], output_padding=-1),
    bad("output_padding-negative-pair", ValueError, ["output_padding"], output_padding=(0, -1),
        stride=2),
    bad("output_padding-len-3", ValueError, ["output_padding"], output_padding=(1, 1, 1),
        stride=2),
    bad("output_padding-float", TypeError, ["output_padding"], output_padding=1.0, stride=2),
    bad("output_padding-str", TypeError, ["output_padding"], output_padding="1", stride=2),
    # output size. An output of exactly 0 rows is refused as torch's CPU kernel for a batch of
    # one refuses it (torch's oneDNN path for larger batches and its meta kernel return an
    # empty tensor instead)
    bad("output-size-0", ValueError, ["output", "padding"], input=t(1, 4, 5, 5),
        weight=t(4, 3, 2, 2), padding=(3, 0)),
    bad("output-size-negative", ValueError, ["output", "padding"], padding=(0, 7)),
    # ranks
    bad("input-2d", ValueError, ["input"], input=t(4, 5)),
    bad("input-5d", ValueError, ["input"], input=t(1, 2, 4, 5, 5)),
    bad("weight-3d", ValueError, ["weight"], weight=t(4, 3, 3)),
    bad("weight-5d", ValueError, ["weight"], weight=t(4, 3, 3, 3, 1)),
    # channels and groups (weight is [C_in, C_out / groups, kH, kW])
    bad("channels-mismatch", ValueError, ["input", "weight"], weight=t(3, 3, 3, 3)),
    bad("groups-not-dividing-in-channels", ValueError, ["groups", "weight"],
        weight=t(4, 3, 3, 3), bias=t(9), groups=3),
    bad("groups-more-than-in-channels", ValueError, ["groups", "weight"],
        input=t(2, 2, 5, 5), weight=t(2, 3, 3, 3), bias=t(12), groups=4),
    bad("zero-in-channels", ValueError, ["groups", "weight"], input=t(2, 0, 5, 5),
        weight=t(0, 3, 3, 3)),
    bad("zero-out-channels", ValueError, ["weight"], weight=t(4, 0, 3, 3), bias=None),
    bad("groups-0", ValueError, ["groups"], groups=0),
    bad("groups-negative", ValueError, ["groups"], groups=-2),
    bad("groups-float", TypeError, ["groups"], groups=1.0),
    bad("groups-bool", TypeError, ["groups"], groups=True),
    # stride / padding / dilation
    bad("stride-0", ValueError, ["stride"], stride=0),
    bad("stride-negative", ValueError, ["stride"], stride=(1, -1)),
    bad("stride-len-3", ValueError, ["stride"], stride=(1, 1, 1)),
    bad("stride-empty", ValueError, ["stride"], stride=()),
    bad("stride-float", TypeError, ["stride"], stride=1.5),
    bad("dilation-0", ValueError, ["dilation"], dilation=0),
    bad("dilation-negative", ValueError, ["dilation"], dilation=(-1, 1)),
    bad("dilation-len-3", ValueError, ["dilation"], dilation=[1, 1, 1]),
    bad("padding-negative", ValueError, ["padding"], padding=-1),
    bad("padding-negative-pair", ValueError, ["padding"], padding=(0, -1)),
    bad("padding-len-3", ValueError, ["padding"], padding=(1, 1, 1)),
    bad("padding-same", TypeError, ["padding"], padding="same"),
    bad("padding-float", TypeError, ["padding"], padding=1.0),
    # dtypes
    bad("dtype-weight-float64", TypeError, ["weight", "input"],
        weight=t(4, 3, 3, 3, dtype=torch.float64)),
    bad("dtype-bias-float64", TypeError, ["bias", "input"], bias=t(3, dtype=torch.float64)),
    bad("dtype-input-float16", TypeError, ["weight", "input"],
        input=t(2, 4, 5, 5, dtype=torch.float16)),
    bad("int-input", TypeError, ["input"], input=ints(2, 4, 5, 5)),
    bad("int-weight", TypeError, ["weight"], weight=ints(4, 3, 3, 3)),
    bad("bool-input", TypeError, ["input"], input=lambda: torch.ones(2, 4, 5, 5, dtype=torch.bool)),
    # torch transposes int64 and complex tensors on the CPU; fastconv's kernels are for
    # floating point only, so it refuses them outright (DESIGN.md: dtypes)
    bad("int64-everything", TypeError, ["input"], torch_rejects=False,
        input=ints(2, 4, 5, 5), weight=ints(4, 3, 3, 3), bias=ints(3)),
    bad("complex64", TypeError, ["input"], torch_rejects=False,
        input=t(2, 4, 5, 5, dtype=torch.complex64), weight=t(4, 3, 3, 3, dtype=torch.complex64),
        bias=None),
    # devices: meta stands in for a second device; torch runs a cpu/meta mixture as a meta
    # computation, fastconv's kernels can't
    bad("device-weight-meta", RuntimeError, ["weight", "input", "device"], torch_rejects=False,
        weight=t(4, 3, 3, 3, device="meta")),
    bad("device-bias-meta", RuntimeError, ["bias", "input", "device"], torch_rejects=False,
        bias=t(3, device="meta")),
    bad("device-input-meta", RuntimeError, ["weight", "input", "device"], torch_rejects=False,
        input=t(2, 4, 5, 5, device="meta")),
    # bias
    bad("bias-wrong-length", ValueError, ["bias"], bias=t(4)),
    bad("bias-length-ignoring-groups", ValueError, ["bias"], weight=t(4, 3, 3, 3), bias=t(3),
        groups=2),
    bad("bias-2d", ValueError, ["bias"], bias=t(3, 1)),
    bad("bias-0d", ValueError, ["bias"], bias=lambda: torch.tensor(1.0)),
    bad("bias-list", TypeError, ["bias"], bias=[0.0] * 3),
    # not tensors
    bad("input-list", TypeError, ["input"], input=lambda: torch.randn(2, 4, 5, 5).tolist()),
    bad("input-none", TypeError, ["input"], input=None),
    bad("weight-list", TypeError, ["weight"], weight=lambda: torch.randn(4, 3, 3, 3).tolist()),
    # sizes
    bad("kernel-zero-size", ValueError, ["weight"], weight=t(4, 3, 0, 3)),
    bad("input-H-0", ValueError, ["input"], input=t(2, 4, 0, 5)),
    bad("input-W-0-padded", ValueError, ["input"], input=t(2, 4, 5, 0), padding=1),
    bad("unbatched-input-H-0", ValueError, ["input"], input=t(4, 0, 3)),
]


@pytest.mark.parametrize("overrides, exc, names, torch_rejects", BAD_INPUTS)
def test_bad_input_is_refused_before_launch(no_launch, overrides, exc, names, torch_rejects):
    kwargs = _base()
    kwargs.update({k: v() if callable(v) else v for k, v in overrides.items()})
    with aten_forbidden(), pytest.raises(ACCEPTED_ERRORS) as info:
        conv_transpose2d(**kwargs)
    assert info.type is exc, f"raised {info.type.__name__}, expected {exc.__name__}: {info.value}"
    message = str(info.value)
    assert message.startswith("conv_transpose2d()"), message
    for name in names:
        assert name in message, f"the message does not name {name!r}: {message}"
    if torch_rejects:  # fastconv must not refuse what torch accepts
        with pytest.raises(ACCEPTED_ERRORS):
            F.conv_transpose2d(**kwargs)
    else:
        F.conv_transpose2d(**kwargs)


@pytest.mark.parametrize("stride, dilation, output_padding", [
    (2, 1, 1), (1, 2, 1), (3, 2, 2), (2, 3, 2), ((1, 2), (3, 1), (2, 1)), ((3, 1), (1, 1), (2, 0)),
])
def test_output_padding_torch_accepts_is_accepted(stride, dilation, output_padding):
    x, w = torch.randn(1, 2, 2, 3), torch.randn(2, 2, 2, 2)
    y, y_ref = run_both(x, w, torch.randn(2), stride=stride, dilation=dilation,
                        output_padding=output_padding)
    assert y.shape == y_ref.shape
