"""Forming a batch reads, peeks and claims its jobs a batch at a time, not a job at a time.

The prefetch forms the next batch while the engine runs, and every Redis round trip costs
the engine thread a hand-over of the GIL: a batch of 8 jobs takes a handful of round trips
(it took three per job). Room held for a job whose claim fails is given back.
"""

from __future__ import annotations

import pytest
from protolens_server.queue.records import JobState
from protolens_server.worker import Worker
from protolens_server.worker.batching import Batch
from redis.asyncio.client import Pipeline, Redis
from worker_helpers import tiny_config, tiny_spec


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every command sent alone and every pipeline executed, by any client of this process."""
    sent: list[str] = []
    command, execute = Redis.execute_command, Pipeline.execute

    async def counted_command(self, *args, **options):  # type: ignore[no-untyped-def]
        sent.append(str(args[0]))
        return await command(self, *args, **options)

    async def counted_execute(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        sent.append(f"pipeline of {len(self.command_stack)}")
        return await execute(self, *args, **kwargs)

    monkeypatch.setattr(Redis, "execute_command", counted_command)
    monkeypatch.setattr(Pipeline, "execute", counted_execute)
    return sent


async def test_a_batch_of_eight_jobs_takes_a_few_round_trips(
    wqueue, worker_settings, tiny_digest, round_trips
):
    quiet = worker_settings.model_copy(update={"heartbeat_s": 60.0, "cancel_poll_s": 60.0})
    async with Worker(quiet, name="w-reads") as worker:
        await wqueue.submit(tiny_spec(tiny_digest, (9,), seed=99))
        assert len(await worker.next_batch()) == 1  # Redis has loaded the scripts now
        records = [
            (await wqueue.submit(tiny_spec(tiny_digest, (i,), seed=i, tenant=f"t{i % 3}")))[0]
            for i in range(8)
        ]
        round_trips.clear()
        batch = await worker.next_batch()
        trips = list(round_trips)
        assert len(batch) == 8 and batch.images == 8 and not worker._carry
        # reclaim (XPENDING per priority stream, and of the consumer holding the first
        # job), one TAKE, one peek pipeline, one claim pipeline: 7 (was 4 + 3 per job)
        assert len(trips) <= 8, trips
        assert "pipeline of 8" in trips
        assert {d.job_id for d in batch.deliveries} == {r.job_id for r in records}
        for d in batch.deliveries:
            record = await wqueue.get(d.job_id)
            assert record.state == JobState.RUNNING and record.worker == "w-reads"


async def test_jobs_that_do_not_fit_are_passed_over_and_stay_queued(
    wqueue, worker_settings, tiny_digest
):
    other = tiny_config(steps=7)  # another config: another batch
    first = [(await wqueue.submit(tiny_spec(tiny_digest, (i,), seed=i)))[0] for i in range(3)]
    odd, _ = await wqueue.submit(tiny_spec(tiny_digest, (5,), seed=9, config=other))
    last, _ = await wqueue.submit(tiny_spec(tiny_digest, (6,), seed=10))
    async with Worker(worker_settings, name="w-pass") as worker:
        batch = await worker.next_batch()
        assert {d.job_id for d in batch.deliveries} == {r.job_id for r in (*first, last)}
        assert (await wqueue.get(odd.job_id)).state == JobState.QUEUED
        following = await worker.next_batch()  # handed back: the next batch takes it
        assert [d.job_id for d in following.deliveries] == [odd.job_id]


def test_planned_room_counts_until_added_or_given_back(tiny_digest):
    batch = Batch(3)
    a, b = tiny_spec(tiny_digest, (1,)), tiny_spec(tiny_digest, (2, 3))
    other = tiny_spec(tiny_digest, (4,), config=tiny_config(steps=7))
    assert batch.plan(a) and batch.plan(b) and batch.full
    assert not batch.plan(a)  # no room left
    batch.unplan(b)  # its claim failed
    assert batch.images == 1 and not batch.full and not batch.plan(other)  # a's config holds
    batch.unplan(a)
    assert batch.images == 0 and batch.key == "" and batch.plan(other)  # empty: any config
