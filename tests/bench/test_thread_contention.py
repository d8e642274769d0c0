"""bench/thread_contention.py: a short real run writes its table and JSON.

Two variants on the small CNN, beside one busy process (the script starts and stops
it): every child really ran the engine (a positive step rate), the worker's variant
chose fewer threads than torch's default beside the busy process. No timing
assertions.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from protolens_server.cpu_budget import available_cpus

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "thread_contention.py"


@pytest.mark.skipif(available_cpus() < 2, reason="needs two CPUs")
def test_a_short_run_writes_its_table(tmp_path: Path) -> None:
    out = tmp_path / "tc.json"
    run = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--models",
            "cnn_bn-32px",
            "--hogs",
            "1",
            "--reps",
            "1",
            "--seconds",
            "1.5",
            "--variants",
            "torch default",
            "protolens worker",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "| cnn_bn-32px | 1 | none |" in run.stdout
    (row,) = json.loads(out.read_text())["rows"]
    assert all(v > 0 for v in row["steps_per_s"].values())
    assert row["threads"]["torch default"] >= 2
    assert row["threads"]["protolens worker"] < row["threads"]["torch default"]
