"""``fastconv.explain(..., target=...)``: the plan for a named machine, which the output names."""
import pytest
import torch

import fastconv


def _resnet_layer(dtype=torch.float16):
    x = torch.empty(32, 64, 56, 56, dtype=dtype, device="meta").contiguous(
        memory_format=torch.channels_last)
    return x, torch.empty(64, 64, 3, 3, dtype=dtype, device="meta")


def test_the_output_names_its_target():
    x, w = _resnet_layer()
    here = fastconv.explain(x, w, padding=1)
    assert str(here).splitlines()[0] == "target: interpreter"  # the tests interpret
    assert str(fastconv.explain(x, w, padding=1, target="sm_90")).splitlines()[0] == \
        "target: sm_90, 132 SMs"
    assert str(fastconv.explain(x, w, padding=1, target="sm_80")).splitlines()[0] == \
        "target: sm_80, 108 SMs"


def test_each_target_gets_its_own_plan():
    x, w = _resnet_layer()
    interp = fastconv.explain(x, w, padding=1, target="interpreter")
    sm90 = fastconv.explain(x, w, padding=1, target="sm_90")
    sm80 = fastconv.explain(x, w, padding=1, target="sm_80")
    # the interpreter sizes blocks to the problem; the GPUs take a tile of their tables, and
    # only sm_90 has TMA for the 16-bit channels_last forward
    assert interp.fprop.config != sm80.fprop.config
    assert sm90.fprop.family == "implicit_gemm_tma" and sm90.fprop.config.block_k == 64
    assert sm80.fprop.family == "implicit_gemm"
    # the wgrad split is sized for each GPU's SM count
    assert sm90.wgrad.split != sm80.wgrad.split or sm90.wgrad.config != sm80.wgrad.config
    # NCHW input has no TMA path
    nchw = fastconv.explain(x.contiguous(), w, padding=1, target="sm_90")
    assert nchw.fprop.family == "implicit_gemm"


def test_an_unknown_target_is_refused():
    x, w = _resnet_layer()
    with pytest.raises(ValueError, match="target must be one of 'sm_90', 'sm_80', 'interpreter'"):
        fastconv.explain(x, w, target="sm_70")
