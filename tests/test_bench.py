"""The benchmark harness and ``fastconv bench`` in dry mode: tiny shapes, Triton's interpreter, one
host-timed call per contender. The times measure nothing; the tests check that every code path
runs (inputs per dtype, layout and direction, baselines, comparison, rows, table, CSV, plot, the
command and its no-GPU branch) and that fastconv's kernels, not ATen's, produced its side."""
import contextlib
import csv
import math
import os
import subprocess
import sys
import types

import pytest
import torch
import torch.nn as nn
from rich.console import Console

import fastconv
from fastconv import __main__ as cli
from fastconv.bench import cases as C
from fastconv.bench import harness as H
from fastconv.bench import run as R
from fastconv.bench.plot import plot_speedups
from fastconv.models import _registry

from helpers import aten_forbidden, slightly_wrong_forward

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _tiny_model(num_classes=4):
    return nn.Sequential(fastconv.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         fastconv.Conv2d(16, 16, 3, stride=2, groups=16), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(16, num_classes))


@pytest.fixture
def tiny_model(monkeypatch):
    monkeypatch.setitem(_registry._BUILDERS, "tiny_bench", _tiny_model)
    return "tiny_bench"


@contextlib.contextmanager
def _no_aten():
    """ATen's convolutions and torchvision's RoI kernels raise while fastconv runs."""
    with aten_forbidden(), aten_forbidden(
            ("roi_align", "_roi_align_backward", "roi_pool", "_roi_pool_backward"),
            namespace="torchvision"):
        yield


def _case(pred):
    return H.shrink(next(c for c in C.all_cases(batches=(32,)) if pred(c)))


def _variants():
    """A handful of variants covering every op, direction, layout, a 16-bit dtype and the
    depthwise baselines."""
    f32, bf16, f16 = torch.float32, torch.bfloat16, torch.float16
    conv = _case(lambda c: c.name == "resnet50/layer1.0.conv2/n32")
    depthwise = _case(lambda c: c.model == "depthwise")
    conv1d = _case(lambda c: c.op == "conv1d" and c.layer == "wav2vec_feat1")
    transpose = _case(lambda c: c.layer == "dcgan_g2")
    roi_align, _, roi_pool = [H.shrink(c) for c in C.roi_cases()]
    roi_align2 = H.shrink(C.roi_cases()[1])
    return [
        (conv, f32, "nchw", "forward"),
        (conv, f32, "channels_last", "backward"),
        (conv, bf16, "channels_last", "both"),
        (depthwise, f32, "channels_last", "both"),
        (depthwise, f16, "nchw", "forward"),
        (conv1d, f32, "channels_last", "both"),
        (transpose, bf16, "nchw", "both"),
        (roi_align, f32, "channels_last", "both"),
        (roi_align2, bf16, "nchw", "forward"),
        (roi_pool, f32, "nchw", "both"),
    ]


@pytest.fixture(scope="module")
def dry_rows():
    env = H.environment(torch.device("cpu"), dry=True)
    rows = [H.measure(case, dtype, layout, direction, "cpu", env, dry=True, guard=_no_aten)
            for case, dtype, layout, direction in _variants()]
    _registry._BUILDERS["tiny_bench_e2e"] = _tiny_model
    try:
        for mode in H.E2E_MODES:
            rows.append(H.measure(H.E2ECase("tiny_bench_e2e", 2, (3, 8, 8)), torch.float32,
                                  "channels_last", mode, "cpu", env, dry=True, guard=_no_aten))
    finally:
        del _registry._BUILDERS["tiny_bench_e2e"]
    return rows


