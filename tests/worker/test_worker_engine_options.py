"""The worker's engine execution options (Settings.engine_compile, gpu_memory_budget)."""

from __future__ import annotations

import warnings

import pytest
import torch
from protolens_server.config import Settings
from protolens_server.engine import InputSpec
from protolens_server.models.handle import ModelHandle
from protolens_server.worker.runner import run_engine
from torch import nn
from worker_helpers import tiny_config, tiny_spec


def _eager_handle() -> ModelHandle:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5),
    ).eval()  # fmt: skip
    return ModelHandle("eager", "test:eager", net, InputSpec(3, 16, 16), tuple("abcde"), "0" * 64)


def test_settings_read_the_engine_options_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("PROTOLENS_ENGINE_COMPILE", "true")
    monkeypatch.setenv("PROTOLENS_GPU_MEMORY_BUDGET", "0.5")
    s = Settings()
    assert s.engine_compile is True and s.gpu_memory_budget == 0.5
    monkeypatch.setenv("PROTOLENS_GPU_MEMORY_BUDGET", "1.5")
    with pytest.raises(Exception, match="gpu_memory_budget"):
        Settings()


def test_compiled_worker_run_makes_the_eager_prototypes() -> None:
    """run_engine(compile=True), as a worker with engine_compile runs it: same prototypes."""
    handle = _eager_handle()
    jobs = [tiny_spec("0" * 64, (0, 1), steps=4), tiny_spec("0" * 64, (2,), steps=4, seed=3)]
    eager = run_engine(handle, jobs, device="cpu")
    from torch._dynamo.utils import counters

    counters.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback to eager would warn
        compiled = run_engine(handle, jobs, device="cpu", compile=True, memory_budget=0.5)
    assert counters["stats"]["unique_graphs"] >= 1  # dynamo really compiled the forward
    for a, b in zip(eager, compiled, strict=True):
        for p, q in zip(a, b, strict=True):
            assert p.target == q.target
            assert torch.allclose(p.image, q.image, atol=1e-3)


def test_a_worker_without_compile_never_imports_torch_dynamo(worker_settings, tiny_digest) -> None:
    """The worker's start-up warm-up imports ``torch._dynamo`` (about 1.5 s, 70 MB) only
    for ``engine_compile``: a worker that starts, runs a job with the equidistant start
    and stops, in a process of its own, has not imported it."""
    import subprocess
    import sys
    from pathlib import Path

    settings = worker_settings.model_copy(update={"key_prefix": "plw-dynamo"})
    config = {**tiny_config(4), "start": "equidistant", "equidistant_steps": 2}
    script = f"""
import asyncio, sys
sys.path[:0] = [{str(Path(__file__).parent)!r}, {str(Path(__file__).parents[1])!r}]
from protolens_server.config import Settings
from protolens_server.queue.jobs import JobQueue
from protolens_server.queue.records import JobSpec
from protolens_server.worker.worker import Worker
from worker_helpers import tiny_spec, tiny_config

async def main():
    settings = Settings.model_validate_json({settings.model_dump_json()!r})
    queue = await JobQueue.connect(settings)
    record, _ = await queue.submit(tiny_spec({tiny_digest!r}, config={config!r}, seed=5))
    await Worker(settings, name="w-dynamo").run(burst=True)
    done = await queue.get(record.job_id)
    await queue.close()
    print(done.state.value, "torch._dynamo" in sys.modules)

asyncio.run(main())
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "SUCCEEDED False", done.stdout
