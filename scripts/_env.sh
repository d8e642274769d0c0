# Sourced by scripts/demo and scripts/test: make .venv (Python 3.11+) and install protolens into it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in python3.11 python3.12 python3.13 python3; do
    if command -v "$cand" >/dev/null 2>&1; then PY="$cand"; break; fi
  done
fi
"$PY" -c 'import sys; assert sys.version_info >= (3, 11), "protolens needs Python 3.11+"'
VENV="${PROTOLENS_VENV:-$ROOT/.venv}"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
install_protolens() {  # $1 = extras, e.g. server or dev
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
  # (setuptools' banner on every editable install warns of nothing that applies here)
  PYTHONWARNINGS="ignore:Editable installation" "$VENV/bin/python" -m pip install -q \
    --disable-pip-version-check -c "$ROOT/requirements-dev-constraints.txt" -e "$ROOT[$1]"
}
