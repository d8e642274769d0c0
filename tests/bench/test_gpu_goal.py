"""bench/gpu_check.sh and bench/gpu_goal.py run on this CPU (``--device cpu --tiny``).

The GPU run is rare and short: these tests make sure the script it runs works before a
GPU is lent. They check the plumbing (one table, JSON with the card, torch version and
date, the bare-model ratio, the profile, what was not measured), never the speed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _gpu_check(out: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable}
    proc = subprocess.run(
        ["bash", "bench/gpu_check.sh", "--device", "cpu", "--tiny", "--", *extra,
         "--results-dir", str(out / "results")],
        capture_output=True, text=True, timeout=600, cwd=ROOT, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, json.loads((out / "gpu_goal.json").read_text())


def test_tiny_run_reports_goal_bare_ratio_and_profile(tmp_path: Path) -> None:
    proc, result = _gpu_check(tmp_path, "--no-quality")
    goal, bare = result["goal"], result["bare"]
    assert goal["classes"] == 20 and goal["steps"] == 4 and goal["chunks"] >= 1
    assert goal["measured"] is False  # a tiny run is never reported as the goal
    assert goal["seconds"] > 0 and bare["batch"] == goal["chunk_size"]
    ratio = goal["image_steps_per_second"] / bare["image_steps_per_second"]
    assert result["ratio_vs_bare"] == pytest.approx(ratio)
    top = result["profile"]["top"]
    assert top and all(row["name"].startswith("aten::") for row in top)
    assert sum(row["percent"] for row in top) <= 100.0 + 1e-6
    assert result["machine"]["torch"] and result["date"]
    table = (tmp_path / "gpu_goal.md").read_text()
    assert table in proc.stdout  # the one table is printed
    assert "| engine / bare |" in table
    assert "NOT MEASURED: the goal call" in table
    assert "NOT MEASURED: time to quality" in table
    assert "correctness checks NOT run" in proc.stdout
    assert "quality" not in result
    dated = list((tmp_path / "results").glob("gpu_goal_cpu_tiny_*.json"))
    assert len(dated) == 1 and json.loads(dated[0].read_text())["goal"] == goal


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("PROTOLENS_SLOW") != "1", reason="set PROTOLENS_SLOW=1")
def test_tiny_run_measures_time_to_quality(tmp_path: Path) -> None:
    """EfficientNet-Lite0 at 1-2 steps against the Lucent reference: ~50 CPU-seconds."""
    _, result = _gpu_check(tmp_path, "--no-profile")
    quality = result["quality"]
    assert quality["reference_path_similarity"] is not None
    assert quality["rungs"][0]["steps"] == 1
    reached = quality["seconds_to_quality"]
    last = quality["rungs"][-1]
    if reached is None:
        assert last["path_similarity"] is None or (
            last["path_similarity"] < quality["reference_path_similarity"]
        )
    else:
        assert reached == last["seconds"]
        assert last["path_similarity"] >= quality["reference_path_similarity"]
