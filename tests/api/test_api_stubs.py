"""The committed stubs are exactly what the protos generate; the protos pass `buf lint`."""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STUBS = ROOT / "client" / "protolens" / "v1"


def test_regenerated_stubs_are_byte_identical(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_proto"), "--out", str(tmp_path)], check=True
    )
    fresh = tmp_path / "protolens" / "v1"
    generated = sorted(p.name for p in fresh.iterdir())
    committed = sorted(p.name for p in STUBS.iterdir() if p.suffix in (".py", ".pyi"))
    assert generated == [n for n in committed if n != "__init__.py"], "stub files differ"
    _same, mismatch, errors = filecmp.cmpfiles(fresh, STUBS, generated, shallow=False)
    assert not mismatch and not errors, f"stale stubs {mismatch + errors}: run scripts/gen_proto"


def _buf() -> str | None:
    local = ROOT / ".tools" / "node_modules" / ".bin" / "buf"
    return str(local) if local.exists() else shutil.which("buf")


@pytest.mark.skipif(_buf() is None, reason="buf not installed (npm install @bufbuild/buf)")
def test_buf_lint_standard_is_clean() -> None:
    env = {**os.environ, "BUF_CACHE_DIR": str(ROOT / ".tools" / "buf-cache")}
    result = subprocess.run(
        [_buf(), "lint"], cwd=ROOT / "proto", capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_client_imports_without_torch() -> None:
    code = "import sys; sys.modules['torch'] = None; import protolens, protolens.client"
    subprocess.run([sys.executable, "-c", code], check=True)
