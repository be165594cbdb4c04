"""Static GPU compile check: every tile config the plan may pick (``plan.CONFIG_TABLES``), the
split-K reduction and every RoI tile, built for sm_90 and sm_80 as a launch specialises them:
no compile error, no register spill, the 16-bit GEMMs on the tensor cores and, on channels_last
tensors of 64 channels, loading 16 bytes at a time; and every benchmark case's launch uses one
of those configs (the TMA forward's own tiles: tests/test_conv2d_tma.py).

The other tests run the kernels through Triton's interpreter, which never generates GPU code;
the report (``python -m fastconv.bench.compile_report``) builds real PTX and cubins with the
ptxas inside Triton, in a subprocess without TRITON_INTERPRET (conftest.py sets it here).
Cost: about 580 compiles per architecture, minutes on two cores with a cold Triton cache.
"""
import csv
import json
import os
import subprocess
import sys

import filelock
import pytest

import fastconv.kernels
from fastconv.bench import cases
from fastconv.bench import compile_report as CR
from fastconv.conv.plan import TMA_KERNELS
from fastconv.ops.target import planning_for

ARCHS = ("sm_90", "sm_80")
GEMM_FAMILIES = ("implicit_gemm", "gemm_1x1")
# one worker runs this module where pytest-xdist's groups work
pytestmark = pytest.mark.xdist_group("gpu_compile")


def _label(row: dict) -> str:
    return (f'{row["kernel"]} {row["direction"]} {row["dtype"]} {row["tile"]} '
            f'w{row["num_warps"]} s{row["num_stages"]} [{row["flags"]}] on {row["arch"]}')


def _report_once(arch: str, tmp_path_factory) -> tuple:
    """(finished subprocess, CSV rows) of the report for ``arch``, run once per test run
    whatever worker asks first (a file lock in the directory the workers share)."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    path, info = shared / f"report-{arch}.csv", shared / f"report-{arch}.json"
    with filelock.FileLock(str(shared / f"report-{arch}.lock")):
        if not info.exists():
            env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
            jobs = max(2, min(os.cpu_count() or 2, 8))
            proc = subprocess.run(
                [sys.executable, "-m", "fastconv.bench.compile_report", "--arch", arch,
                 "--csv", str(path), "--jobs", str(jobs), "--table", "none"],
                env=env, capture_output=True, text=True, timeout=3600)
            info.write_text(json.dumps(dict(returncode=proc.returncode,
                                            stdout=proc.stdout[-6000:],
                                            stderr=proc.stderr[-3000:])))
        done = json.loads(info.read_text())
    rows = list(csv.DictReader(open(path, newline=""))) if path.exists() else []
    return done, rows


@pytest.fixture(scope="module", params=ARCHS)
def report(request, tmp_path_factory):
    """(arch, the subprocess's exit status and output, CSV rows)."""
    return (request.param, *_report_once(request.param, tmp_path_factory))


def test_variants_cover_every_kernel():
    """Every kernel the dispatcher launches is built, the split-K reduction after a split
    GEMM of every dtype and offset width among them."""
    variants = CR.config_variants("sm_90")
    assert {v.kernel_name for v in variants} == set(fastconv.kernels.__all__)
    reduce = [v for v in variants if v.kernel_name == "conv2d_split_reduce_kernel"]
    assert {(v.label["dtype"], v.constexprs["INDEX_64"]) for v in reduce} >= \
        {(str(d).replace("torch.", ""), i) for d in CR.DTYPES for i in (False, True)}


def _config_of(v: CR.KernelVariant) -> tuple:
    """What names a tile config in a variant: kernel, dtype, BLOCK_M/N/K and launch options."""
    return (v.kernel_name, v.label["dtype"], *(v.constexprs.get(k) for k in
                                               ("BLOCK_M", "BLOCK_N", "BLOCK_K")),
            tuple(sorted(v.options.items())))


def test_every_benchmark_case_launches_a_checked_config():
    """The plan, for sm_90, only picks what the report builds: each launch of each benchmark
    case (every pass, dtype and layout) is one of the report's configs."""
    checked = {_config_of(v) for v in CR.config_variants("sm_90")}
    with planning_for("sm_90"):
        launched = CR.case_variants(cases.all_cases())
    assert len({v.label["case"] for v in launched}) == len(cases.all_cases())
    # the TMA kernels' tiles (not in CONFIG_TABLES) are their own tests' (test_conv2d_tma,
    # test_dgrad_tma, test_wgrad_tma), and tests/test_hopper_gemms.py compiles these launches
    tma = {kernel.fn.__name__ for kernel in TMA_KERNELS.values()}
    outside = sorted({_config_of(v) for v in launched if v.kernel_name not in tma} - checked,
                     key=str)
    assert not outside, f"configs launched but not compiled by the report: {outside[:5]}"


def test_report_exits_cleanly(report):
    arch, done, _ = report
    assert done["returncode"] == 0, f"compile_report --arch {arch} exited " \
        f"{done['returncode']}\n{done['stdout']}\n{done['stderr']}"


def test_every_config_compiles_without_spills(report):
    arch, done, rows = report
    # a report that compiled nothing (or skipped a variant) must not pass
    assert len(rows) == len(CR.config_variants(arch)), done["stderr"]
    failed = [f"{_label(r)}: {r['error']}" for r in rows if r["error"]]
    assert not failed, f"{len(failed)} variants failed to compile:\n" + "\n".join(failed)
    spills = [f"{_label(r)}: {r['stack']} bytes of stack, {r['registers']} registers"
              for r in rows if int(r["stack"]) > 0]
    assert not spills, f"{len(spills)} variants spill registers:\n" + "\n".join(spills)


def test_16bit_gemms_use_tensor_cores_and_load_16_bytes(report):
    """The static signature of a fast GEMM: wgmma (sm_90) or mma.sync in the PTX, and 16-byte
    global loads along the contiguous channels of a channels_last tensor."""
    arch, _, rows = report
    gemm16 = [r for r in rows if r["family"] in GEMM_FAMILIES and r["direction"] != "split_reduce"
              and r["dtype"] in ("float16", "bfloat16")]
    assert {r["family"] for r in gemm16} == set(GEMM_FAMILIES), arch
    allowed = {"sm_90": {"wgmma", "mma"}, "sm_80": {"mma"}}[arch]
    missing = [_label(r) for r in gemm16 if not set(r["tensor_cores"].split("+")) & allowed]
    assert not missing, f"no {'/'.join(sorted(allowed))} in the PTX of:\n" + "\n".join(missing)
    narrow = [f'{_label(r)}: {r["global_loads"]}' for r in gemm16 if int(r["load_bytes"]) < 16]
    assert not narrow, "no 16-byte global load in:\n" + "\n".join(narrow)
