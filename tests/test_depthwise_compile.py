"""Static GPU check of the channels_last depthwise launches: forward, input gradient and both
stages of the weight gradient (the direct kernel and the split-K reduction of its ranges), for
3x3 at strides 1 and 2, 5x5 and 7x7 windows, compiled for sm_90 as Triton's JIT specialises
each launch (``compile_report.variant_of_launch``) on the GPU plan (``compile_report.case_launches``): every launch
builds with 0 bytes of spill stack, and reads its channel vectors 16 bytes a load
(``ld.global.v4.b32``; the launcher's VEC at 16 bytes of elements), channel counts that
allow it (multiples of 8) by design.

The kernels are interpreted in the test process (conftest.py sets TRITON_INTERPRET), so the
compiles run in a subprocess without it: this file run as a script prints one JSON row per
launch. RoIAlign / RoIPool launches have the same check in tests/test_roi_compile.py.
"""
import pytest

from helpers import compiled_rows, print_compiled_rows

# (layer, N, C, H, W, kernel, stride, dtypes): MobileNetV2's, an EfficientNet-style 5x5, a
# ConvNeXt 7x7
CASES = [
    ("3x3-s1", 32, 96, 56, 56, 3, 1, ("bfloat16", "float32")),
    ("3x3-s2", 32, 144, 56, 56, 3, 2, ("float16",)),
    ("5x5-s1", 32, 240, 14, 14, 5, 1, ("bfloat16",)),
    ("7x7-s1", 32, 96, 56, 56, 7, 1, ("bfloat16", "float32")),
]
PASSES = ("fprop", "dgrad", "wgrad")


def _compile(job):
    """One JSON-able row per launch (the weight gradient: its stages)."""
    import torch

    from fastconv.bench import cases as C
    from fastconv.bench import compile_report as CR
    from fastconv.ops.target import planning_for

    index, dtype_name, pass_ = job
    layer, n, c, h, w, k, stride, _ = CASES[index]
    case = C.ConvCase(n, c, h, w, c, k, k, (stride, stride), (k // 2, k // 2), (1, 1), c,
                      model="depthwise", layer=layer)
    dtype = getattr(torch, dtype_name)
    rows = []
    with planning_for("sm_90"):
        launches = CR.case_launches(case, pass_, dtype, "channels_last")
    for i, (label, one) in enumerate(launches):
        row = CR.compile_variant(CR.variant_of_launch(one, **label), 90)
        rows.append(dict(case=layer, dtype=dtype_name, pass_=pass_, stage=i + 1,
                         kernel=row["kernel"], family=label["family"], vec=one.meta.get("VEC"),
                         grid=list(one.grid), registers=row["registers"], stack=row["stack"],
                         loads=row["global_loads"], load_bytes=row["load_bytes"],
                         error=row["error"]))
    return rows


def _jobs():
    return [(i, d, p) for i, case in enumerate(CASES) for d in case[-1] for p in PASSES]


def main():
    print_compiled_rows(_compile, _jobs())


@pytest.fixture(scope="module")
def rows():
    return compiled_rows(__file__)


def _label(r):
    return f'{r["case"]} {r["dtype"]} {r["pass_"]} stage {r["stage"]} {r["kernel"]}'


def test_every_depthwise_launch_compiles_without_spills(rows):
    # fprop, dgrad, and the weight gradient's two stages (the split fills the SMs at batch 32)
    assert len(rows) == 4 * len(_jobs()) // 3, [_label(r) for r in rows]
    assert {r["family"] for r in rows} == {"direct"}
    assert sorted(r["kernel"] for r in rows if r["pass_"] == "wgrad") == sorted(
        ["conv2d_wgrad_direct_kernel", "conv2d_split_reduce_kernel"] * (len(_jobs()) // 3))
    bad = [f'{_label(r)}: {r["error"] or str(r["stack"]) + " bytes of stack"}' for r in rows
           if r["error"] or int(r["stack"]) > 0]
    assert not bad, "\n".join(bad)


def test_depthwise_launches_load_16_byte_channel_vectors(rows):
    """Every launch's widest global load is 16 bytes; the direct kernels' channel vector
    (VEC elements) is 16 bytes wide, and the weight gradient's stage one splits its tiles."""
    narrow = []
    for r in rows:
        size = 4 if r["dtype"] == "float32" else 2
        if int(r["load_bytes"] or 0) < 16 or (r["stage"] == 1 and r["vec"] * size != 16):
            narrow.append(f'{_label(r)}: VEC {r["vec"]}, loads {r["loads"]}')
    assert not narrow, "\n".join(narrow)
    assert all(r["grid"][1] > 1 for r in rows if r["pass_"] == "wgrad" and r["stage"] == 1)


if __name__ == "__main__":
    main()
