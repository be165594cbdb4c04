"""Static GPU compile check: every kernel variant the dispatcher can launch builds for sm_90 and
sm_80 without register spills, and the 16-bit GEMMs run on the tensor cores; every benchmark case
maps onto those variants, with its FLOPs, bytes and roofline floor.

The other tests run the kernels through Triton's interpreter, which never generates GPU code; this
one builds real PTX and cubins with the ptxas inside Triton, so no GPU is needed. conftest.py sets
TRITON_INTERPRET=1 in this process and the interpreter has already replaced ``@triton.jit``, so the
reports run in subprocesses whose environment does not have it.

Cost: the full report compiles every variant (about 580, for sm_90); the sm_90 per-case report
then finds the variants it needs in Triton's cache, the sm_80 one compiles its own (about 150). The launch-specialised compile (load widths) is checked on one model's layers.
"""
import collections
import csv
import json
import os
import subprocess
import sys

import filelock
import pytest

import fastconv.kernels
from fastconv.bench import cases
from fastconv.bench.compile_report import DTYPES, kernel_variants
from fastconv.conv.plan import KERNELS, CONFIG_TABLES, dtype_class

ARCHS = ("sm_90", "sm_80")
# The full report (every variant the dispatcher may choose) runs here for sm_90; for sm_80 the
# per-case report compiles what the benchmark cases launch, and the full sm_80 report is
# `fastconv compile-report --arch sm_80` (it doubles this module's cost in CI).
FULL_REPORT_ARCHS = ("sm_90",)

# one worker runs this whole module where pytest-xdist's groups work (see _report_once for where
# they do not), so the compile-heavy tests do not crowd both workers at once
pytestmark = pytest.mark.xdist_group("gpu_compile")
ID_FIELDS = ("kernel", "dtype", "block_m", "block_n", "block_k", "num_warps", "num_stages", "flags")


def _variant_id(fields: dict) -> tuple:
    """What identifies a variant, as strings (the CSV has nothing else)."""
    return tuple(str(fields[k]) for k in ID_FIELDS)


def _label(row: dict) -> str:
    on = " ".join(f for f in row["flags"].split() if f.endswith("=1")) or "no flags"
    return (f'{row["kernel"]} {row["dtype"]} {row["block_m"]}x{row["block_n"]}x{row["block_k"]} '
            f'w{row["num_warps"]} s{row["num_stages"]} [{on}] on {row["arch"]}')


def _run_report(module: str, path, *args) -> tuple:
    """(finished subprocess, CSV rows) of ``python -m module --csv path *args``, run without
    TRITON_INTERPRET."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    # each worker imports torch and triton: a few of them, not one per core of a big CI host
    jobs = max(2, min(os.cpu_count() or 2, 8))
    proc = subprocess.run(
        [sys.executable, "-m", module, "--csv", str(path), "--jobs", str(jobs), *args],
        env=env, capture_output=True, text=True, timeout=3600)
    return proc, _read_rows(path)


def _read_rows(path) -> list:
    """The rows of a report's CSV; none if the report wrote none."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# Each report runs once per test run, whatever worker and order its tests get: the module is
# marked as one xdist group, but pytest 9.2 ignores the group suffix that pytest-xdist 3.8 adds to
# node ids, so the tests spread over the workers; and pytest sets a module fixture up again when
# the tests of its params interleave (an indirect parametrisation does that). A report costs
# minutes of compiling: the first worker to need one runs it and leaves it, under a file lock, in
# the directory the workers share.
_REPORTS = {}


def _report_once(key: str, tmp_path_factory, module: str, *args) -> tuple:
    """(finished subprocess, CSV rows) of ``_run_report(module, ..., *args)``, run once per
    ``key`` in a test run."""
    if key in _REPORTS:
        return _REPORTS[key]
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    path, info = shared / f"{key}.csv", shared / f"{key}.json"
    with filelock.FileLock(str(shared / f"{key}.lock")):
        if info.exists():
            done = json.loads(info.read_text())
            proc = subprocess.CompletedProcess(done["args"], done["returncode"], done["stdout"],
                                               done["stderr"])
            rows = _read_rows(path)
        else:
            proc, rows = _run_report(module, path, *args)
            info.write_text(json.dumps(dict(args=proc.args, returncode=proc.returncode,
                                            stdout=proc.stdout, stderr=proc.stderr)))
    _REPORTS[key] = proc, rows
    return _REPORTS[key]


def _tail(proc) -> str:
    return (f"--- stdout (tail) ---\n{proc.stdout[-6000:]}\n"
            f"--- stderr (tail) ---\n{proc.stderr[-3000:]}")


