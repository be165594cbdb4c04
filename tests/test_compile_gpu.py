"""Static GPU compile check: every kernel variant the dispatcher can launch builds for sm_90 and
sm_80 without register spills, and the 16-bit GEMMs run on the tensor cores.

The other tests run the kernels through Triton's interpreter, which never generates GPU code; this
one builds real PTX and cubins with the ptxas inside Triton, so no GPU is needed. conftest.py sets
TRITON_INTERPRET=1 in this process and the interpreter has already replaced ``@triton.jit``, so the
report runs in a subprocess whose environment does not have it.
"""
import collections
import csv
import os
import subprocess
import sys

import pytest

import fastconv.kernels
from fastconv.bench.compile_report import kernel_variants

ARCHS = ("sm_90", "sm_80")
ID_FIELDS = ("kernel", "dtype", "block_m", "block_n", "block_k", "num_warps", "num_stages", "flags")


def _variant_id(fields: dict) -> tuple:
    """What identifies a variant, as strings (the CSV has nothing else)."""
    return tuple(str(fields[k]) for k in ID_FIELDS)


def _label(row: dict) -> str:
    on = " ".join(f for f in row["flags"].split() if f.endswith("=1")) or "no flags"
    return (f'{row["kernel"]} {row["dtype"]} {row["block_m"]}x{row["block_n"]}x{row["block_k"]} '
            f'w{row["num_warps"]} s{row["num_stages"]} [{on}] on {row["arch"]}')


@pytest.fixture(scope="module", params=ARCHS)
def report(request, tmp_path_factory):
    """(arch, finished subprocess, CSV rows) of one ``compile_report`` run."""
    arch = request.param
    path = tmp_path_factory.mktemp("compile_report") / f"{arch}.csv"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    # each worker imports torch and triton: a few of them, not one per core of a big CI host
    jobs = max(2, min(os.cpu_count() or 2, 8))
    proc = subprocess.run(
        [sys.executable, "-m", "fastconv.bench.compile_report", "--arch", arch,
         "--csv", str(path), "--jobs", str(jobs)],
        env=env, capture_output=True, text=True, timeout=3600)
    rows = []
    if path.exists():
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    return arch, proc, rows


def test_variants_cover_every_kernel():
    names = {v.kernel_name for v in kernel_variants()}
    assert names == set(fastconv.kernels.__all__)


def test_report_exits_cleanly(report):
    arch, proc, _ = report
    assert proc.returncode == 0, (
        f"compile_report --arch {arch} exited {proc.returncode}\n"
        f"--- stdout (tail) ---\n{proc.stdout[-6000:]}\n--- stderr (tail) ---\n{proc.stderr[-3000:]}")


def test_every_variant_compiled(report):
    arch, proc, rows = report
    expected = collections.Counter(_variant_id(v.describe()) for v in kernel_variants())
    got = collections.Counter(_variant_id(r) for r in rows)
    # a report that compiled nothing (or skipped a variant) must not pass
    assert len(rows) == sum(expected.values()), \
        f"{len(rows)} rows for {sum(expected.values())} variants on {arch}; stderr: {proc.stderr[-2000:]}"
    assert got == expected, f"missing: {list(expected - got)[:5]}; unexpected: {list(got - expected)[:5]}"
    failed = [f"{_label(r)}: {r['error']}" for r in rows if r["error"]]
    assert not failed, f"{len(failed)} variants failed to compile:\n" + "\n".join(failed)


def test_no_register_spills(report):
    _, _, rows = report
    assert rows, "empty report"
    spills = [f"{_label(r)}: {r['stack']} bytes of stack, {r['registers']} registers"
              for r in rows if not r["error"] and int(r["stack"]) > 0]
    assert not spills, f"{len(spills)} variants spill registers:\n" + "\n".join(spills)


def test_16bit_gemms_use_tensor_cores(report):
    arch, _, rows = report
    gemm16 = [r for r in rows
              if r["family"] in ("implicit_gemm", "gemm_1x1")
              and r["dtype"] in ("float16", "bfloat16") and not r["error"]]
    assert {r["family"] for r in gemm16} == {"implicit_gemm", "gemm_1x1"}, arch
    assert gemm16, f"no 16-bit GEMM rows on {arch}"
    allowed = {"sm_90": {"wgmma", "mma"}, "sm_80": {"mma"}}[arch]
    missing = [_label(r) for r in gemm16 if not set(r["tensor_cores"].split("+")) & allowed]
    # which instruction Triton picked (wgmma is the fast path on sm_90): visible with -s / -rA
    print(f"{arch} 16-bit GEMM tensor-core instructions:",
          dict(collections.Counter(r["tensor_cores"] or "none" for r in gemm16)))
    assert not missing, f"no {'/'.join(sorted(allowed))} in the PTX of:\n" + "\n".join(missing)
