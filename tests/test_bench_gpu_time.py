"""GPU time in ``fastconv bench`` (fastconv.bench.gpu_time) and the helpers of
benchmarks/gpu_run.sh (fastconv.bench.gpu_run).

Without a GPU no CUDA graph can be captured: the measurement runs here with a fake capture and
timer, the harness with a fake GPU timer, and a dry run must leave the GPU-time columns empty
and say why. The one test that captures a real graph is skipped without a GPU."""
import csv
import math
import subprocess
from pathlib import Path

import pytest
import torch
from rich.console import Console

from fastconv import __main__ as cli
from fastconv.bench import cases as C
from fastconv.bench import gpu_run as G
from fastconv.bench import gpu_time as T
from fastconv.bench import harness as H
from fastconv.bench import run as R

REPO = Path(__file__).resolve().parents[1]
GPU_COLUMNS = ("fastconv_gpu_ms", "baseline_gpu_ms", "baselines_gpu", "gpu_speedup",
               "gpu_tflops", "gpu_gbps", "gpu_floor_fraction", "mem_floor_ms",
               "gpu_mem_floor_fraction", "gpu_note")


def _case(pred):
    return H.shrink(next(c for c in C.all_cases(batches=(32,)) if pred(c)))


def _env():
    return H.environment(torch.device("cpu"), dry=True)


# ---------------------------------------------------------------------------- the measurement
def test_graph_shape_fits_slow_calls_into_the_budget():
    assert T.graph_shape(0.05) == (T.GRAPH_CALLS, T.GRAPH_REPLAYS)
    assert T.graph_shape(math.nan) == (T.GRAPH_CALLS, T.GRAPH_REPLAYS)
    calls, replays = T.graph_shape(74.0)        # roi_align sr0 backward on the first H200 run
    assert (calls, replays) == (T.MIN_GRAPH_CALLS, T.MIN_GRAPH_REPLAYS)
    calls, replays = T.graph_shape(5.0)
    assert T.MIN_GRAPH_CALLS <= calls < T.GRAPH_CALLS and \
        T.MIN_GRAPH_REPLAYS <= replays <= T.GRAPH_REPLAYS


def test_graph_time_is_the_median_replay_per_call():
    made, captured, replays = [], [], []

    def make_call():
        made.append(1)
        return lambda: None

    def capture(make, calls):
        call = make()
        captured.append(calls)
        for _ in range(calls):
            call()
        return lambda: replays.append(1)

    times = iter([9.0, 1.0, 3.0, 2.0, 40.0])

    def timer(replay):
        replay()
        return next(times)

    ms = T.graph_time_ms(make_call, calls=4, replays=5, capture=capture, timer=timer)
    assert ms == pytest.approx(3.0 / 4)             # median of the five replays, over 4 calls
    assert made == [1] and captured == [4]
    assert len(replays) == 6                        # one untimed replay (the upload) first
    with pytest.raises(ValueError, match="calls"):
        T.graph_time_ms(make_call, calls=0, capture=capture, timer=timer)


def test_a_contender_is_captured_through_its_rotating_factory():
    fresh = []
    contender = H.Contender("x", fn=lambda: pytest.fail("fn is not what a graph captures"),
                            first=lambda: [], rotating=lambda: fresh.append(1) or (lambda: 1))
    seen = {}

    def capture(make, calls):
        make()()
        seen["calls"] = calls
        return lambda: None

    ms = T.contender_gpu_ms(contender, 100.0, capture=capture, timer=lambda replay: 8.0)
    assert fresh == [1] and seen["calls"] == T.MIN_GRAPH_CALLS
    assert ms == pytest.approx(8.0 / T.MIN_GRAPH_CALLS)
    # no factory (end-to-end contenders): fn itself
    plain = H.Contender("y", fn=lambda: None, first=lambda: [])
    assert T.contender_gpu_ms(plain, 0.1, capture=lambda make, calls: make(),
                              timer=lambda replay: 1.2) == pytest.approx(1.2 / T.GRAPH_CALLS)


