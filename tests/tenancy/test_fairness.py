"""Fair scheduling with a real worker: a tenant's flood does not delay another's single job.

Tenant A queues 200 one-target jobs; tenant B then queues one. With the old
strict FIFO B would wait for all 200; with round robin over tenants B's job
runs in the next batch, so at most one batch of A's jobs starts after B asked
and before B's job. Priorities still order work within a tenant.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from protolens_server.config import Settings
from protolens_server.models.catalog import ModelCatalog
from protolens_server.queue.jobs import JobQueue
from protolens_server.queue.records import JobState
from protolens_server.worker.worker import Worker
from tenancy_support import tiny_job

BATCH = 4


@pytest.fixture
def fair_settings(redis_url: str, tiny_store: Path, tmp_path: Path) -> Settings:
    return Settings(
        redis_url=redis_url,
        key_prefix="plfair",
        model_store=tiny_store,
        builtin_models=False,
        device="cpu",
        heartbeat_s=0.2,
        reclaim_idle_s=5.0,
        max_batch=BATCH,
        max_queued_jobs=10_000,
        shutdown_grace_s=0.5,
        metrics_port=0,
    )


@pytest.mark.parametrize("prefetch", [False, True], ids=["no-prefetch", "prefetch"])
async def test_one_tenants_flood_delays_another_by_at_most_one_batch(
    fair_settings: Settings, tiny_store: Path, prefetch: bool
) -> None:
    """Without prefetch B's job runs in the batch after the running one; with prefetch
    (docs/queue.md) the batch already claimed behind the running one goes first too:
    at most two of A's batches, however many A queued."""
    settings = fair_settings.model_copy(update={"worker_prefetch": prefetch})
    ahead = 2 if prefetch else 1  # batches of A's that may start before B's
    digest = ModelCatalog(tiny_store, builtins=False).describe("tiny").digest
    queue = await JobQueue.connect(settings)
    try:
        flood = [(await queue.submit(tiny_job(digest, "tenant-a", seed)))[0] for seed in range(200)]
        async with Worker(settings, name="w-fair") as worker:
            assert await worker.run_once() == BATCH  # A's first batch is under way
            single, _ = await queue.submit(tiny_job(digest, "tenant-b", 10_000))
            asked_at = single.created_at
            urgent, _ = await queue.submit(tiny_job(digest, "tenant-a", 20_000, priority=0))
            for _ in range(ahead):
                assert await worker.run_once() == BATCH
            b = await queue.get(single.job_id)
            assert b.state == JobState.SUCCEEDED, "B's job waited behind A's flood"
            a_records = [await queue.get(j.job_id) for j in flood]
            started_between = [
                r for r in a_records if r.started_at and asked_at <= r.started_at <= b.started_at
            ]
            assert len(started_between) <= ahead * BATCH  # A's flood did not go first
            # Within A, the p0 job comes before A's remaining p1 jobs.
            assert await worker.run_once() == BATCH
            assert (await queue.get(urgent.job_id)).state == JobState.SUCCEEDED
            states = [(await queue.get(r.job_id)).state for r in a_records]
            waiting = states.count(JobState.QUEUED)
            claimed = states.count(JobState.RUNNING)  # a prefetched batch, not yet started
            assert claimed == (BATCH if prefetch else 0)
            assert waiting >= 200 - (ahead + 2) * BATCH - claimed  # the batches run + claimed
            stats = await queue.stats()
            assert stats["queue_depth"]["1"] == waiting
            # KEDA's signal (XLEN of the priority streams) still counts waiting + running.
            assert await queue.redis.xlen(queue.keys.stream(1)) == waiting + claimed
    finally:
        await queue.close()


async def test_running_quota_holds_a_tenant_back_but_not_others(
    fair_settings: Settings, tiny_store: Path, tmp_path: Path
) -> None:
    quota_file = tmp_path / "tenants.yaml"
    quota_file.write_text("tenants:\n  tenant-a:\n    max_running_jobs: 1\n")
    settings = fair_settings.model_copy(update={"tenants_file": quota_file})
    digest = ModelCatalog(tiny_store, builtins=False).describe("tiny").digest
    queue = await JobQueue.connect(settings)
    try:
        a_jobs = [(await queue.submit(tiny_job(digest, "tenant-a", s)))[0] for s in range(3)]
        b_jobs = [(await queue.submit(tiny_job(digest, "tenant-b", 100 + s)))[0] for s in range(3)]
        async with Worker(settings, name="w-quota") as worker:
            assert await worker.run_once() == 4  # 1 of A's (its limit) + 3 of B's
            a_states = [(await queue.get(j.job_id)).state for j in a_jobs]
            b_states = [(await queue.get(j.job_id)).state for j in b_jobs]
            assert a_states.count(JobState.SUCCEEDED) == 1
            assert b_states == [JobState.SUCCEEDED] * 3
            assert await worker.run_once() == 1  # the limit frees up once A's job is done
            assert await worker.run_once() == 1
        final = [(await queue.get(j.job_id)).state for j in a_jobs]
        assert final == [JobState.SUCCEEDED] * 3
    finally:
        await queue.close()