@pytest.fixture(scope="module", params=FULL_REPORT_ARCHS)
def report(request, tmp_path_factory):
    """(arch, finished subprocess, CSV rows) of one ``compile_report`` run."""
    arch = request.param
    proc, rows = _report_once(f"full-{arch}", tmp_path_factory,
                              "fastconv.bench.compile_report", "--arch", arch)
    return arch, proc, rows


@pytest.fixture(scope="module", params=ARCHS)
def case_report(request, tmp_path_factory):
    """(arch, finished subprocess, CSV rows) of one per-case report over every benchmark
    case."""
    arch = request.param
    if arch in FULL_REPORT_ARCHS:  # after the full report, whose compiles it then finds cached
        _report_once(f"full-{arch}", tmp_path_factory, "fastconv.bench.compile_report",
                     "--arch", arch)
    proc, rows = _report_once(f"cases-{arch}", tmp_path_factory,
                              "fastconv.bench.case_report", "--arch", arch, "--table", "none")
    return arch, proc, rows


def test_variants_cover_every_kernel():
    names = {v.kernel_name for v in kernel_variants()}
    assert names == set(fastconv.kernels.__all__)


def test_variants_cover_split_k():
    """Every config of the fprop / dgrad GEMM tables is built split too (the plan splits after
    choosing the tile), without the bias it leaves to the reduction, and the reduction is built
    for every dtype, offset width and bias."""
    variants = list(kernel_variants())
    for (direction, family), kernel in KERNELS.items():
        if direction == "wgrad" or family == "direct":
            continue
        for table, index_64_values in CONFIG_TABLES[family]:
            for cls, configs in table[direction].items():
                for config in configs:
                    split = [v for v in variants if v.kernel_name == kernel.fn.__name__
                             and v.direction == direction and v.config == config
                             and dtype_class(v.dtype) == cls and v.constexprs["SPLIT_K"]]
                    assert split, (direction, family, cls, config)
                    assert not any(v.constexprs.get("HAS_BIAS") for v in split)
    reduce = [v for v in variants if v.kernel_name == "conv2d_split_reduce_kernel"]
    assert {(v.dtype, v.constexprs["INDEX_64"], v.constexprs["HAS_BIAS"]) for v in reduce} == \
        {(d, i, b) for d in DTYPES for i in (False, True) for b in (False, True)}
    assert all(v.signature["part_ptr"] in ("*fp32", "*fp64") for v in reduce)


def test_report_exits_cleanly(report):
    arch, proc, _ = report
    assert proc.returncode == 0, f"compile_report --arch {arch} exited {proc.returncode}\n" \
        + _tail(proc)


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


# ------------------------------------------------------------------------ per benchmark case
GEMM_FAMILIES = ("implicit_gemm", "gemm_1x1")


def _expected_launches() -> collections.Counter:
    """case name -> launches: 3 dtypes x 2 layouts x 3 passes (fprop / dgrad / wgrad, or a RoI
    op's forward and two backwards)."""
    return collections.Counter({c.name: len(cases.DTYPES) * len(cases.LAYOUTS) * 3
                                for c in cases.all_cases()})


def test_case_report_exits_cleanly(case_report):
    arch, proc, _ = case_report
    assert proc.returncode == 0, f"case_report --arch {arch} exited {proc.returncode}\n" \
        + _tail(proc)


def test_every_case_is_mapped_to_a_compiled_variant(case_report):
    arch, proc, rows = case_report
    got = collections.Counter(r["case"] for r in rows)
    assert got == _expected_launches(), f"rows per case differ on {arch}\n" + _tail(proc)
    unmapped = [f'{r["case"]} {r["pass"]} {r["dtype"]} {r["layout"]}: {r["error"]}'
                for r in rows if not r["kernel"] or r["error"]]
    assert not unmapped, f"{len(unmapped)} launches without a compiled variant on {arch}:\n" \
        + "\n".join(unmapped[:20])
    # the plan only picks what the full report builds and checks
    full = {_variant_id(v.describe()) for v in kernel_variants()}
    outside = {_variant_id(r) for r in rows} - full
    assert not outside, f"variants used by cases but not in the full report: {sorted(outside)[:5]}"


def test_cases_do_not_spill_and_16bit_gemms_use_tensor_cores(case_report):
    arch, _, rows = case_report
    spills = [f'{r["case"]} {r["pass"]} {r["dtype"]} {r["layout"]}: {r["stack"]} bytes'
              f'{", split-K reduction " + r["reduce_stack"] if r["reduce_stack"] else ""}'
              for r in rows if any(r[k] and int(r[k]) > 0 for k in ("stack", "reduce_stack"))]
    assert not spills, "\n".join(spills[:20])
    allowed = {"sm_90": {"wgmma", "mma"}, "sm_80": {"mma"}}[arch]
    gemm16 = [r for r in rows if r["family"] in GEMM_FAMILIES
              and r["dtype"] in ("float16", "bfloat16")]
    assert gemm16
    missing = [f'{r["case"]} {r["pass"]} {r["dtype"]} {r["layout"]} {r["kernel"]}'
               for r in gemm16 if not set(r["tensor_cores"].split("+")) & allowed]
    assert not missing, "no tensor-core instructions in:\n" + "\n".join(missing[:20])