class _FakeCuda:
    """torch.cuda's streams, graphs and events as a log of what happened, in order."""

    def __init__(self, monkeypatch):
        import contextlib
        self.log, self.current = [], "default"
        fake = self

        class Stream:
            def __init__(self):
                self.name = f"side{len([e for e in fake.log if e == 'new stream'])}"
                fake.log.append("new stream")

            def wait_stream(self, other):
                fake.log.append(f"{self.name} waits for {other}")

            def synchronize(self):
                fake.log.append(f"sync {self.name}")

        class Default:
            def wait_stream(self, other):
                fake.log.append(f"default waits for {other.name}")

            def __str__(self):
                return "default"

        @contextlib.contextmanager
        def stream(s):
            saved, fake.current = fake.current, s.name
            try:
                yield
            finally:
                fake.current = saved

        class Graph:
            def capture_begin(self):
                fake.log.append(f"capture_begin on {fake.current}")
                fake.capturing = True

            def capture_end(self):
                fake.log.append("capture_end")
                fake.capturing = False

            def replay(self):
                fake.log.append(f"replay on {fake.current}")

        class Event:
            def __init__(self, enable_timing):
                assert enable_timing
                self.t = None

            def record(self):
                self.t = len(fake.log)

            def synchronize(self):
                pass

            def elapsed_time(self, end):
                return float(end.t - self.t)

        self.capturing = False
        T._STREAMS.clear()
        for name, value in (("current_device", lambda: 0), ("Stream", Stream),
                            ("stream", stream), ("current_stream", lambda: Default()),
                            ("CUDAGraph", Graph), ("Event", Event)):
            monkeypatch.setattr(torch.cuda, name, value)

    def call(self, fail_at=None):
        def make():
            self.log.append(f"make_call on {self.current}")
            count = [0]

            def call():
                count[0] += 1
                self.log.append(f"call on {self.current}" +
                                (" (captured)" if self.capturing else ""))
                if fail_at is not None and count[0] == fail_at:
                    raise RuntimeError("operation not permitted when stream is capturing")
            return call
        return make


def test_capture_order_on_a_side_stream(monkeypatch):
    cuda = _FakeCuda(monkeypatch)
    replay = T.cuda_graph_capture(cuda.call(), calls=3)
    assert cuda.log == [
        "new stream", "side0 waits for default",
        "make_call on side0", "call on side0",          # built and warmed on the capture stream
        "sync side0", "capture_begin on side0",
        "call on side0 (captured)", "call on side0 (captured)", "call on side0 (captured)",
        "capture_end", "default waits for side0"]
    del cuda.log[:]
    assert T.event_timer_ms(replay) == 1.0              # the replay, between the two events
    assert cuda.log == ["replay on default"]
    # the next capture reuses the stream
    T.cuda_graph_capture(cuda.call(), calls=1)
    assert "new stream" not in cuda.log


def test_a_failed_capture_ends_it_and_drops_the_stream(monkeypatch):
    cuda = _FakeCuda(monkeypatch)
    with pytest.raises(RuntimeError, match="capturing"):
        T.cuda_graph_capture(cuda.call(fail_at=3), calls=4)    # the warm-up call is the 1st
    assert cuda.log[-2:] == ["call on side0 (captured)", "capture_end"]
    assert not cuda.capturing and T._STREAMS == {}


# ---------------------------------------------------------------------------- the harness
def test_rows_have_the_gpu_columns():
    for col in GPU_COLUMNS:
        assert col in H.COLUMNS
    cols = list(H.COLUMNS)
    # each GPU time sits after the eager one it goes with
    assert cols.index("speedup") < cols.index("fastconv_gpu_ms") < cols.index("gpu_speedup")


def test_dry_run_leaves_gpu_time_empty_and_says_why():
    case = _case(lambda c: c.model == "depthwise")
    row = H.measure(case, torch.float32, "channels_last", "forward", "cpu", _env(), dry=True)
    assert row.result == "ok", row.error
    for col in ("fastconv_gpu_ms", "baseline_gpu_ms", "gpu_speedup", "gpu_gbps",
                "gpu_mem_floor_fraction"):
        assert math.isnan(getattr(row, col)), col
    assert row.gpu_note and row.baselines_gpu == ""
    # the memory floor is the case's, measured or not
    assert row.mem_floor_ms == pytest.approx(row.min_bytes / _env().peak.bandwidth * 1e3)


