"""The throughput harness's plumbing (runs, JSON, tables) on a tiny model. No timing checks.

Runs in the product venv, where torch-lucent is absent: the Lucent column must then be
skipped with a message that says how to get it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
sys.path.insert(0, str(BENCH))

import bench_scores  # noqa: E402
import throughput_report as report  # noqa: E402
from lucent_render import lucent_unavailable_reason  # noqa: E402
from protolens_server.engine import Classifier  # noqa: E402
from throughput_gpu import GpuSettings, _summary, _sweep, flops_per_image_step  # noqa: E402


def test_cpu_run_writes_json_and_prints_a_table(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    md = tmp_path / "table.md"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "throughput.py"), "--model", "tiny", "--steps", "3",
         "--reps", "2", "--classes", "0,1", "--json-out", str(out), "--md-out", str(md)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["mode"] == "cpu"
    assert result["settings"]["classes"] == [0, 1]
    engine = result["methods"]["engine"]
    assert engine["prototypes_per_call"] == 2
    assert len(engine["seconds_per_prototype_reps"]) == 2
    assert engine["seconds_per_prototype"] > 0
    assert all(0.0 <= p <= 1.0 for p in engine["target_probabilities"])
    finder = result["finder"]  # the default finds the rate: timed once, apart
    assert finder["lr"] > 0 and finder["seconds"] > 0
    assert "engine learning-rate finder: lr" in proc.stderr
    table = md.read_text()
    assert table in proc.stdout
    assert "| method | prototypes per call | s / prototype |" in table
    assert "| engine | 2 |" in table
    lucent = result["methods"]["lucent"]
    if lucent_unavailable_reason() is not None:
        assert "Lucent column skipped" in lucent["skipped"]
        assert "setup_bench_env.sh" in lucent["skipped"]
        assert "Lucent column skipped" in proc.stderr
        assert "| lucent | — |" in table
        assert result["ratios"]["throughput"] is None
        assert result["ratios"]["first_call_throughput"] is None
    else:
        assert lucent["prototypes_per_call"] == 1
        ratios = result["ratios"]
        assert ratios["throughput"] > ratios["first_call_throughput"] > 0


def test_gpu_sweep_code_runs_on_cpu_with_a_tiny_model() -> None:
    handle = bench_scores.tiny_handle()
    classifier = Classifier(handle.module, handle.input_spec, handle.num_classes)
    flops = flops_per_image_step(
        handle.module, handle.input_spec, torch.device("cpu"), autocast=False, weight_grads=False
    )
    settings = GpuSettings(
        device="cpu", archs=("tiny",), size=32, steps=2, batches=(1, 3),
        memory_budget_gib=None, autocast=True, channels_last=True, compile=False,
        lucent_classes=1, matmul_n=64, seed=0,
    )  # fmt: skip
    runs = _sweep("tiny", classifier, flops, 1.0, settings, log=lambda _: None)
    assert [r["batch"] for r in runs] == [1, 3]
    assert all(r["peak_bytes"] is None and r["peak_mib_per_prototype"] is None for r in runs)
    summary = _summary(runs, None, flops, 1.0, settings)
    assert summary["best_batch"] in (1, 3)
    assert summary["speedup_vs_lucent"] is None
    result = {
        "settings": {**settings.__dict__},
        "device": {"name": "cpu", "memory_gib": None, "torch": torch.__version__,
                   "matmul_tflops": 1.0, "matmul_dtype": "float32", "matmul_n": 64},
        "runs": runs, "summary": {"tiny": summary}, "notes": ["a note"],
    }  # fmt: skip
    text = report.gpu_markdown(result)
    assert text.count("| tiny | engine |") == 2
    assert "- tiny: best engine batch" in text and "- a note" in text


def test_flop_count_sees_weight_gradients() -> None:
    handle = bench_scores.tiny_handle()
    cpu = torch.device("cpu")
    module = handle.module
    frozen = flops_per_image_step(
        module, handle.input_spec, cpu, autocast=False, weight_grads=False
    )
    module.requires_grad_(True)
    try:
        full = flops_per_image_step(
            module, handle.input_spec, cpu, autocast=False, weight_grads=True
        )
    finally:
        module.requires_grad_(False)
    # forward of the tiny CNN: two convs + linear, 2 FLOPs per multiply-add
    forward = 2 * (32 * 32 * 8 * 27 + 16 * 16 * 16 * 72 + 16 * 10)
    assert frozen >= forward
    assert full > frozen


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, "—"), (0.0, "0"), (1234.5, "1234"), (0.012345, "0.0123"), (2.0, "2.00"), (True, "yes")],
)
def test_cells(value: object, text: str) -> None:
    assert report.fmt(value) == text
