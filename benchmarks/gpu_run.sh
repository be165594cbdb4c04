#!/usr/bin/env bash
# One GPU run of fastconv's benchmarks, prepared to run in a single call (benchmarks/README.md,
# "gpu_run.sh"): install the checkout, record the environment, compile every kernel in parallel
# processes, check TMA's negative coordinates, then time (GPU time and eager time against cuDNN /
# torchvision) the ResNet-50, VGG-16 and ResNeXt-50 layers in bf16, the mobile and depthwise
# layers in bf16 and fp16 and the RoI ops in fp32/fp16/bf16, then the host overhead; a short
# summary last. Every step runs under its own `timeout`, fitted into what is left of a total
# budget, and writes its results under $OUT as it finishes.
#
#   OUT=/some/dir bash benchmarks/gpu_run.sh                     # on the GPU machine
#   FASTCONV_GPU_RUN_DRY=1 OUT=/tmp/out PYTHON=.../python bash benchmarks/gpu_run.sh
#                                  # rehearsal without a GPU: tiny shapes, Triton's interpreter
#
# Settings (environment): OUT (default ./gpu-run-out), PYTHON (default python3),
# FASTCONV_GPU_RUN_DRY=1, FASTCONV_GPU_RUN_BUDGET (seconds for everything, default 420),
# FASTCONV_GPU_RUN_INSTALL=0 (use the fastconv already importable), FASTCONV_GPU_RUN_ROI_LAYOUTS
# (default nchw), FASTCONV_AUTOTUNE (default 0, as the warm-up), FASTCONV_BENCH_WARMUP_MS /
# FASTCONV_BENCH_REP_MS (do_bench's budgets, default 15 / 60 here).
#
# Files under $OUT (at most 8, none in subfolders): env.txt, run.log (every step's output),
# <gpu>-<date>.csv (every timed variant, growing step by step), tma_check.txt, overhead.txt,
# summary.txt.
set -u -o pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${OUT:-$PWD/gpu-run-out}
PY=${PYTHON:-python3}
DRY=${FASTCONV_GPU_RUN_DRY:-0}
BUDGET=${FASTCONV_GPU_RUN_BUDGET:-420}
RESERVE=25            # seconds kept back for the summary
ROI_LAYOUTS=${FASTCONV_GPU_RUN_ROI_LAYOUTS:-nchw}
export PYTHONUNBUFFERED=1
# the rehearsal runs fastconv's kernels under Triton's interpreter
[[ $DRY == 1 ]] && export TRITON_INTERPRET=${TRITON_INTERPRET:-1}
export FASTCONV_AUTOTUNE=${FASTCONV_AUTOTUNE:-0}
export FASTCONV_BENCH_WARMUP_MS=${FASTCONV_BENCH_WARMUP_MS:-15}
export FASTCONV_BENCH_REP_MS=${FASTCONV_BENCH_REP_MS:-60}

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
LOG=$OUT/run.log
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fastconv-gpu-run.XXXXXX")
START=$SECONDS
: >"$LOG"

log() { printf '[%4ds] %s\n' $((SECONDS - START)) "$*" | tee -a "$LOG"; }
# the timeout for a step that wants $1 seconds: no more than the budget leaves (less the
# summary's reserve); 0 when too little is left to start it
limit() {
    local want=$1 left
    left=$((BUDGET - (SECONDS - START) - RESERVE))
    ((left < want)) && want=$left
    ((want < 10)) && want=0
    echo "$want"
}
# run NAME WANT CMD...: CMD under its timeout, its output appended to $STEP_LOG (run.log
# unless a step says otherwise); its exit status
STEP_LOG=$LOG
run() {
    local name=$1 want=$2 t rc
    shift 2
    t=$(limit "$want")
    if ((t == 0)); then
        log "$name: SKIPPED, the budget of ${BUDGET}s is spent"
        return 125
    fi
    log "$name (timeout ${t}s)"
    echo "\$ $*" >>"$STEP_LOG"
    timeout -k 10 "$t" "$@" >>"$STEP_LOG" 2>&1
    rc=$?
    log "$name: exit status $rc$( ((rc == 124 || rc == 137)) && echo ' (TIMED OUT)')"
    return "$rc"
}

