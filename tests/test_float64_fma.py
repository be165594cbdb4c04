"""float64 products as multiply-adds (kernels/_common.mma with FMA_FLOAT64): the path triton < 3.7
compiles, since its tl.dot on float64 does not compile for sm_90. Triton 3.8 keeps tl.dot, so
FASTCONV_FMA_FLOAT64=1 selects the FMA path here, in a fresh process (the flag is read when the
kernels are imported)."""
import os
import subprocess
import sys
import textwrap

_SCRIPT = textwrap.dedent("""
    import os
    os.environ["TRITON_INTERPRET"] = "1"
    import sys
    sys.path.insert(0, {tests!r})
    import torch
    import torch.nn.functional as F
    import fastconv.functional as FC
    from fastconv.kernels import _common
    from helpers import aten_forbidden, rel_err
    assert bool(_common.FMA_FLOAT64), "FASTCONV_FMA_FLOAT64=1 was not read"
    torch.manual_seed(0)
    worst = 0.0
    # implicit GEMM (3x3, strided, grouped with 16 channels per group), 1x1 GEMM, and the
    # transposed convolution (the dgrad kernel); every gradient
    for shape, wshape, kw in [((2, 16, 9, 7), (32, 16, 3, 3), dict(stride=2, padding=1)),
                              ((1, 32, 6, 5), (32, 16, 3, 3), dict(padding=1, groups=2)),
                              ((2, 24, 5, 6), (40, 24, 1, 1), {{}})]:
        x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
        w = torch.randn(wshape, dtype=torch.float64, requires_grad=True)
        ref = F.conv2d(x, w, **kw)
        ref_dx, ref_dw = torch.autograd.grad(ref.sum(), (x, w))
        with aten_forbidden():
            out = FC.conv2d(x, w, **kw)
            dx, dw = torch.autograd.grad(out.sum(), (x, w))
        worst = max(worst, rel_err(out, ref), rel_err(dx, ref_dx), rel_err(dw, ref_dw))
    x = torch.randn(2, 16, 5, 4, dtype=torch.float64)
    w = torch.randn(16, 24, 3, 3, dtype=torch.float64)
    ref = F.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1)
    with aten_forbidden():
        out = FC.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1)
    worst = max(worst, rel_err(out, ref))
    print("worst", worst)
    assert worst < 1e-12, worst
""")


def test_float64_fma_path_matches_torch():
    tests = os.path.dirname(os.path.abspath(__file__))
    env = {**os.environ, "TRITON_INTERPRET": "1", "FASTCONV_FMA_FLOAT64": "1"}
    proc = subprocess.run([sys.executable, "-c", _SCRIPT.format(tests=tests)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "worst" in proc.stdout


def test_triton_38_keeps_tl_dot_for_float64():
    """The default on the triton this project is tested with: tl.dot (spill-free DMMA)."""
    import triton

    from fastconv.kernels import _common
    major, minor = (int(v) for v in triton.__version__.split(".")[:2])
    if "FASTCONV_FMA_FLOAT64" not in os.environ:
        assert bool(_common.FMA_FLOAT64) == ((major, minor) < (3, 7))
