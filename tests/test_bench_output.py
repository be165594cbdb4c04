"""``fastconv bench``'s output without a GPU: the default table fits 120 columns (every column
with --wide), the roofline chart drawn from synthetic rows, and a dry run's files kept out of the
working directory."""
import csv
import math
import os
import re

import pytest
from rich.console import Console

from fastconv.bench import harness as H
from fastconv.bench import run as R
from fastconv.bench.roofline import GPUS

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _row(name, direction="forward", dtype="float16", layout="channels_last", flops=2e12,
         min_bytes=4e8, ms=1.5, result="ok", error=""):
    group, layer = name.split("/")[0], name.split("/")[1]
    return H.BenchRow(name=name, group=group, layer=layer, op="conv2d", direction=direction,
                      dtype=dtype, layout=layout, batch=32, input_shape="32x64x56x56",
                      weight_shape="64x64x3x3", output_shape="32x64x56x56", args="s1 p1",
                      fastconv_ms=ms, baseline="cudnn", baseline_ms=ms * 1.1,
                      speedup=1.1, tflops=flops / ms / 1e9, gbps=min_bytes / ms / 1e6,
                      flops=int(flops), min_bytes=int(min_bytes), floor_ms=ms / 2,
                      floor_fraction=0.5, bound="compute", rel_err=1e-4, tolerance=2e-3,
                      result=result, error=error, mode="gpu", device="NVIDIA H100 80GB HBM3")


def _rows():
    names = ["resnext50_32x4d/layer3.5.conv2/n32", "mobilenet_v2/features.17.conv.1.0/n1",
             "roi/roi_align/512x256x50x68_k512_o7_sr2/n1", "shufflenet_v2_x1_0/stage4.3.b2/n32"]
    rows = [_row(n, d, t, lay, flops=2e12 * (k + 1), min_bytes=4e8 / (k + 1))
            for k, n in enumerate(names) for d in ("forward", "backward")
            for t in ("float16", "float32") for lay in ("nchw", "channels_last")]
    rows.append(_row("resnet50/layer1.0.conv1/n1", result="error", ms=math.nan,
                     error="RuntimeError: out of resources: shared memory, required 262144"))
    return rows


def _render(table, width):
    console = Console(record=True, width=width)
    console.print(table)
    return console.export_text()


def test_default_table_fits_120_columns_and_wide_has_everything():
    text = _render(R.results_table(_rows()), R.NARROW_WIDTH)
    assert max(len(line) for line in text.splitlines()) <= 120
    top = next(line for line in text.splitlines() if line.startswith("┏"))
    assert top.rstrip().endswith("┓"), "the table is cut at the right edge"
    for col in R.NARROW_COLUMNS:
        assert col in text
    # case names and errors are folded onto more lines, never cut short
    assert "…" not in text
    first_cells = "".join(line.split("│")[1].strip() for line in text.splitlines()
                          if line.startswith("│"))
    assert "resnext50_32x4d/layer3.5.conv2/n32" in first_cells
    header = next(line for line in text.splitlines() if line.startswith("┃"))
    assert "GB/s" not in header and "--wide" in text and "shared memory" in text
    wide = _render(R.results_table(_rows(), wide=True), R.WIDE_WIDTH)
    for col in R.TABLE_COLUMNS:
        assert col in wide


def test_wide_option_is_accepted():
    import argparse
    parser = argparse.ArgumentParser()
    R.add_arguments(parser)
    assert parser.parse_args(["--wide"]).wide and not parser.parse_args([]).wide


def test_roofline_chart_from_rows_and_from_csv(tmp_path):
    pytest.importorskip("matplotlib")
    from fastconv.bench.plot import plot_roofline
    rows = _rows()
    png = plot_roofline(rows, GPUS["h100-sxm"], tmp_path / "roofline.png")
    assert png.read_bytes().startswith(PNG_SIGNATURE)
    # from the CSV's strings too, with measured ceilings in place of the datasheet's
    path = R.write_csv(rows, tmp_path / "r.csv")
    with open(path, newline="") as f:
        csv_rows = list(csv.DictReader(f))
    png = plot_roofline(csv_rows, GPUS["h100-sxm"], tmp_path / "from_csv.png",
                        ceilings={"float16": 700.0, "float32": 50.0, "bandwidth": 3.0})
    assert png.read_bytes().startswith(PNG_SIGNATURE)
    with pytest.raises(ValueError, match="no row"):
        plot_roofline([rows[-1]], GPUS["h100-sxm"], tmp_path / "none.png")


def test_dry_run_writes_to_a_temporary_directory(tmp_path, monkeypatch, capsys):
    from fastconv import __main__ as cli
    monkeypatch.chdir(tmp_path)
    code = cli.main(["bench", "--dry-run", "--models", "roi", "--ops", "roi_pool",
                     "--dtypes", "float32", "--layouts", "nchw", "--directions", "forward",
                     "--batches", "1", "--no-e2e", "--no-plot"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert not (tmp_path / "benchmarks").exists(), "a dry run wrote into the working directory"
    written = re.search(r"results written to\s+(\S+)", out.replace("\n", " ")).group(1)
    assert os.path.isfile(written) and not written.startswith(str(tmp_path))


def _compile_row(**over):
    from fastconv.bench.compile_report import ROW_FIELDS
    row = dict.fromkeys(ROW_FIELDS, "")
    row.update(kernel="conv2d_wgrad_direct_kernel", direction="wgrad", family="direct",
               dtype="bfloat16", tile="128x64x32", num_warps=8, num_stages=3,
               flags="ACC_FP64=0 INDEX_64=1 DOT_IN_FP32=0 ALLOW_TF32=0 SPLIT_K=1",
               arch="sm_90", registers=168, stack=0, shared=73728, tensor_cores="wgmma",
               global_loads="cp.async:16/8 ld:4", load_bytes=16, error="")
    row.update(over)
    return row


def test_compile_report_table_fits_120_columns(capsys):
    """The default compile-report table fits 120 columns without folding a kernel name;
    --wide adds the flags and the load widths."""
    from fastconv.bench import compile_report
    rows = [_compile_row(), _compile_row(kernel="conv2d_fprop_igemm_kernel",
                                         error="CompilationError: " + "x" * 300)]
    compile_report.print_table(rows)
    lines = capsys.readouterr().out.splitlines()
    assert max(map(len, lines)) <= 120
    assert any("wgrad_direct" in line for line in lines)  # not folded mid-name
    assert not any("INDEX_64" in line for line in lines)
    compile_report.print_table(rows, wide=True)
    assert any("INDEX_64" in line for line in capsys.readouterr().out.splitlines())
