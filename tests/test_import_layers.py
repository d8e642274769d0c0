"""The server's layers (docs/architecture.md): no import points up, no import cycle, every
room has a layer. ``scripts/import_layers.py`` measures; this runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "import_layers.py"


def test_no_import_points_up_and_no_cycle() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert " 0 imports pointing up, 0 cycles" in done.stdout


def test_the_measure_sees_an_upward_import_and_a_cycle(tmp_path: Path) -> None:
    """Rooms and layers as the script draws them, on a small package it is pointed at."""
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import import_layers as layers
    finally:
        sys.path.pop(0)
    pkg = tmp_path / "server" / "protolens_server"
    (pkg / "queue").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "errors.py").write_text("from protolens_server.queue import jobs\n")
    (pkg / "queue" / "__init__.py").write_text("")
    (pkg / "queue" / "jobs.py").write_text("from protolens_server import errors\n")
    old = layers.SOURCE
    layers.SOURCE = pkg
    try:
        result = layers.measure()
    finally:
        layers.SOURCE = old
    assert result["imports_pointing_up"] == [
        "protolens_server.errors -> protolens_server.queue.jobs (errors 0 < queue 5)"
    ]
    assert result["cycles"] == [["protolens_server.errors", "protolens_server.queue.jobs"]]
