"""The worker side of the queue: retries, dead letters, reclaim, hand-back, watch, stats."""

from __future__ import annotations

import asyncio

from protolens_server.queue.jobs import JobQueue
from protolens_server.queue.records import JobState, StoredPrototype
from queue_helpers import make_spec


def _protos(delivery) -> list[StoredPrototype]:
    return [
        StoredPrototype(t, 0, 0.8, 3.0, [(t.classes[0], 0.8)], 8, delivery.record.spec.seed)
        for t in delivery.record.spec.targets
    ]


async def _take(consumer, *, reclaim: bool = False):
    entries = await (consumer.reclaim(1) if reclaim else consumer.read(1))
    assert len(entries) == 1
    outcome, delivery = await consumer.claim(entries[0])
    return outcome, delivery


async def test_failing_job_is_retried_then_dead_lettered(queue: JobQueue, consumer_factory):
    record, _ = await queue.submit(make_spec())
    consumer = consumer_factory()
    for attempt in (1, 2, 3):
        outcome, delivery = await _take(consumer)
        assert outcome == "run" and delivery.attempt == attempt
        expected = "retry" if attempt < 3 else "dead"
        assert await consumer.end(delivery, "retry", error=f"boom {attempt}") == expected
    final = await queue.get(record.job_id)
    assert final.state == JobState.FAILED and final.error == "boom 3" and final.attempts == 3
    dead = await queue.redis.xrange(queue.keys.dead)
    assert len(dead) == 1 and dead[0][1][b"job"] == record.job_id.encode()
    assert dead[0][1][b"error"] == b"boom 3"
    assert await queue.redis.xlen(queue.keys.stream(1)) == 0
    # Not in flight any more: the same request queues a new job.
    _, outcome = await queue.submit(make_spec())
    assert outcome == "queued"


async def test_dead_worker_job_is_reclaimed_and_stored_once(queue: JobQueue, consumer_factory):
    record, _ = await queue.submit(make_spec())
    slow, rescuer = consumer_factory("slow"), consumer_factory("rescuer")
    _, first = await _take(slow)
    assert await rescuer.reclaim(1) == []  # still fresh
    await asyncio.sleep(0.3)  # > reclaim_idle_s with no heartbeat
    outcome, second = await _take(rescuer, reclaim=True)
    assert outcome == "run" and second.attempt == 2 and second.took_over
    # The slow worker wakes up: it lost the job, its result is refused.
    await slow.heartbeat([first])
    assert first.lost
    assert not await slow.finish(first, _protos(first), [b"slow"], step=8)
    assert await rescuer.finish(second, _protos(second), [b"rescued"], step=8)
    assert not await rescuer.finish(second, _protos(second), [b"again"], step=8)
    final = await queue.get(record.job_id)
    assert final.state == JobState.SUCCEEDED and final.worker == "rescuer"
    assert await queue.get_png(record.job_id, 0) == b"rescued"
    assert await queue.redis.xlen(queue.keys.stream(1)) == 0


async def test_heartbeat_keeps_a_long_job_from_being_reclaimed(queue, consumer_factory):
    await queue.submit(make_spec())
    worker, other = consumer_factory("busy"), consumer_factory("other")
    _, delivery = await _take(worker)
    for _ in range(5):
        await asyncio.sleep(0.1)
        await worker.heartbeat([delivery])
        assert await other.reclaim(1) == []
    assert not delivery.lost


async def test_job_of_a_worker_that_always_dies_ends_dead(queue, consumer_factory):
    record, _ = await queue.submit(make_spec())
    for i in range(3):
        await asyncio.sleep(0.25)
        outcome, _ = await _take(consumer_factory(f"doomed{i}"), reclaim=i > 0)
        assert outcome == "run"
    await asyncio.sleep(0.25)
    outcome, _ = await _take(consumer_factory("last"), reclaim=True)
    assert outcome == "dead"
    final = await queue.get(record.job_id)
    assert final.state == JobState.FAILED and "gave up after 3 deliveries" in final.error
    assert await queue.redis.xlen(queue.keys.dead) == 1


async def test_handback_lets_another_worker_take_the_job_at_once(queue, consumer_factory):
    record, _ = await queue.submit(make_spec())
    leaving, staying = consumer_factory("leaving"), consumer_factory("staying")
    _, delivery = await _take(leaving)
    assert await leaving.end(delivery, "handback") == "handback"
    assert (await queue.get(record.job_id)).state == JobState.QUEUED
    outcome, again = await _take(staying, reclaim=True)
    assert outcome == "run" and again.attempt == 1  # a hand-back is not a failed attempt
    assert not again.took_over


