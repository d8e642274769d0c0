"""Worker fixtures: a temporary model store and reference root, settings, a JobQueue."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from protolens_server.config import Settings
from protolens_server.models.catalog import ModelCatalog
from protolens_server.queue.jobs import JobQueue
from worker_helpers import WorkerProcess, make_references, make_store


@pytest.fixture(scope="session")
def store_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("worker-store")
    make_store(root)
    make_references(root)
    return root


@pytest.fixture(scope="session")
def tiny_digest(store_root: Path) -> str:
    return ModelCatalog(store_root / "models", builtins=False).describe("tiny").digest


@pytest.fixture
def worker_settings(redis_url: str, store_root: Path) -> Settings:
    return Settings(
        redis_url=redis_url,
        key_prefix="plw",
        model_store=store_root / "models",
        reference_root=store_root / "refs",
        builtin_models=False,
        device="cpu",
        heartbeat_s=0.1,
        reclaim_idle_s=1.0,
        max_attempts=2,
        max_batch=8,
        shutdown_grace_s=0.5,
        metrics_port=0,
    )


@pytest.fixture
async def wqueue(worker_settings: Settings) -> AsyncIterator[JobQueue]:
    q = await JobQueue.connect(worker_settings)
    yield q
    await q.close()


@pytest.fixture
def processes() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for w in started:
        if w.proc.poll() is None:
            w.proc.kill()
        w.proc.wait(10)