log "fastconv GPU run: checkout $REPO, OUT=$OUT, dry=$DRY, budget ${BUDGET}s, python $PY"

# ------------------------------------------------------------------ 1. install the checkout
# from a copy (pip builds in its source folder), then run from a folder outside it, so that
# the installed package is what runs
SRC=$WORK/src
mkdir -p "$SRC" "$WORK/run"
tar -C "$REPO" --exclude=.git --exclude=build --exclude='*.egg-info' --exclude=.gl \
    --exclude=.whl --exclude=gpu-run-out -cf - . | tar -C "$SRC" -xf -
if [[ ${FASTCONV_GPU_RUN_INSTALL:-1} == 0 ]]; then
    log "install: skipped (FASTCONV_GPU_RUN_INSTALL=0), using the fastconv importable now"
elif [[ $DRY == 1 ]]; then
    # the rehearsal installs into a folder of its own, used through PYTHONPATH: the same
    # build, without touching the environment it runs in
    if run "install (pip --target)" 180 "$PY" -m pip install --no-deps --no-build-isolation \
        --no-index --no-compile --target "$WORK/site" "$SRC"; then
        export PYTHONPATH=$WORK/site${PYTHONPATH:+:$PYTHONPATH}
    fi
else
    if ! run "install" 180 "$PY" -m pip install --no-deps --no-build-isolation --no-index \
        --no-compile "$SRC"; then
        log "install into the environment failed: trying a --target folder"
        if run "install (pip --target)" 120 "$PY" -m pip install --no-deps \
            --no-build-isolation --no-index --no-compile --target "$WORK/site" "$SRC"; then
            export PYTHONPATH=$WORK/site${PYTHONPATH:+:$PYTHONPATH}
        fi
    fi
fi
cd "$WORK/run" || exit 1

# ------------------------------------------------------------------ 2. the environment
{
    echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "checkout: $REPO, commit $(git -C "$REPO" rev-parse HEAD 2>/dev/null \
        || echo "${FASTCONV_RUN_COMMIT:-unknown (no .git)}")"
    echo "cpus: $(nproc)"
    if command -v nvidia-smi >/dev/null; then
        timeout 30 nvidia-smi --format=csv --query-gpu=name,driver_version,clocks.sm,\
clocks.max.sm,clocks.mem,temperature.gpu,power.draw,memory.used
        timeout 30 nvidia-smi
    else
        echo "nvidia-smi: not found"
    fi
} >"$OUT/env.txt" 2>&1
MEASURE=()
[[ $DRY == 1 ]] && MEASURE=(--no-measure)
STEP_LOG=$OUT/env.txt run "environment" 90 "$PY" -m fastconv.bench.gpu_run env "${MEASURE[@]}"

DRYARG=()
[[ $DRY == 1 ]] && DRYARG=(--dry-run)
CSVNAME=$(timeout 60 "$PY" -m fastconv.bench.gpu_run csv-name "${DRYARG[@]}" 2>>"$LOG" |
    tail -n 1)
[[ $CSVNAME == *.csv ]] || CSVNAME=results.csv
CSV=$OUT/$CSVNAME
log "results CSV: $CSV"

