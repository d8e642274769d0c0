"""Queue fixtures: a JobQueue on the flushed test Redis, specs, and a consumer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from protolens_server.config import Settings
from protolens_server.queue.delivery import QueueConsumer
from protolens_server.queue.jobs import JobQueue


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Settings:
    return Settings(
        redis_url=redis_url,
        blob_url=str(tmp_path / "blobs"),
        key_prefix="pltest",
        reclaim_idle_s=0.2,
        heartbeat_s=0.05,
        max_attempts=3,
        job_retention_s=3600,
    )


@pytest.fixture
async def queue(settings: Settings) -> AsyncIterator[JobQueue]:
    q = await JobQueue.connect(settings)
    yield q
    await q.close()


@pytest.fixture
def consumer_factory(queue: JobQueue, settings: Settings):
    def make(name: str = "w1") -> QueueConsumer:
        return QueueConsumer(queue.redis, settings, name)

    return make