def test_gpu_times_fill_the_row_with_a_fake_timer():
    case = _case(lambda c: c.model == "depthwise")
    times = {"fastconv": 0.5, "torch": 2.0, "torch-native": 1.0}
    built = []

    def timer(contender, eager_ms):
        assert eager_ms > 0
        call = contender.rotating()      # a fresh rotating call, as a capture makes it
        built.append(contender.name)
        call()
        return times[contender.name]

    row = H.measure(case, torch.float16, "channels_last", "backward", "cpu", _env(), dry=True,
                    gpu_timer=timer)
    assert row.result == "ok", row.error
    assert built == ["fastconv", "torch", "torch-native"]
    assert row.fastconv_gpu_ms == 0.5 and row.baseline_gpu_ms == 1.0
    assert row.baselines_gpu == "torch=2;torch-native=1"
    assert row.gpu_speedup == pytest.approx(2.0)
    assert row.gpu_tflops == pytest.approx(row.flops / 0.5e-3 / 1e12)
    assert row.gpu_gbps == pytest.approx(row.min_bytes / 0.5e-3 / 1e9)
    assert row.gpu_floor_fraction == pytest.approx(row.floor_ms / 0.5)
    assert row.gpu_mem_floor_fraction == pytest.approx(row.mem_floor_ms / 0.5)
    assert row.gpu_note == ""
    # the eager columns are untouched by the GPU time
    assert row.speedup == pytest.approx(row.baseline_ms / row.fastconv_ms)


def test_a_failed_capture_leaves_the_eager_result_standing():
    case = _case(lambda c: c.name == "resnet50/layer1.0.conv2/n32")

    def timer(contender, eager_ms):
        if contender.name == "fastconv":
            raise RuntimeError("operation not permitted when stream is capturing")
        return 1.0

    row = H.measure(case, torch.float32, "nchw", "forward", "cpu", _env(), dry=True,
                    gpu_timer=timer)
    assert row.result == "ok" and row.speedup > 0
    assert math.isnan(row.fastconv_gpu_ms) and math.isnan(row.gpu_speedup)
    assert row.baseline_gpu_ms == 1.0
    assert "fastconv: RuntimeError" in row.gpu_note and "capturing" in row.gpu_note


def test_each_row_is_kept_as_it_is_measured(tmp_path, monkeypatch):
    """gpu_run.sh's partial CSV: a bench step cut short keeps the rows it measured."""
    path = tmp_path / "partial.csv"
    monkeypatch.setenv(H.PARTIAL_CSV_ENV, str(path))
    case = _case(lambda c: c.name == "resnet50/layer1.0.conv2/n32")
    for direction in ("forward", "backward"):
        H.measure(case, torch.float32, "nchw", direction, "cpu", _env(), dry=True)
    with pytest.raises(ValueError):          # a caller's error: no row
        H.measure(case, torch.float32, "nchw", "sideways", "cpu", _env(), dry=True)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert tuple(reader.fieldnames) == H.COLUMNS
    assert [(r["name"], r["direction"], r["result"]) for r in rows] == [
        ("resnet50/layer1.0.conv2/n1", "forward", "ok"),
        ("resnet50/layer1.0.conv2/n1", "backward", "ok")]


def _synthetic_rows():
    """Rows as a GPU run writes them, for the table and the summary."""
    env = _env()

    def row(name, group, layer, direction, dtype, eager, base_eager, gpu, base_gpu, nbytes,
            result="ok"):
        r = H.BenchRow(name=name, group=group, layer=layer, op="conv2d", direction=direction,
                       dtype=dtype, layout="channels_last", batch=32, input_shape="",
                       weight_shape="", output_shape="", args="", fastconv_ms=eager,
                       baseline="torch", baseline_ms=base_eager, speedup=base_eager / eager,
                       flops=10**9, min_bytes=nbytes, fastconv_gpu_ms=gpu,
                       baseline_gpu_ms=base_gpu, baselines_gpu=f"torch={base_gpu}",
                       gpu_speedup=base_gpu / gpu, floor_ms=0.01, bound="memory",
                       mem_floor_ms=nbytes / 4.8e9, result=result, **env.columns)
        r.gpu_gbps = nbytes / gpu / 1e6
        r.gpu_mem_floor_fraction = r.mem_floor_ms / gpu
        return r
    return [
        row("resnet50/conv1/n32", "resnet50", "conv1", "forward", "bfloat16", 3.0, 0.3, 2.0,
            0.2, 10**8),
        row("resnet50/layer1.0.conv2/n32", "resnet50", "layer1.0.conv2", "forward", "bfloat16",
            0.5, 0.05, 0.1, 0.05, 10**8),
        row("resnet50/layer1.0.conv2/n32", "resnet50", "layer1.0.conv2", "backward",
            "bfloat16", 1.0, 0.1, 0.2, 0.1, 10**8, result="MISMATCH"),
        row("depthwise/mobilenet_v2.features.2.conv.1.0/n32", "depthwise",
            "mobilenet_v2.features.2.conv.1.0", "forward", "float16", 0.4, 0.2, 0.1, 0.2,
            2 * 10**8),
    ]