# ------------------------------------------------------------------ 3. warm-up + TMA check
# one process per model group and dtype (the larger groups in two shards), each running every
# case's forward and backward once at the timed size, so that the timing pass compiles
# nothing; the TMA check's correctness half runs beside them (no timing there)
CONV=(--layouts channels_last --batches 32 --directions forward backward)
ROI=(--models roi --layouts "$ROI_LAYOUTS" --directions forward backward)
WARM=(
    "--models resnet50 --dtypes bfloat16 --shard 0/2"
    "--models resnet50 --dtypes bfloat16 --shard 1/2"
    "--models vgg16 --dtypes bfloat16"
    "--models resnext50_32x4d --dtypes bfloat16 --shard 0/2"
    "--models resnext50_32x4d --dtypes bfloat16 --shard 1/2"
    "--models mobilenet_v2 --dtypes bfloat16"
    "--models mobilenet_v2 --dtypes float16"
    "--models shufflenet_v2_x1_0 --dtypes bfloat16 float16"
    "--models depthwise --dtypes bfloat16"
    "--models depthwise --dtypes float16"
)
if [[ $DRY == 1 ]]; then
    # the rehearsal: a case or two per process, tiny shapes
    WARM=("--models resnet50 --dtypes bfloat16 --match layer1.0.conv2/ --dry-run"
        "--models depthwise --dtypes float16 --match features.2.conv --dry-run")
fi
TMA_OUT=$WORK/tma_check.txt
have_tma=0
if "$PY" -c "import importlib.util as u, sys
sys.exit(u.find_spec('fastconv.bench.tma_gpu_check') is None)" 2>>"$LOG"; then
    have_tma=1
fi
t=$(limit 200)
((t == 0)) && WARM=()   # (`timeout 0` would mean no timeout at all)
log "warm-up: ${#WARM[@]} conv processes + RoI (timeout ${t}s each), TMA check beside them"
pids=()
i=0
for spec in "${WARM[@]}"; do
    # shellcheck disable=SC2086  # spec is a list of words
    timeout -k 10 "$t" "$PY" -m fastconv.bench.gpu_run warm $spec "${CONV[@]}" \
        >"$WORK/warm-$i.log" 2>&1 &
    pids+=($!)
    i=$((i + 1))
done
ROI_DTYPES=(--dtypes float32 float16 bfloat16)
if ((t > 0)); then
    timeout -k 10 "$t" "$PY" -m fastconv.bench.gpu_run warm "${ROI[@]}" "${ROI_DTYPES[@]}" \
        "${DRYARG[@]}" >"$WORK/warm-$i.log" 2>&1 &
    pids+=($!)
fi
t_tma=$(limit 150)
if [[ $DRY == 1 ]]; then
    echo "SKIPPED: a dry run has no GPU for the TMA check" >"$TMA_OUT"
elif ((have_tma && t_tma > 0)); then
    (
        # bf16 only: every pass and tile of the TMA kernels compiles here, beside the warm-up
        timeout -k 10 "$t_tma" "$PY" -m fastconv.bench.tma_gpu_check --no-time --dtypes bfloat16
        echo "exit status: $?"
    ) >"$TMA_OUT" 2>&1 &
    pids+=($!)
elif ((have_tma)); then
    echo "SKIPPED: the budget of ${BUDGET}s is spent" >"$TMA_OUT"
else
    echo "SKIPPED: fastconv.bench.tma_gpu_check is not in this checkout" >"$TMA_OUT"
