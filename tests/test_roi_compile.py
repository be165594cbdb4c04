"""Static GPU check of the RoI launches of detectron2's benchmark shape (1x512x256x256, 512
boxes, 7x7 bins; ``fastconv.bench.cases.roi_cases``) and of 24 channels, in channels_last,
float32 / float16 / bfloat16, compiled for sm_90 as Triton's JIT specialises each launch
(``compile_report.variant_of_launch``): every launch builds, none spills, the forwards read
their channel vectors 16 bytes a load (the launcher's VEC proves the alignment that Triton's
own specialisation cannot see for 24 channels), and the atomic RoIAlign backward adds 16 bytes
(four float32) an atomic.

The kernels are interpreted in the test process (conftest.py sets TRITON_INTERPRET), so the
compiles run in a subprocess without it: this file run as a script prints one JSON row per
launch.
"""
import pytest

from helpers import compiled_rows, print_compiled_rows

DTYPES = ("float32", "float16", "bfloat16")
PASSES = ("fwd", "bwd", "bwd_det")
# the widest load a forward must reach: 16 bytes where C and the element size allow
WANT_LOAD = 16


def _cases():
    from fastconv.bench import cases as C
    return [*C.roi_cases(), C.RoICase("roi_align", C=24, sampling_ratio=2),
            C.RoICase("roi_pool", C=24)]


def _compile(job):
    """One JSON-able row per launch (and per split reduction that follows it)."""
    import re

    import torch
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from fastconv.bench import compile_report as CR
    from fastconv.ops.target import planning_for

    case_index, dtype_name, pass_ = job
    case = _cases()[case_index]
    dtype = getattr(torch, dtype_name)
    with planning_for("sm_90"):
        launches = CR.case_launches(case, pass_, dtype, "channels_last")
    rows = []
    for i, (label, one) in enumerate(launches):
        variant = CR.variant_of_launch(one, **label)
        row = CR.compile_variant(variant, 90)
        atomics = []
        if not row["error"]:  # the same compile again: Triton's cache has it
            attrs = {(variant.kernel.arg_names.index(n),): [["tt.divisibility", 16]]
                     for n in variant.divisible_16}
            ptx = triton.compile(ASTSource(variant.kernel, variant.signature,
                                           variant.constexprs, attrs),
                                 target=GPUTarget("cuda", 90, 32),
                                 options=variant.options).asm["ptx"]
            atomics = sorted(set(re.findall(r"\b(?:atom|red)\.global[.\w]*", ptx)))
        rows.append(dict(case=case.name, C=case.C, dtype=dtype_name, pass_=pass_,
                         kernel=row["kernel"], vec=one.meta.get("VEC"),
                         registers=row["registers"], stack=row["stack"],
                         loads=row["global_loads"], load_bytes=row["load_bytes"],
                         atomics=atomics, error=row["error"]))
    return rows


def main():
    jobs = [(i, d, p) for i in range(len(_cases())) for d in DTYPES for p in PASSES]
    print_compiled_rows(_compile, jobs)


@pytest.fixture(scope="module")
def rows():
    return compiled_rows(__file__)


def _label(r):
    return f'{r["case"]} C={r["C"]} {r["dtype"]} {r["pass_"]} {r["kernel"]}'


def test_every_launch_compiles_without_spills(rows):
    # 5 cases x 3 dtypes x 3 passes, and the adaptive forward's split reduction
    assert len(rows) == 5 * 3 * 3 + 3, len(rows)
    bad = [f'{_label(r)}: {r["error"] or str(r["stack"]) + " bytes of stack"}' for r in rows
           if r["error"] or int(r["stack"]) > 0]
    assert not bad, "\n".join(bad)


def test_forwards_read_16_byte_channel_vectors(rows):
    fwd = [r for r in rows if r["pass_"] == "fwd" and "split_reduce" not in r["kernel"]]
    assert len(fwd) == 5 * 3
    narrow = [f'{_label(r)}: VEC {r["vec"]}, loads {r["loads"]}' for r in fwd
              if int(r["load_bytes"]) < WANT_LOAD or r["vec"] * (2 if "16" in r["dtype"]
                                                                   else 4) != 16]
    assert not narrow, "\n".join(narrow)


def test_atomic_roi_align_backward_adds_vectors(rows):
    """Four float32 a red/atom instruction (the gradient buffer is float32, channels_last)."""
    bwd = [r for r in rows if r["pass_"] == "bwd" and r["kernel"] == "roi_align_bwd_kernel"]
    assert len(bwd) == 3 * 3
    narrow = [f'{_label(r)}: {r["atomics"]}' for r in bwd
              if not any(".v4.f32" in a for a in r["atomics"])]
    assert not narrow, "\n".join(narrow)


if __name__ == "__main__":
    main()