# ---------------------------------------------------------------------------- dry mode
def test_shrink_keeps_what_picks_the_kernel():
    for case in C.all_cases():
        small = H.shrink(case)
        assert small.op == case.op and small.N == 1
        if isinstance(case, C.RoICase):
            assert small.input_shape == (1, 8, 16, 16) and small.boxes == 4
            assert small.output_size == case.output_size
            continue
        assert (small.R, small.S, small.stride, small.padding, small.dilation) == \
            (case.R, case.S, case.stride, case.padding, case.dilation)
        assert small.depthwise == case.depthwise, case.name
        assert (small.groups > 1) == (case.groups > 1), case.name
        # the direct kernel below 16 channels per group, the implicit GEMM from 16
        assert (small.C // small.groups >= 16) == (case.C // case.groups >= 16), case.name
        assert small.C <= 32 and small.K <= 32 and small.H <= max(8, case.R)
        assert all(d >= 1 for d in small.output_shape), case.name


def test_rotating_inputs_differ_and_follow_the_layout():
    case = _case(lambda c: c.name == "resnet50/layer1.0.conv2/n32")
    sets = H.make_inputs(case, torch.float16, "channels_last", "backward", "cpu", sets=3)
    assert len(sets) == 3 and not torch.equal(sets[0]["x"], sets[1]["x"])
    for s in sets:
        assert s["x"].dtype == torch.float16 and s["x"].requires_grad
        assert s["x"].is_contiguous(memory_format=torch.channels_last)
        assert s["w"].is_contiguous(memory_format=torch.channels_last)
        assert s["grad"].shape == case.output_shape and not s["grad"].requires_grad
    fwd = H.make_inputs(case, torch.float32, "nchw", "forward", "cpu", sets=2)
    assert "grad" not in fwd[0] and not fwd[0]["x"].requires_grad
    big = C.all_cases(batches=(32,))[0]
    assert H.MIN_SETS <= H.rotation_sets(big, torch.float32, "both") <= H.MAX_SETS
    with pytest.raises(ValueError, match="direction"):
        H.make_inputs(case, torch.float32, "nchw", "sideways", "cpu", sets=1)
    with pytest.raises(ValueError, match="layout"):
        H.make_inputs(case, torch.float32, "nhwc", "forward", "cpu", sets=1)


def test_rows_are_sane(dry_rows):
    assert len(dry_rows) == len(_variants()) + len(H.E2E_MODES)
    for r in dry_rows:
        what = f"{r.name} {r.direction} {r.dtype} {r.layout}"
        assert r.result == "ok", f"{what}: {r.result} {r.error} rel_err={r.rel_err}"
        assert set(r.as_dict()) == set(H.COLUMNS)
        assert r.fastconv_ms > 0 and r.baseline_ms > 0, what
        assert 0 < r.speedup < math.inf and r.tflops > 0, what
        assert 0 <= r.rel_err < r.tolerance, what
        assert r.mode == "dry" and r.device.startswith("cpu") and r.date.count("-") == 2
        assert r.torch == torch.__version__ and r.triton and r.peak_gpu
        if r.group != "e2e":
            assert r.gbps > 0 and r.floor_ms > 0 and r.floor_fraction > 0, what
            assert r.bound in ("compute", "memory") and r.flops > 0 and r.min_bytes > 0
    by_name = {(r.group, r.direction, r.dtype): r for r in dry_rows}
    depthwise = by_name["depthwise", "both", "float32"]
    assert {b.split("=")[0] for b in depthwise.baselines.split(";")} == {"torch", "torch-native"}
    assert depthwise.baseline in ("torch", "torch-native")
    # torchvision has no bfloat16 RoI kernel on the CPU: computed in float32, and said so
    assert by_name["roi", "forward", "bfloat16"].baseline == "torchvision (float32)"
    assert {r.direction for r in dry_rows if r.group == "e2e"} == set(H.E2E_MODES)


def test_measure_argument_errors():
    case = _case(lambda c: c.name == "resnet50/layer1.0.conv2/n32")
    env = H.environment(torch.device("cpu"), dry=True)
    for kwargs, name in ((dict(direction="inference"), "direction"),
                         (dict(dtype=torch.float64), "dtype"), (dict(layout="NHWC"), "layout")):
        args = {"dtype": torch.float32, "layout": "nchw", "direction": "forward", **kwargs}
        with pytest.raises(ValueError, match=name):
            H.measure(case, device="cpu", env=env, dry=True, **args)


def test_a_wrong_kernel_is_a_mismatch(monkeypatch):
    slightly_wrong_forward(monkeypatch, 1.01)
    case = _case(lambda c: c.name == "resnet50/layer1.0.conv2/n32")
    row = H.measure(case, torch.float32, "nchw", "forward", "cpu",
                    H.environment(torch.device("cpu"), dry=True), dry=True)
    assert row.result == "MISMATCH" and row.rel_err > row.tolerance


def test_the_guard_catches_a_fallback_to_aten(monkeypatch):
    """Were fastconv's conv2d to hand the work to ATen, the harness's guard must say so."""
    monkeypatch.setattr(H.FF, "conv2d", torch.nn.functional.conv2d)
    case = _case(lambda c: c.name == "resnet50/layer1.0.conv2/n32")
    row = H.measure(case, torch.float32, "nchw", "forward", "cpu",
                    H.environment(torch.device("cpu"), dry=True), dry=True, guard=_no_aten)
    assert row.result == "error" and "ATenRan" in row.error


def test_table_csv_and_plot(dry_rows, tmp_path):
    console = Console(record=True, width=250)
    console.print(R.results_table(dry_rows, dry=True, wide=True))
    text = console.export_text()
    for col in R.TABLE_COLUMNS:
        assert col in text
    assert "resnet50/layer1.0.conv2/n1" in text and "DRY RUN" in text

    path = R.write_csv(dry_rows, tmp_path / "results" / "r.csv")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert tuple(reader.fieldnames) == H.COLUMNS and len(rows) == len(dry_rows)
    assert all(float(r["speedup"]) > 0 for r in rows)

    png = plot_speedups(path)
    assert png == path.with_suffix(".png")
    assert png.read_bytes().startswith(PNG_SIGNATURE)


# ---------------------------------------------------------------------------- the command
def test_bench_command_dry_run(tiny_model, tmp_path, capsys):
    out = tmp_path / "r.csv"
    code = cli.main(["bench", "--dry-run", "--models", "roi", "--ops", "roi_pool",
                     "--dtypes", "float32", "--layouts", "nchw", "--directions", "forward",
                     "--e2e", "--e2e-models", tiny_model, "--csv", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "roi_pool/4x8x7x7" in text and "e2e/tiny_bench/n2" in text and "speedup" in text
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["group"], r["direction"]) for r in rows] == [("roi", "forward"),
                                                            ("e2e", "inference")]
    assert out.with_suffix(".png").read_bytes().startswith(PNG_SIGNATURE)


def test_default_csv_path_does_not_overwrite(tmp_path, monkeypatch):
    monkeypatch.setattr(R, "RESULTS_DIR", tmp_path)
    first = R.default_csv_path("NVIDIA H100 80GB HBM3", "2025-01-31", dry=False)
    assert first.name == "nvidia-h100-80gb-hbm3-2025-01-31.csv"
    first.write_text("")
    assert R.default_csv_path("NVIDIA H100 80GB HBM3", "2025-01-31", dry=False).name == \
        "nvidia-h100-80gb-hbm3-2025-01-31-2.csv"


def test_bench_without_gpu_shows_the_static_report(monkeypatch, capsys):
    from fastconv.bench import compile_report
    calls = []
    monkeypatch.setattr(compile_report, "main", lambda argv: calls.append(argv) or 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli.main(["bench", "--arch", "sm_80"]) == 0
    assert calls == [["--arch", "sm_80", "--cases"]]
    assert R.NO_GPU_MESSAGE in capsys.readouterr().out
    # the case filters the report shares go with it
    assert cli.main(["bench", "--models", "roi", "--dtypes", "float16", "--batches", "32",
                     "--match", "sr2", "--directions", "forward"]) == 0
    assert calls[-1] == ["--arch", "sm_90", "--cases", "--models", "roi", "--batches", "32",
                         "--dtypes", "float16", "--match", "sr2"]


def test_bench_argument_errors(capsys, tiny_model):
    with pytest.raises(SystemExit):
        cli.main(["bench", "--dry-run", "--dtypes", "float64"])
    assert "--dtypes" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["bench", "--dry-run", "--batches", "0"])
    assert "--batches" in capsys.readouterr().err
    assert cli.main(["bench", "--dry-run", "--e2e", "--e2e-models", "nosuchnet"]) == 2
    assert "--e2e-models" in capsys.readouterr().out
    assert cli.main(["bench", "--dry-run", "--match", "nosuchlayer"]) == 2
    assert "no benchmark case" in capsys.readouterr().out


def test_dry_run_switches_to_the_interpreter_without_a_gpu(tmp_path):
    """As a user runs it, without TRITON_INTERPRET: the command sets it, says so, and times."""
    if torch.cuda.is_available():
        return
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = tmp_path / "r.csv"
    proc = subprocess.run([sys.executable, "-m", "fastconv", "bench", "--dry-run", "--models",
                           "roi", "--ops", "roi_pool", "--dtypes", "float32", "--layouts",
                           "nchw", "--directions", "forward", "--no-plot", "--csv", str(out)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "TRITON_INTERPRET=1" in " ".join(proc.stderr.split())
    assert out.exists() and not out.with_suffix(".png").exists()