fi
((${#pids[@]})) && wait "${pids[@]}"
for f in "$WORK"/warm-*.log; do
    [[ -e $f ]] || continue
    echo "--- $(basename "$f")" >>"$LOG"
    cat "$f" >>"$LOG"
done
grep -h '^warm shard' "$WORK"/warm-*.log 2>/dev/null | while read -r line; do log "  $line"; done
cp "$TMA_OUT" "$OUT/tma_check.txt"
log "warm-up done; TMA check: $(grep -m1 -E '^(halo|SKIPPED)' "$TMA_OUT" ||
    echo 'no verdict line') ($(tail -n 1 "$TMA_OUT"))"

# ------------------------------------------------------------------ 4. timing
# bench NAME WANT DRY_MATCH ARGS...: one fastconv bench run; its rows appended to the CSV
part=0
bench() {
    local name=$1 want=$2 match=$3 rc n
    shift 3
    local args=("$@" --no-plot --csv "$WORK/part-$part.csv")
    [[ $DRY == 1 ]] && args+=(--dry-run)
    [[ $DRY == 1 && -n $match ]] && args+=(--match "$match")
    # every row is also appended to a partial CSV as it is measured: what a step cut short
    # by its timeout (or a crash) leaves
    local partial=$WORK/part-$part.partial.csv from
    FASTCONV_BENCH_PARTIAL_CSV=$partial run "bench $name" "$want" "$PY" -m fastconv bench \
        "${args[@]}"
    rc=$?
    from=$WORK/part-$part.csv
    [[ -s $from ]] || from=$partial
    if [[ -s $from ]]; then
        if [[ -s $CSV ]]; then
            tail -n +2 "$from" >>"$CSV"
        else
            cp "$from" "$CSV"
        fi
        n=$(($(wc -l <"$from") - 1))
        log "bench $name: $n row(s) added to $(basename "$CSV")$([[ $from == "$partial" ]] \
            && echo " (from the rows measured before it ended)")"
    else
        log "bench $name: no rows (exit status $rc)"
    fi
    part=$((part + 1))
}
BF16=(--dtypes bfloat16)
FP16=(--dtypes float16)
MOBILE=(--models mobilenet_v2 shufflenet_v2_x1_0 depthwise)
bench "resnet50 bf16" 150 layer1.0.conv2/ --models resnet50 "${BF16[@]}" "${CONV[@]}"
bench "vgg16+resnext50 bf16" 180 features.2/ --models vgg16 resnext50_32x4d "${BF16[@]}" \
    "${CONV[@]}"
bench "mobile+depthwise bf16" 150 features.2.conv "${MOBILE[@]}" "${BF16[@]}" "${CONV[@]}"
bench "mobile+depthwise fp16" 150 features.2.conv "${MOBILE[@]}" "${FP16[@]}" "${CONV[@]}"
bench "roi fp32/fp16/bf16" 120 "" "${ROI[@]}" "${ROI_DTYPES[@]}"

# ------------------------------------------------------------------ 5. host overhead
if "$PY" -m fastconv bench --help 2>/dev/null | grep -q -- '--overhead'; then
    STEP_LOG=$OUT/overhead.txt run "host overhead" 90 "$PY" -m fastconv bench --overhead
    rc=$?
    ((rc == 125)) && echo "SKIPPED: the budget of ${BUDGET}s is spent" >"$OUT/overhead.txt"
    cat "$OUT/overhead.txt" >>"$LOG"
    echo "exit status: $rc" >>"$OUT/overhead.txt"
else
    log "host overhead: SKIPPED, this fastconv bench has no --overhead"
    echo "SKIPPED: fastconv bench has no --overhead" >"$OUT/overhead.txt"
fi

# ------------------------------------------------------------------ 6. TMA check, timed
t_tma=$(limit 90)
if [[ $DRY != 1 ]] && ((have_tma && t_tma >= 60)); then
    (
        echo "--- timed (GPU time of the TMA kernel and of cuDNN, CUDA graphs)"
        timeout -k 10 "$t_tma" "$PY" -m fastconv.bench.tma_gpu_check --dtypes bfloat16
        echo "exit status: $?"
    ) >>"$TMA_OUT" 2>&1
    cp "$TMA_OUT" "$OUT/tma_check.txt"
    log "TMA check, timed: $(tail -n 1 "$TMA_OUT")"
fi

# ------------------------------------------------------------------ 7. summary, last
log "done in $((SECONDS - START))s; summary:"
timeout 60 "$PY" -m fastconv.bench.gpu_run summary "$CSV" --tma "$OUT/tma_check.txt" \
    --overhead "$OUT/overhead.txt" --env "$OUT/env.txt" --out "$OUT/summary.txt" 2>>"$LOG" \
    || echo "summary failed: see $LOG"
rm -rf "$WORK"
