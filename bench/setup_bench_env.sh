#!/usr/bin/env bash
# Create the benchmark's own virtual environment (.venv-bench, git-ignored).
#
# The throughput benchmark compares the engine with Lucent (torch-lucent), which
# needs torchvision and an old kornia. Neither belongs in the product, so they
# live only here. torchvision does not exist for the product's torch 2.13.0
# CPU build, so this venv uses torch 2.14.1 + torchvision 0.29.1 (on this
# machine pip takes both from local disk: a ~5.5 GB CUDA build, no download).
#
#   bash bench/setup_bench_env.sh            # creates /work/main/.venv-bench
#   BENCH_VENV=/tmp/vb bash bench/setup_bench_env.sh
#
# Re-running is cheap: pip skips what is already installed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${BENCH_VENV:-$ROOT/.venv-bench}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3

TORCH_VERSION="${BENCH_TORCH_VERSION:-2.14.1}"
TORCHVISION_VERSION="${BENCH_TORCHVISION_VERSION:-0.29.1}"
# torch-lucent 0.1.8 is the last release; it pins kornia<=0.4.1 itself.
LUCENT_VERSION="0.1.8"
KORNIA_VERSION="0.4.1"

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check)

# 1. torch + torchvision first, pinned together (the product's constraint file
#    pins torch 2.13.0, for which no torchvision exists: it is not used here).
"${PIP[@]}" "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"

# 2. Lucent with its own pins, resolved against the torch above.
"${PIP[@]}" "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" \
  "torch-lucent==$LUCENT_VERSION" "kornia==$KORNIA_VERSION"

# 3. protolens itself, editable, plus what the path-similarity references use
#    (scikit-image sample images, scipy).
"${PIP[@]}" "torch==$TORCH_VERSION" -e "$ROOT[server]" "scikit-image>=0.22" "scipy>=1.11"

"$VENV/bin/python" - <<'PY'
import torch, torchvision, lucent, kornia, protolens_server
print(f"bench venv ready: torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"kornia {kornia.__version__}, lucent from {lucent.__file__}")
PY
