"""The static signature of Hopper-speed GEMMs on the benchmark's layers, no GPU needed.

Every 16-bit GEMM launch of ResNet-50, VGG-16 and ResNeXt-50 (batch 32, channels_last, bf16 and
fp16; forward, input gradient and weight gradient), planned for sm_90 and compiled as Triton
specialises it (``fastconv compile-report --cases``), must show what a GEMM near cuDNN's speed
on an H200 is built from: both operands copied by TMA wherever the channels allow it, wgmma
instructions at least 128 wide where the layer has 128 output channels or more (per group: a
grouped layer's GEMMs are per group, and a ResNeXt group of 8-32 output channels cannot fill a
128-wide instruction with anything but zeros), three or more pipeline stages, and no register
spills. (Whether it then runs at that speed only a GPU can tell: benchmarks/gpu_run.sh.)

The report runs once, in a subprocess without TRITON_INTERPRET; each test reads its rows.
"""
import csv
import os
import subprocess
import sys

import pytest

from fastconv.bench import cases as C

MODELS = ("resnet50", "vgg16", "resnext50_32x4d")
DTYPES = ("bfloat16", "float16")
TMA_KERNELS = {"fprop": "conv2d_fprop_tma_kernel", "dgrad": "conv2d_dgrad_tma_kernel",
               "wgrad": "conv2d_wgrad_tma_kernel"}
pytestmark = pytest.mark.xdist_group("gpu_compile")


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    path = tmp_path_factory.mktemp("hopper") / "rows.csv"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, "-m", "fastconv.bench.compile_report", "--arch", "sm_90", "--cases",
         "--models", *MODELS, "--ops", "conv2d", "--batches", "32", "--dtypes", *DTYPES,
         "--layouts", "channels_last", "--table", "none", "--csv", str(path),
         "--jobs", str(max(2, min(os.cpu_count() or 2, 8)))],
        env=env, capture_output=True, text=True, timeout=3600)
    assert path.exists(), proc.stderr[-3000:]
    out = list(csv.DictReader(open(path, newline="")))
    assert out and proc.returncode == 0, proc.stderr[-3000:]
    return out


def _cases() -> dict:
    return {c.name: c for c in C.conv_cases(models=MODELS, batches=(32,)) if c.op == "conv2d"}


def _tma_allowed(case: C.ConvCase, direction: str) -> bool:
    """Whether TMA can carry both operands of this pass: the channels it reads along their
    contiguous axis come in multiples of 8 (16 bytes in 16-bit, TMA's rule), and a forward
    over fewer than 16 input channels is the stem's (taps packed along K, gathered)."""
    cg, kg = case.C // case.groups, case.K // case.groups
    return {"fprop": cg % 8 == 0 and cg >= 16, "dgrad": kg % 8 == 0,
            "wgrad": cg % 8 == 0 and kg % 8 == 0}[direction]


def _gemms(rows) -> list:
    gemms = [r for r in rows if r["direction"] in TMA_KERNELS and r["family"] != "direct"]
    assert gemms
    return gemms


def _what(r) -> str:
    return f'{r["case"]} {r["pass"]} {r["dtype"]} {r["kernel"]} {r["tile"]}'


def test_every_launch_compiles_without_spills(rows):
    bad = [f'{_what(r)}: {r["error"] or r["stack"] + " bytes of stack"}' for r in rows
           if r["error"] or int(r["stack"]) > 0]
    assert not bad, "\n".join(bad)


def test_every_pass_of_every_layer_is_covered(rows):
    seen = {(r["case"], r["pass"], r["dtype"]) for r in rows}
    want = {(name, p, d) for name in _cases() for p in TMA_KERNELS for d in DTYPES}
    assert want <= seen, sorted(want - seen)[:10]


def test_both_operands_by_tma_where_the_channels_allow(rows):
    cases = _cases()
    bad = []
    for r in _gemms(rows):
        if not _tma_allowed(cases[r["case"]], r["direction"]):
            continue
        operands = r["tma_operands"].split()
        if r["kernel"] != TMA_KERNELS[r["direction"]] or len(operands) < 2 \
                or "cp.async:" in r["global_loads"]:
            bad.append(f'{_what(r)}: TMA operands {operands}, loads {r["global_loads"]}')
    assert not bad, f"{len(bad)} launches:\n" + "\n".join(bad)


def test_wide_wgmma_and_deep_pipelines(rows):
    cases = _cases()
    bad = []
    for r in _gemms(rows):
        case = cases[r["case"]]
        if not _tma_allowed(case, r["direction"]):
            continue
        if "wgmma" not in r["tensor_cores"] or int(r["num_stages"]) < 3:
            bad.append(f'{_what(r)}: {r["tensor_cores"]}, {r["num_stages"]} stages')
        elif case.K // case.groups >= 128 and int(r["wgmma_n"]) < 128:
            bad.append(f'{_what(r)}: wgmma n{r["wgmma_n"]} on {case.K} output channels')
    assert not bad, f"{len(bad)} launches:\n" + "\n".join(bad)
