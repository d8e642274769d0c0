"""Many jobs' progress and final writes in one round trip (``queue/batch_calls.py``):
each job gets its own answer, a lost delivery is refused alone, and a flushed script
cache (a Redis restart) is survived without running any call twice."""

from __future__ import annotations

import pytest
from protolens_server.queue.delivery import FinishedJob
from protolens_server.queue.jobs import JobQueue
from protolens_server.queue.records import JobState, StoredPrototype
from queue_helpers import make_spec


@pytest.fixture
def redis_url(redis_server_factory) -> str:  # type: ignore[no-untyped-def]
    """A Redis of this module's own: ``SCRIPT FLUSH`` empties the script cache of the whole
    server, every database, so on the Redis the test processes share it would fail another
    process's script call (redis-py reloads and retries those once; a flush between the
    reload and the retry failed a ``JobQueue.submit`` in CI)."""
    return redis_server_factory().url


def _finished(delivery, png: bytes) -> FinishedJob:  # type: ignore[no-untyped-def]
    t = delivery.record.spec.targets[0]
    proto = StoredPrototype(t, 0, 0.8, 3.0, [(t.classes[0], 0.8)], 8, delivery.record.spec.seed)
    return FinishedJob(delivery, [proto], [png], 8, [b"tensor-" + png])


async def _claim_three(queue: JobQueue, consumer):  # type: ignore[no-untyped-def]
    records = [(await queue.submit(make_spec(seed=i)))[0] for i in range(3)]
    entries = await consumer.read(3)
    deliveries = [(await consumer.claim(e))[1] for e in entries]
    assert sorted(d.job_id for d in deliveries) == sorted(r.job_id for r in records)
    return deliveries


async def test_progress_and_finish_many_answer_per_job(queue: JobQueue, consumer_factory):
    consumer = consumer_factory()
    deliveries = await _claim_three(queue, consumer)
    updates = [(d, 4, 8, 0.5, "OPTIMISING", "optimising 1 image") for d in deliveries]
    assert await consumer.progress_many(updates) == [True, True, True]
    assert {(await queue.get(d.job_id)).step for d in deliveries} == {4}
    # the first job's result is refused (another delivery owns it now), the others stored
    stale = deliveries[0]
    await queue.redis.hset(queue.keys.job(stale.job_id), "owner", "someone-else")
    jobs = [_finished(d, f"png{i}".encode()) for i, d in enumerate(deliveries)]
    assert await consumer.finish_many(jobs) == [False, True, True]
    assert await consumer.finish_many(jobs) == [False, False, False]  # never stored twice
    for i, d in enumerate(deliveries[1:], start=1):
        done = await queue.get(d.job_id)
        assert done.state == JobState.SUCCEEDED and done.step == 8
        assert await queue.get_png(d.job_id, 0) == f"png{i}".encode()
    assert (await queue.get(stale.job_id)).state == JobState.RUNNING


async def test_a_flushed_script_cache_is_reloaded_and_each_call_runs_once(
    queue: JobQueue, consumer_factory
):
    consumer = consumer_factory()
    deliveries = await _claim_three(queue, consumer)
    await queue.redis.script_flush()
    updates = [(d, 2, 8, 0.4, "OPTIMISING", "") for d in deliveries]
    assert await consumer.progress_many(updates) == [True, True, True]
    await queue.redis.script_flush()
    jobs = [_finished(d, b"png") for d in deliveries]
    assert await consumer.finish_many(jobs) == [True, True, True]
    for d in deliveries:
        events = [e async for _, e in queue.watch(d.job_id)]
        steps = [e.step for e in events if e.state == JobState.RUNNING and e.phase]
        assert steps == [2]  # one progress event each: no call ran twice
        assert events[-1].state == JobState.SUCCEEDED


async def test_a_flush_between_the_reload_and_the_rerun_is_survived(
    queue: JobQueue, consumer_factory, monkeypatch
):
    """Another client's ``SCRIPT FLUSH`` (or a failover) can land right after the reload:
    the rerun answers NOSCRIPT again and is run once more, still once per call."""
    consumer = consumer_factory()
    deliveries = await _claim_three(queue, consumer)
    redis = consumer.redis
    real_load = redis.script_load
    flushes = []

    async def load_then_flush(script: str) -> str:  # the real load, then a real flush
        sha = await real_load(script)
        if not flushes:
            flushes.append(await redis.script_flush())
        return sha

    monkeypatch.setattr(redis, "script_load", load_then_flush)
    await queue.redis.script_flush()  # this module's own Redis: no other process reloads it
    updates = [(d, 2, 8, 0.4, "OPTIMISING", "") for d in deliveries]
    assert await consumer.progress_many(updates) == [True, True, True]
    assert flushes  # the flush did land between the load and the rerun
    for d in deliveries:
        assert (await queue.get(d.job_id)).step == 2


async def test_claim_many_answers_per_entry_and_peek_specs_reads_them_all(
    queue: JobQueue, consumer_factory
):
    records = [(await queue.submit(make_spec(seed=i)))[0] for i in range(3)]
    consumer = consumer_factory()
    entries = await consumer.read(3)
    assert [e.job_id for e in entries] == [r.job_id for r in records]
    await queue.redis.delete(queue.keys.job(records[2].job_id))  # its record expired
    peeked = await consumer.peek_specs([e.job_id for e in entries])
    assert [s.seed if s else None for s, _ in peeked] == [0, 1, None]
    assert peeked[0][1] == records[0].cache_key
    await queue.cancel(records[1].job_id)  # cancelled after it was read, before its claim
    chosen = [(e, ck or "") for e, (_, ck) in zip(entries, peeked, strict=True)]
    answers = await consumer.claim_many(chosen)
    assert [outcome for outcome, _ in answers] == ["run", "lost", "gone"]
    delivery = answers[0][1]
    assert delivery is not None and delivery.attempt == 1 and delivery.job_id == records[0].job_id
    assert (await queue.get(records[0].job_id)).state == JobState.RUNNING
    assert (await queue.get(records[1].job_id)).state == JobState.CANCELLED


async def test_cancel_requested_names_only_the_flagged_jobs(queue: JobQueue, consumer_factory):
    consumer = consumer_factory()
    deliveries = await _claim_three(queue, consumer)
    assert await consumer.cancel_requested(deliveries) == []
    await queue.cancel(deliveries[1].job_id)  # RUNNING: the flag is set for its worker
    assert await consumer.cancel_requested(deliveries) == [deliveries[1]]
    assert await consumer.cancel_requested([]) == []


async def test_a_claim_reuses_the_peeked_spec(queue: JobQueue, consumer_factory):
    """The claim's record carries the spec parsed at the peek (not parsed a second time),
    and equals the record read on its own."""
    record, _ = await queue.submit(make_spec(seed=7))
    consumer = consumer_factory()
    entries = await consumer.read(1)
    ((spec, ck),) = await consumer.peek_specs([entries[0].job_id])
    ((outcome, delivery),) = await consumer.claim_many([(entries[0], ck or "")], [spec])
    assert outcome == "run" and delivery is not None and delivery.record.spec is spec
    assert delivery.record == await queue.get(record.job_id)