def test_case_work_and_floor_columns(case_report):
    arch, _, rows = case_report
    for r in rows:
        what = f'{r["case"]} {r["pass"]} {r["dtype"]} {r["layout"]} on {arch}'
        assert int(r["flops"]) > 0 and int(r["min_bytes"]) > 0, what
        assert float(r["floor_us"]) > 0 and r["bound"] in ("compute", "memory"), what
        assert int(r["programs"]) >= 1 and float(r["waves"]) > 0, what
        assert int(r["occupancy_warps"]) > 0 and int(r["blocks_per_sm"]) >= 1, what
    # the floor is the larger of the two times, so a float16 case is never slower than float32
    floors = {(r["case"], r["pass"], r["layout"], r["dtype"]): float(r["floor_us"]) for r in rows}
    for (case, pass_, layout, dtype), floor in floors.items():
        if dtype == "float16":
            assert floor <= floors[(case, pass_, layout, "float32")], (case, pass_)


def test_batch1_layers_split_to_fill_the_gpu(case_report):
    """Split-K in the report: the split launches are batch-1 GEMMs, each with its reduction
    compiled without spills."""
    arch, proc, rows = case_report
    split = [r for r in rows if r["pass"] in ("fprop", "dgrad") and int(r["split"]) > 1]
    assert split, _tail(proc)
    assert all(r["case"].endswith("/n1") and r["family"] in GEMM_FAMILIES for r in split)
    for r in split:
        what = f'{r["case"]} {r["pass"]} {r["dtype"]} {r["layout"]} on {arch}'
        assert int(r["reduce_programs"]) >= 1 and int(r["reduce_registers"]) > 0, what
        assert int(r["reduce_stack"]) == 0, what
    for r in rows:  # (the RoIAlign adaptive-sampling forward has a reduction of its own)
        if r["pass"] in ("fprop", "dgrad"):
            assert r["reduce_programs"] == "" or int(r["split"]) > 1, r


# Launch-specialised compiles (what a GPU launch really builds) of a few slices of the cases:
# every one of them differs in its divisibility, so the whole list is too slow for CI (about
# 1600 variants per architecture). These slices hold launches that spilled before the configs'
# register caps (benchmarks/NOTES.md): ptxas picks its own cap per specialisation. One slice
# per architecture runs here; `python -m fastconv.bench.case_report --specialise launch` is the
# whole list.
# (arch, rows: distinct layers x 3 passes, report filters)
RESNET50 = ("--models", "resnet50")
LAUNCH_SLICES = {
    "sm_90-fp16-cl-n32": ("sm_90", 23 * 3, *RESNET50, "--batches", "32", "--dtypes", "float16",
                          "--layouts", "channels_last"),
    "sm_80-fp32-nchw-n1-exact": ("sm_80", 23 * 3, *RESNET50, "--batches", "1",
                                 "--dtypes", "float32", "--layouts", "nchw", "--no-tf32"),
    # channel counts Triton cannot see divisible by 16 (24, 58, 116, 232), the small tiles
    "sm_90-fp16-cl-n1-mobile": ("sm_90", 26 * 3, "--models", "shufflenet_v2_x1_0", "depthwise",
                                "--batches", "1", "--dtypes", "float16",
                                "--layouts", "channels_last"),
    # the depthwise layers (MobileNetV2, ShuffleNet V2) at batch 32 in both 16-bit dtypes: the
    # direct kernels' spatial tiles (benchmarks/NOTES.md section 12)
    "sm_90-16bit-cl-n32-depthwise": ("sm_90", 17 * 3 * 2, "--models", "depthwise",
                                     "--batches", "32", "--dtypes", "float16", "bfloat16",
                                     "--layouts", "channels_last"),
}


@pytest.fixture(scope="module", params=sorted(LAUNCH_SLICES))
def launch_report(request, tmp_path_factory):
    """(slice name, finished subprocess, CSV rows) of a slice of the per-case report compiled
    as launches specialise them."""
    arch, _, *filters = LAUNCH_SLICES[request.param]
    proc, rows = _report_once(f"launch-{request.param}", tmp_path_factory,
                              "fastconv.bench.case_report", "--arch", arch,
                              "--specialise", "launch", "--table", "none", *filters)
    return request.param, proc, rows


