"""Tiny models in a temporary model store, reference sets, and job specs for worker tests.

(A unique module name: tests/ folders are not packages.)
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
import warnings
from pathlib import Path

import torch
from child_env import child_env
from PIL import Image
from protolens_server import ENGINE_VERSION
from protolens_server.config import Settings
from protolens_server.engine import GenerationConfig, Target
from protolens_server.queue.jobs import JobQueue
from protolens_server.queue.records import JobSpec
from torch import nn

SIZE, CLASSES = 32, 10
SIDECAR = {
    "channels": 3,
    "height": SIZE,
    "width": SIZE,
    "mean": 0.5,
    "std": 0.25,
    "class_names": [f"class{i}" for i in range(CLASSES)],
}


class TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(16, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


class PoisonCNN(TinyCNN):
    """Loads fine, fails on every forward pass that the optimisation makes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad:
            raise RuntimeError("poisoned model: forward always fails")
        return self.head(self.features(x).flatten(1))


def make_store(root: Path) -> Path:
    """A model store with ``tiny`` (TorchScript) and ``poison``; returns its folder."""
    store = root / "models"
    store.mkdir(parents=True, exist_ok=True)
    for name, cls in (("tiny", TinyCNN), ("poison", PoisonCNN)):
        torch.manual_seed(0)
        net = cls().eval()
        with warnings.catch_warnings():  # TorchScript is deprecated, still a supported format
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.script(net).save(str(store / f"{name}.pt"))
        (store / f"{name}.json").write_text(json.dumps(SIDECAR))
    return store


def make_references(root: Path, classes: tuple[int, ...] = (1, 2, 3)) -> Path:
    """``<root>/refs/refset/<class>/*.png``: a few random images per class."""
    refs = root / "refs"
    g = torch.Generator().manual_seed(0)
    for c in classes:
        folder = refs / "refset" / str(c)
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(3):
            arr = (torch.rand(SIZE, SIZE, 3, generator=g) * 255).to(torch.uint8).numpy()
            Image.fromarray(arr, "RGB").save(folder / f"{i}.png")
    return refs


def tiny_config(steps: int = 6, **changes: object) -> dict:
    return GenerationConfig(
        steps=steps,
        transforms="small",
        start="constant",
        equidistant_steps=0,
        progress_every=1,
        autocast=False,
        channels_last=False,
        **changes,  # type: ignore[arg-type]
    ).to_dict()


def tiny_spec(
    digest: str,
    classes: tuple[int, ...] = (1,),
    *,
    model: str = "tiny",
    steps: int = 6,
    seed: int = 0,
    reference_set: str = "",
    tenant: str = "team-a",
    config: dict | None = None,
) -> JobSpec:
    return JobSpec(
        model=model,
        model_digest=digest,
        targets=tuple(Target((c,)) for c in classes),
        config=config or tiny_config(steps),
        seed=seed,
        reference_set=reference_set,
        reference_digest="refs-v1" if reference_set else "",
        engine_version=ENGINE_VERSION,
        tenant=tenant,
    )


class WorkerProcess:
    """``python -m protolens_server.worker`` on ``settings``' Redis and model store, its
    output in ``log``; ``env``: more variables (``PROTOLENS_ENGINE_PROCESS``, ...)."""

    def __init__(
        self,
        settings: Settings,
        name: str,
        log: Path,
        *args: str,
        grace: str = "0.3",
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        base = child_env()
        base.update(
            PROTOLENS_REDIS_URL=settings.redis_url,
            PROTOLENS_KEY_PREFIX=settings.key_prefix,
            PROTOLENS_MODEL_STORE=str(settings.model_store),
            PROTOLENS_REFERENCE_ROOT=str(settings.reference_root),
            PROTOLENS_BUILTIN_MODELS="false",
            PROTOLENS_DEVICE="cpu",
            PROTOLENS_PROGRESS_INTERVAL_S=str(settings.progress_interval_s),
            PROTOLENS_HEARTBEAT_S="0.2",
            PROTOLENS_RECLAIM_IDLE_S="1.5",
            PROTOLENS_MAX_ATTEMPTS="3",
            PROTOLENS_SHUTDOWN_GRACE_S=grace,
            PROTOLENS_METRICS_PORT="0",
            PROTOLENS_WORKER_NAME=name,
        )
        base.update(env or {})
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "protolens_server.worker", "--log-format", "text", *args],
            env=base,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")


async def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def alive(queue: JobQueue, name: str) -> bool:
    return await queue.redis.zscore(queue.keys.workers, name) is not None


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def metric(text: str, line_start: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.split()[-1])
    return 0.0
