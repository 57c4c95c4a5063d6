#!/usr/bin/env bash
# One GPU session from a fresh copy of the repository: machine info, the experiment suite
# (preflight included) at TF32, the trainer's throughput, and a profiler trace.
#
#   bash benchmarks/gpu_run.sh [--dry-run] MINUTES OUTDIR
#
# Needs python3 with torch and numpy (pandas for the experiments that build tables with it);
# installs nothing: the repository root goes on PYTHONPATH. Everything is written under
# OUTDIR: info.txt, suite.log and results/ (tables, sidecars, manifest.json), throughput.txt,
# record_norms.txt, profile/ (trace.json, key_averages.txt, profile.json), summary.txt. Each stage has a time
# limit (`timeout`); a failing stage is reported and the next one runs. The suite gets the
# budget less RESERVE_MIN minutes for the other stages. A preflight failure stops the suite
# before any long run; the script then reruns it without that experiment (up to 3 times),
# keeping the failed manifest as results/manifest-preflight-N.json.
#
# --dry-run: every stage on the CPU at tiny sizes (suite --dry-run, throughput at tiny widths,
# profile on the CPU), in a minute or two. Environment: PYTHON (default python3), LOWRANK_DATA
# (Fashion-MNIST; default <repo>/shared/data/fashion-mnist when there), GPU_RUN_ONLY (a comma
# list passed to the suite's --only), GPU_RUN_THREADS (CPU threads; default min(nproc, 8)).
set -euo pipefail

DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; shift; fi
if [[ $# -ne 2 ]]; then
    echo "usage: bash benchmarks/gpu_run.sh [--dry-run] MINUTES OUTDIR" >&2
    exit 2
fi
MINUTES=$1
OUT=$2
if ! [[ "$MINUTES" =~ ^[0-9]+([.][0-9]+)?$ ]] || [[ "$MINUTES" =~ ^0+([.]0+)?$ ]]; then
    echo "gpu_run.sh: MINUTES must be a number > 0, got '$MINUTES'" >&2
    exit 2
fi
if [[ -e "$OUT" && ! -d "$OUT" ]]; then
    echo "gpu_run.sh: OUTDIR '$OUT' is an existing file" >&2
    exit 2
fi

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
if [[ -z "${LOWRANK_DATA:-}" && -d "$ROOT/shared/data/fashion-mnist" ]]; then
    export LOWRANK_DATA="$ROOT/shared/data/fashion-mnist"
fi
THREADS=${GPU_RUN_THREADS:-$(( $(nproc) < 8 ? $(nproc) : 8 ))}
cd "$ROOT"

# minutes for the suite and the seconds each other stage may take
if (( DRY )); then
    RESERVE_MIN=0; SUITE_MIN=$MINUTES; T_INFO=60; T_BENCH=60; T_PROF=120; GRACE=60
else
    RESERVE_MIN=5; T_INFO=60; T_BENCH=60; T_PROF=60; GRACE=60  # 5 stages of <= 60 s
    SUITE_MIN=$("$PY" -c "import sys; m = float(sys.argv[1]); print(max(m - $RESERVE_MIN, m / 2))" "$MINUTES")
fi
START=$(date +%s)
SUMMARY=()

# run_stage NAME SECONDS LOGFILE CMD...: run CMD under `timeout`, append its output to LOGFILE
run_stage() {
    local name=$1 limit=$2 log=$3
    shift 3
    local t0 rc
    t0=$(date +%s)
    local cmd="$*"
    (( ${#cmd} > 240 )) && cmd="${cmd:0:240}..."
    echo "== $name (limit ${limit}s): $cmd" | tee -a "$log"
    set +e
    timeout --signal=TERM --kill-after=15 "$limit" "$@" >>"$log" 2>&1
    rc=$?
    set -e
    local took=$(( $(date +%s) - t0 ))
    local what="ok"
    if (( rc == 124 || rc == 137 )); then what="TIMED OUT"; elif (( rc != 0 )); then what="FAILED"; fi
    SUMMARY+=("$(printf '%-22s %-9s rc=%-3s %5ss  %s' "$name" "$what" "$rc" "$took" "$log")")
    echo "== $name: $what (rc=$rc, ${took}s)" | tee -a "$log"
    return 0
}

# --- 1. machine and versions -----------------------------------------------------------------
{
    echo "date: $(date -u +%FT%TZ)  host: $(uname -n)  dry run: $DRY  budget: $MINUTES min"
    echo "suite: $SUITE_MIN min; threads for torch: $THREADS; LOWRANK_DATA=${LOWRANK_DATA:-}"
    command -v lscpu >/dev/null 2>&1 && lscpu | grep -E 'Model name|^CPU\(s\)' || true
    if [[ -d "$ROOT/.git" ]] && command -v git >/dev/null 2>&1; then
        echo "commit: $(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
    fi
} >"$OUT/info.txt" 2>&1
if command -v nvidia-smi >/dev/null 2>&1; then
    run_stage nvidia-smi "$T_INFO" "$OUT/info.txt" nvidia-smi
    run_stage "nvidia-smi query" "$T_INFO" "$OUT/info.txt" nvidia-smi \
        --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv
else
    echo "nvidia-smi: not found" >>"$OUT/info.txt"
fi
VERSIONS='
import platform, sys
import numpy, torch
print("python", platform.python_version(), sys.executable)
print("torch", torch.__version__, "cuda", torch.version.cuda, "numpy", numpy.__version__)
print("cuda available:", torch.cuda.is_available())
for i in range(torch.cuda.device_count()):
    print(f"cuda:{i}", torch.cuda.get_device_name(i), torch.cuda.get_device_properties(i))
for mod in ("pandas", "scipy", "matplotlib", "seaborn", "tqdm", "safetensors"):
    try:
        print(mod, __import__(mod).__version__)
    except ImportError:
        print(mod, "missing")
from lowrank.data.fashion_mnist import data_problem
print("Fashion-MNIST:", data_problem() or "found")
'
run_stage versions "$T_INFO" "$OUT/info.txt" "$PY" -c "$VERSIONS"

# --- 2. the suite ----------------------------------------------------------------------------
RESULTS="$OUT/results"
EXCLUDE=""
for attempt in 1 2 3 4; do
    elapsed_min=$("$PY" -c "import sys; print(($(date +%s) - $START) / 60)")
    left=$("$PY" -c "import sys; print(round(max($SUITE_MIN - $elapsed_min, 0.05), 3))")
    args=(-m lowrank --threads "$THREADS" suite --minutes "$left" --out "$RESULTS" --quiet
          --precision tf32)
    if (( DRY )); then args+=(--dry-run --device cpu); else args+=(--scale full); fi
    [[ -n "${GPU_RUN_ONLY:-}" ]] && args+=(--only "$GPU_RUN_ONLY")
    [[ -n "$EXCLUDE" ]] && args+=(--exclude "$EXCLUDE")
    limit=$("$PY" -c "print(int($left * 60 + $GRACE))")
    run_stage "suite (try $attempt)" "$limit" "$OUT/suite.log" "$PY" "${args[@]}"
    # a preflight failure: keep that manifest, rerun without the experiment that failed
    failed=$("$PY" - "$RESULTS/manifest.json" <<'EOF' || true
import json, sys
try:
    m = json.load(open(sys.argv[1]))
except (OSError, ValueError):
    sys.exit(0)
if m["suite"]["status"] == "preflight failed":
    print(next(n for n, p in m["preflight"].items() if p.get("status") == "failed"))
EOF
)
    [[ -z "$failed" ]] && break
    cp "$RESULTS/manifest.json" "$RESULTS/manifest-preflight-$attempt.json"
    echo "preflight failed for $failed: rerunning the suite without it" | tee -a "$OUT/suite.log"
    EXCLUDE="${EXCLUDE:+$EXCLUDE,}$failed"
done

# --- 3. throughput: batched vs vmap vs naive, fp32 and tf32 ------------------------------------
if (( DRY )); then
    bench=(--device cpu --members 2 --steps 2 --d 8 --hidden 16 8 --n 16 --threads 1)
else
    bench=(--device cuda --members 40 --steps 50 --d 100 --hidden 1000 100 --n 1000)
fi
run_stage "throughput fp32" "$T_BENCH" "$OUT/throughput.txt" \
    "$PY" benchmarks/train_throughput.py "${bench[@]}" --peak-flops 67e12
run_stage "throughput tf32" "$T_BENCH" "$OUT/throughput.txt" \
    "$PY" benchmarks/train_throughput.py "${bench[@]}" --tf32 --peak-flops 495e12

# --- 3b. a record's spectral norms: svdvals against batched Lanczos (metrics.spectral_norm) -----
if (( DRY )); then
    norms=(--device cpu --members 2 --shape 50 70 --threads 1)
else
    norms=(--device cuda --members 16)
fi
run_stage "record norms" "$T_BENCH" "$OUT/record_norms.txt" \
    "$PY" benchmarks/record_norms.py "${norms[@]}"

# --- 4. profile of the slowest experiment's smoke spec ------------------------------------------
if (( DRY )); then
    prof=(--scale quick --device cpu --threads 1)
else
    prof=(--scale full --device cuda --threads "$THREADS")
fi
run_stage "profile" "$T_PROF" "$OUT/profile.log" \
    "$PY" benchmarks/profile_experiment.py --experiment auto --manifest "$RESULTS/manifest.json" \
    --precision tf32 --steps 5 --out "$OUT/profile" "${prof[@]}"

# --- 5. summary --------------------------------------------------------------------------------
{
    echo "gpu_run.sh $([[ $DRY == 1 ]] && echo '--dry-run ')$MINUTES $OUT: $(( $(date +%s) - START ))s"
    printf '%s\n' "${SUMMARY[@]}"
    "$PY" - "$RESULTS/manifest.json" <<'EOF' || echo "no suite manifest"
import json, sys
m = json.load(open(sys.argv[1]))
s = m["suite"]
print(f"suite: {s['status']} on {s['device_name']} at {s['precision']}, {s.get('elapsed_s')} s")
for name, e in m["experiments"].items():
    wall = f"{e['wall_s']:.3g} s" if e.get("wall_s") is not None else "-"
    pred = e.get("predicted_calibrated_s")
    pred = f"{pred:.3g} s" if pred is not None else "-"
    print(f"  {name:<20} {e['status']:<8} {e.get('precision', ''):<5} wall {wall:>9}"
          f"  predicted {pred:>9}  {e.get('reason', '')}")
EOF
} | tee "$OUT/summary.txt"
for line in "${SUMMARY[@]}"; do
    [[ "$line" == *" ok "* ]] || exit 1
done
exit 0