def test_launch_specialised_cases_do_not_spill(launch_report):
    name, proc, rows = launch_report
    assert proc.returncode == 0, f"{name}\n" + _tail(proc)
    expected = LAUNCH_SLICES[name][1]
    assert len(rows) == expected, f"{name}: {len(rows)} rows, not {expected}"
    bad = [f'{r["case"]} {r["pass"]} {r["kernel"]}: {r["error"] or r["stack"] + " bytes"}'
           for r in rows if r["error"] or int(r["stack"]) > 0]
    assert not bad, f"{name}:\n" + "\n".join(bad)


@pytest.mark.parametrize("launch_report", ["sm_90-fp16-cl-n32"], indirect=True)
def test_channels_last_gemm_loads_are_vectorised(launch_report):
    """Compiled as a launch specialises them (unit channel stride, sizes divisible by 16), the
    channels_last 16-bit GEMMs move 16 bytes per load instruction (16-byte cp.async or
    ld.global.v4): the channel axis is contiguous and 8 halves wide."""
    name, proc, rows = launch_report
    gemm = [r for r in rows if r["family"] in GEMM_FAMILIES]
    assert len(gemm) >= 60, _tail(proc)
    narrow = [f'{r["case"]} {r["pass"]} {r["kernel"]}: {r["global_loads"]}' for r in gemm
              if int(r["load_bytes"] or 0) < 16]
    assert not narrow, f"no 16-byte global load on {name} in:\n" + "\n".join(narrow)


def _low_bit(n: int) -> int:
    return n & -n


@pytest.mark.parametrize("launch_report", ["sm_90-fp16-cl-n1-mobile"], indirect=True)
def test_channels_last_loads_are_as_wide_as_the_channels_allow(launch_report):
    """ShuffleNet's channel counts (24, 58, 116, 232) are not multiples of 16, so Triton's own
    specialisation proves no alignment; the launcher's VEC (conv2d_launch.channel_vector) does:
    each channels_last launch's widest load is 16 bytes, or what the channel counts' largest
    power-of-two divisor (2 halves for 58: 4 bytes; 4 for 116: 8 bytes) or the tile's elements
    per thread (8x8 on one warp: 2) allow. Element-wide loads remain only where a pixel holds 3
    channels (the stem)."""
    name, proc, rows = launch_report
    assert rows, _tail(proc)
    by_name = {c.name: c for c in cases.all_cases()}
    narrow = []
    for r in rows:
        case = by_name[r["case"]]
        per_thread = int(r["block_m"]) * int(r["block_n"]) // (32 * int(r["num_warps"]))
        want = min(16, 2 * _low_bit(case.C), 2 * _low_bit(case.K), 2 * per_thread)
        if int(r["load_bytes"]) < want:
            narrow.append(f'{r["case"]} {r["pass"]} {r["block_m"]}x{r["block_n"]}: '
                          f'{r["global_loads"]}, want {want}-byte loads')
    assert not narrow, "\n".join(narrow)
    # not vacuous: the 232-channel layers move 16 bytes, the 116-channel ones 8
    widths = {int(r["load_bytes"]) for r in rows if "stage4.0.branch" in r["case"]
              and r["family"] == "gemm_1x1"}
    assert widths == {16}, widths
    assert any(int(r["load_bytes"]) == 8 for r in rows if "stage3.0.branch1.2" in r["case"])


@pytest.mark.parametrize("launch_report", ["sm_90-16bit-cl-n32-depthwise"], indirect=True)
def test_depthwise_launches_load_sixteen_bytes(launch_report):
    """The channels_last depthwise launches at batch 32 (direct forward, input and weight
    gradient, in the spatial tiles the plan takes there) move 16 bytes per channel load
    wherever the channel count allows (all but ShuffleNet's 58 and 116 channels: 4 and 8
    bytes), and the forward and input gradient take the 8x8 spatial tiles."""
    name, proc, rows = launch_report
    assert rows, _tail(proc)
    by_name = {c.name: c for c in cases.all_cases()}
    narrow = []
    for r in rows:
        assert r["family"] == "direct", r
        case = by_name[r["case"]]
        want = min(16, 2 * _low_bit(case.C))
        if int(r["load_bytes"]) < want:
            narrow.append(f'{r["case"]} {r["dtype"]} {r["pass"]} {r["block_m"]}x{r["block_n"]}: '
                          f'{r["global_loads"]}, want {want}-byte loads')
    assert not narrow, "\n".join(narrow)
    # not vacuous: all but ShuffleNet's four 58- and 116-channel layers (24 launches)
    assert sum(int(r["load_bytes"]) == 16 for r in rows) == len(rows) - 24
    tiles = {int(r["block_m"]) for r in rows if r["direction"] in ("fprop", "dgrad")}
    assert tiles == {64}, tiles