def test_gpu_time_table_and_what_bench_prints():
    rows = _synthetic_rows()
    console = Console(record=True, width=120)
    T.print_gpu_times(console, rows)
    text = console.export_text()
    header = next(line for line in text.splitlines() if "eager ms" in line)
    for col in T.GPU_TABLE_COLUMNS:
        assert col in header, header
    assert "42%" in text             # the last column: 2e8 B / 4.8e9 B/ms = 0.042 ms of 0.1 ms
    assert "resnet50/conv1/n32" in text and "geometric-mean speedup on GPU time" in text
    # fits the 120 columns of a piped console without folding its numbers
    assert max(len(line) for line in text.splitlines()) <= 120
    assert "2000" in text            # depthwise: 2e8 bytes in 0.1 ms = 2000 GB/s
    console = Console(record=True, width=120)
    for r in rows:
        r.fastconv_gpu_ms = math.nan
    T.print_gpu_times(console, rows, dry=True)
    assert "GPU time: not measured" in console.export_text()


def test_bench_dry_run_writes_the_gpu_columns(tmp_path, capsys):
    out = tmp_path / "r.csv"
    code = cli.main(["bench", "--dry-run", "--models", "roi", "--ops", "roi_pool",
                     "--dtypes", "float32", "--layouts", "nchw", "--directions", "forward",
                     "--no-plot", "--csv", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "GPU time: not measured" in text
    with open(out, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert tuple(reader.fieldnames) == H.COLUMNS and len(rows) == 1
    assert rows[0]["fastconv_gpu_ms"] == "nan" and rows[0]["gpu_note"]
    assert float(rows[0]["mem_floor_ms"]) > 0 and float(rows[0]["speedup"]) > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graph_of_a_backward_on_a_gpu():
    """torch's convolution backward (autograd graphs retained) captured and replayed: the
    autograd graphs must be built on the capture stream (Contender.rotating)."""
    case = next(c for c in C.all_cases(batches=(8,)) if c.name == "resnet50/layer1.0.conv2/n8")
    sets = H.make_inputs(case, torch.float16, "channels_last", "backward", "cuda", sets=2)
    _, forward = H._conv_forwards(case)      # torch's side: fastconv's runs interpreted here
    fn, first = H._runner(forward, sets, "backward", ("x", "w"))
    contender = H.Contender("torch", fn, first, H._cudnn(True),
                            lambda: H._runner(forward, sets, "backward", ("x", "w"))[0])
    with contender.context():
        first()
        ms = T.contender_gpu_ms(contender, 1.0)
    assert 0 < ms < 100


# ---------------------------------------------------------------------------- gpu_run helpers
def test_summary_of_a_synthetic_csv(tmp_path):
    path = R.write_csv(_synthetic_rows(), tmp_path / "run.csv")
    lines = G.summary_lines(G.read_rows([path]))
    text = "\n".join(lines)
    resnet_fwd = next(line for line in lines if line.startswith("resnet50") and " fwd " in line)
    # GPU speedups 0.1 and 0.5: geomean 0.22; eager 0.1 and 0.1
    assert " 0.22 " in resnet_fwd and " 0.10 " in resnet_fwd
    assert "conv1 0.10" in resnet_fwd                  # the worst layer on GPU time
    resnet_bwd = next(line for line in lines if line.startswith("resnet50") and " bwd " in line)
    assert "0!1" in resnet_bwd and "1 row(s) failed or disagreed" in text
    depthwise = next(line for line in lines if line.startswith("depthwise"))
    assert "2000/1000" in depthwise                    # GB/s: fastconv / baseline
    assert "mode dry" in text


def test_summary_reads_the_tma_and_overhead_files(tmp_path):
    tma = tmp_path / "tma.txt"
    tma.write_text("halo zero fill (negative TMA coordinates): True\n"
                   "layer,pass,dtype,tile,rel_err,tma_ms,cudnn_ms,speedup,tma_tflops\n"
                   "a,fprop,bfloat16,128x128x64,1.0e-03,,,,\nexit status: 0\n"
                   "--- timed\nhalo zero fill (negative TMA coordinates): True\n"
                   "layer,pass,dtype,tile,rel_err,tma_ms,cudnn_ms,speedup,tma_tflops\n"
                   "a,fprop,bfloat16,128x128x64,2.0e-03,0.1,0.08,0.80,500\n"
                   "b,fprop,float16,128x128x64,1.0e-03,0.1,0.1,1.25,500\n"
                   "a,wgrad,bfloat16,64x128x64 split4,1.0e-03,0.1,0.2,2.00,500\n"
                   "exit status: 0\n")
    lines = G.tma_lines(str(tma))
    assert lines[0].startswith("TMA check: PASS (exit status 0)") and "True" in lines[0]
    assert "fprop 128x128x64 1.00" in lines[1] and "2.0e-03" in lines[1]
    assert "wgrad 64x128x64 split4 2.00" in lines[1]
    tma.write_text("halo zero fill (negative TMA coordinates): False\nexit status: 1\n")
    assert G.tma_lines(str(tma))[0].startswith("TMA check: FAIL (exit status 1)")
    tma.write_text("SKIPPED: fastconv.bench.tma_gpu_check is not in this checkout\n")
    assert "SKIPPED" in G.tma_lines(str(tma))[0]
    assert G.tma_lines(str(tmp_path / "none.txt")) == ["TMA check: no output"]
    over = tmp_path / "overhead.txt"
    over.write_text("│ conv2d forward │ 480.1 │ 21.0 │ 22.86x │\n│ other │\n")
    assert any("480.1" in line for line in G.overhead_lines(str(over)))


def test_summary_shows_the_measured_ceilings(tmp_path):
    env = tmp_path / "env.txt"
    env.write_text("torch 2.11.0\ndevice NVIDIA H200, sm_90, 132 SMs, 140 GiB, L2 60 MiB\n"
                   "measured device copy: 4260 GB/s (read + write, 512 MiB)\n"
                   "measured bf16 matmul 8192^3: 711 TFLOP/s\n")
    assert G.env_lines(str(env)) == [
        "device NVIDIA H200, sm_90, 132 SMs, 140 GiB, L2 60 MiB",
        "measured device copy: 4260 GB/s (read + write, 512 MiB)",
        "measured bf16 matmul 8192^3: 711 TFLOP/s"]
    assert G.env_lines(str(tmp_path / "none.txt")) == []


def test_summary_command_without_a_csv(tmp_path, capsys):
    assert G.main(["summary", str(tmp_path / "missing.csv"), "--out",
                   str(tmp_path / "s.txt")]) == 0
    out = capsys.readouterr().out
    assert "no results CSV" in out and "TMA check: no output" in out
    assert (tmp_path / "s.txt").read_text().strip() == out.strip()


def test_warm_runs_the_selected_cases(capsys):
    code = G.main(["warm", "--models", "roi", "--ops", "roi_pool", "--dtypes", "float32",
                   "--layouts", "nchw", "--directions", "forward", "backward", "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "roi_pool/4x8x7x7 float32 nchw forward+both" in out and " ok" in out
    assert "1 case(s)" in out and "0 failed" in out
    code = G.main(["warm", "--models", "roi", "--ops", "roi_pool", "--dtypes", "float32",
                   "--layouts", "nchw", "--dry-run", "--shard", "1/2"])
    assert code == 0 and "0 case(s)" in capsys.readouterr().out


def test_csv_name_is_the_one_bench_chooses(capsys):
    assert G.main(["csv-name", "--dry-run"]) == 0
    name = capsys.readouterr().out.strip()
    env = _env()
    assert name == f"dry-{R._slug(env.device)}-{env.date}.csv"
    assert name.startswith("dry-cpu")


def test_gpu_run_script_parses():
    subprocess.run(["bash", "-n", str(REPO / "benchmarks" / "gpu_run.sh")], check=True)