async def test_cancel_while_entry_read_but_not_started(queue, consumer_factory):
    record, _ = await queue.submit(make_spec())
    consumer = consumer_factory()
    (entry,) = await consumer.read(1)
    await queue.cancel(record.job_id)
    assert await consumer.hold(entry) is False
    assert (await consumer.claim(entry))[0] == "lost"
    assert (await queue.get(record.job_id)).state == JobState.CANCELLED


async def test_priorities_are_read_high_first(queue, consumer_factory):
    low, _ = await queue.submit(make_spec(seed=1, priority=2))
    normal, _ = await queue.submit(make_spec(seed=2, priority=1))
    high, _ = await queue.submit(make_spec(seed=3, priority=0))
    entries = await consumer_factory().read(3)
    assert [e.job_id for e in entries] == [high.job_id, normal.job_id, low.job_id]


async def test_watch_replays_then_follows_until_finished_and_resumes(queue, consumer_factory):
    record, _ = await queue.submit(make_spec())
    consumer = consumer_factory()
    seen: list = []

    async def watch() -> None:
        async for entry_id, event in queue.watch(record.job_id, tenant="team-a"):
            seen.append((entry_id, event))

    watcher = asyncio.create_task(watch())
    _, delivery = await _take(consumer)
    await consumer.progress(delivery, 4, 8, 0.5)
    await asyncio.sleep(0.05)
    assert not watcher.done()
    await consumer.finish(delivery, _protos(delivery), [b"x"], step=8)
    await asyncio.wait_for(watcher, 5)
    states = [e.state for _, e in seen]
    assert states[0] == JobState.QUEUED and states[-1] == JobState.SUCCEEDED
    assert any(e.step == 4 and e.best_probability == 0.5 for _, e in seen)
    resumed = [e async for _, e in queue.watch(record.job_id, after=seen[1][0])]
    assert resumed == [e for _, e in seen[2:]]
    # Resuming after the final event answers at once with how the job ended.
    started = asyncio.get_running_loop().time()
    tail = [e async for _, e in queue.watch(record.job_id, after=seen[-1][0])]
    assert [e.state for e in tail] == [JobState.SUCCEEDED]
    assert asyncio.get_running_loop().time() - started < 0.5


async def test_watch_delivers_a_final_event_that_lands_while_it_checks_the_record(
    queue, consumer_factory, monkeypatch
):
    """The watch is caught up, then checks whether the job ended; if the job finishes in
    between, its real final event is delivered (once, with its own cursor), not a
    stand-in that repeats the last cursor (seen once in the API-restart fault test)."""
    record, _ = await queue.submit(make_spec())
    consumer = consumer_factory()
    _, delivery = await _take(consumer)
    await consumer.progress(delivery, 4, 8, 0.5)
    real_get = queue.get
    calls = []

    async def get_finishing_first(job_id, *, tenant=None):
        calls.append(job_id)
        if len(calls) == 2:  # the watch's "did it end?" check, after it caught up
            await consumer.finish(delivery, _protos(delivery), [b"x"], step=8)
        return await real_get(job_id, tenant=tenant)

    monkeypatch.setattr(queue, "get", get_finishing_first)
    seen = [(i, e) async for i, e in queue.watch(record.job_id, tenant="team-a")]
    stream = [i.decode() for i, _ in await queue.redis.xrange(queue.keys.events(record.job_id))]
    assert len(calls) == 2
    assert [i for i, _ in seen] == stream  # every event once, the final one included
    assert seen[-1][1].state == JobState.SUCCEEDED


async def test_stats_and_gauges(queue, consumer_factory):
    from protolens_server import metrics

    await queue.submit(make_spec(seed=1, priority=0))
    await queue.submit(make_spec(seed=2))
    await queue.submit(make_spec(seed=3))
    consumer = consumer_factory()
    (entry,) = await consumer.read(1)
    _, delivery = await consumer.claim(entry)
    await consumer.heartbeat([delivery])
    await asyncio.sleep(0.01)
    stats = await queue.update_metrics()
    assert stats["queue_depth"] == {"0": 0, "1": 2, "2": 0}
    assert stats["jobs_by_state"]["QUEUED"] == 2 and stats["jobs_by_state"]["RUNNING"] == 1
    assert stats["workers_alive"] == 1 and stats["dead_letters"] == 0
    assert stats["oldest_queued_age_s"] > 0
    assert metrics.REGISTRY.get_sample_value("protolens_queue_depth", {"priority": "1"}) == 2
