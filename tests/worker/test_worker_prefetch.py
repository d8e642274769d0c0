"""Prefetch: the next batch is claimed while the engine runs one (Settings.worker_prefetch).

Nothing lost or run twice, a cancel still ends a prefetched job before it runs, and a
stopping worker hands its prefetched jobs back for another worker.
"""

from __future__ import annotations

import asyncio

from protolens_server.queue.records import JobPhase, JobState
from protolens_server.worker import Worker
from worker_helpers import tiny_spec

EIGHT = tuple(range(8))  # fills a batch of max_batch=8 images on its own


async def _wait_for(wqueue, job_id: str, ok, timeout: float = 60.0):  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        record = await wqueue.get(job_id)
        if ok(record):
            return record
        assert asyncio.get_running_loop().time() < deadline, record
        await asyncio.sleep(0.05)


def _prefetched(record) -> bool:  # type: ignore[no-untyped-def]
    return (
        record.state == JobState.RUNNING
        and record.step == 0
        and "claimed" in (record.phase_message or "")
    )


async def test_every_job_runs_once_across_prefetched_batches(wqueue, worker_settings, tiny_digest):
    specs = [
        tiny_spec(tiny_digest, (i % 10,), seed=100 + i, tenant=f"t{i % 4}", steps=12)
        for i in range(20)
    ]
    records = [(await wqueue.submit(s))[0] for s in specs]
    worker = Worker(worker_settings, name="w-prefetch")
    await asyncio.wait_for(worker.run(burst=True), 120)
    assert worker.batches_run == 3  # 8 + 8 + 4 images
    assert worker.batches_prefetched >= 1
    for record in records:
        done = await wqueue.get(record.job_id)
        assert done.state == JobState.SUCCEEDED and done.attempts == 1, done
        assert len(done.prototypes) == 1 and done.step == 12
    assert worker._prefetched is None and not worker._carry


async def test_off_runs_the_same_jobs_without_prefetching(wqueue, worker_settings, tiny_digest):
    settings = worker_settings.model_copy(update={"worker_prefetch": False})
    records = [
        (await wqueue.submit(tiny_spec(tiny_digest, (i,), seed=200 + i, steps=4)))[0]
        for i in range(10)
    ]
    worker = Worker(settings, name="w-no-prefetch")
    await asyncio.wait_for(worker.run(burst=True), 120)
    assert worker.batches_run == 2 and worker.batches_prefetched == 0
    for record in records:
        assert (await wqueue.get(record.job_id)).state == JobState.SUCCEEDED


async def test_cancel_ends_a_prefetched_job_before_it_runs(wqueue, worker_settings, tiny_digest):
    long, _ = await wqueue.submit(tiny_spec(tiny_digest, EIGHT, seed=1, steps=400))
    waiting, _ = await wqueue.submit(tiny_spec(tiny_digest, (3,), seed=2, steps=400))
    worker = Worker(worker_settings, name="w-prefetch-cancel")
    task = asyncio.create_task(worker.run())
    try:
        claimed = await _wait_for(wqueue, waiting.job_id, _prefetched)
        assert claimed.phase == JobPhase.PREPARING and claimed.worker == "w-prefetch-cancel"
        await wqueue.cancel(waiting.job_id, tenant="team-a")
        done = await _wait_for(wqueue, waiting.job_id, lambda r: r.state.finished, 10)
        assert done.state == JobState.CANCELLED and done.step == 0
        assert (await wqueue.get(long.job_id)).state == JobState.RUNNING  # unaffected
        await wqueue.cancel(long.job_id, tenant="team-a")
        await _wait_for(wqueue, long.job_id, lambda r: r.state.finished, 30)
        await asyncio.sleep(0.5)  # the worker would have started the prefetched batch by now
        assert worker.batches_prefetched == 0 and worker.batches_run == 0
        again = await wqueue.get(waiting.job_id)
        assert again.state == JobState.CANCELLED and again.step == 0 and again.attempts == 1
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, 30)


async def test_stopping_hands_prefetched_jobs_back(wqueue, worker_settings, tiny_digest):
    settings = worker_settings.model_copy(update={"shutdown_grace_s": 0.0})
    long, _ = await wqueue.submit(tiny_spec(tiny_digest, EIGHT, seed=3, steps=400))
    waiting, _ = await wqueue.submit(tiny_spec(tiny_digest, (5,), seed=4, steps=6))
    first = Worker(settings, name="w-prefetch-stop")
    task = asyncio.create_task(first.run())
    await _wait_for(wqueue, waiting.job_id, _prefetched)
    first.request_stop()
    await asyncio.wait_for(task, 30)
    assert first.batches_prefetched == 0
    back = await wqueue.get(waiting.job_id)
    assert back.state == JobState.QUEUED, back
    second = Worker(worker_settings, name="w-prefetch-after")
    await asyncio.wait_for(second.run(burst=True), 120)
    for job in (long, waiting):
        done = await wqueue.get(job.job_id)
        assert done.state == JobState.SUCCEEDED and done.worker == "w-prefetch-after", done


async def test_a_prefetch_never_takes_the_running_jobs_own_entry(
    wqueue, worker_settings, tiny_digest
):
    """The running job's entry outgrows reclaim_idle_s between heartbeats (here: always);
    the prefetch's reclaim then finds it, and must not claim the job a second time."""
    settings = worker_settings.model_copy(update={"heartbeat_s": 30.0, "reclaim_idle_s": 0.05})
    record, _ = await wqueue.submit(tiny_spec(tiny_digest, EIGHT, seed=5, steps=60))
    worker = Worker(settings, name="w-prefetch-own")
    await asyncio.wait_for(worker.run(burst=True), 120)
    done = await wqueue.get(record.job_id)
    assert done.state == JobState.SUCCEEDED and done.attempts == 1, done
    assert worker.batches_run == 1 and worker.batches_prefetched == 0


class _StoreWaitsForTheNextEngine(Worker):
    """A worker whose first store waits (up to 60 s) until the other job is optimising:
    with the overlap that happens while it waits; without it the next engine cannot start
    before this store returns, and the wait runs out."""

    def __init__(self, *args, queue, job_ids, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.watched_queue, self.job_ids = queue, job_ids
        self.waited = False
        self.next_engine_started_during_store: bool | None = None

    async def _store(self, done, pack, started) -> None:  # type: ignore[no-untyped-def]
        if not self.waited:
            self.waited = True
            storing = {d.job_id for d, _ in done}
            (other,) = [j for j in self.job_ids if j not in storing]
            deadline = asyncio.get_running_loop().time() + 60
            while asyncio.get_running_loop().time() < deadline:
                record = await self.watched_queue.get(other)
                if record.phase == JobPhase.OPTIMISING or record.state == JobState.SUCCEEDED:
                    self.next_engine_started_during_store = True
                    break
                await asyncio.sleep(0.02)
            else:
                self.next_engine_started_during_store = False
        await super()._store(done, pack, started)


async def test_a_batch_is_stored_while_the_engine_runs_the_next(
    wqueue, worker_settings, tiny_digest
):
    """run()'s loop starts the prefetched batch's engine without waiting for the batch
    before it to be scored and stored (run_once still stores before it returns). The first
    store holds until the next job is optimising: an ordering, not a race of timings."""
    settings = worker_settings.model_copy(update={"max_batch": 1})
    specs = [tiny_spec(tiny_digest, (c,), seed=c, steps=30, reference_set="refset") for c in (1, 2)]
    first, second = [(await wqueue.submit(s))[0] for s in specs]
    worker = _StoreWaitsForTheNextEngine(
        settings, name="w-overlap", queue=wqueue, job_ids=[first.job_id, second.job_id]
    )
    await asyncio.wait_for(worker.run(burst=True), 180)
    assert worker.batches_run == 2 and worker.batches_prefetched == 1
    done = [await wqueue.get(r.job_id) for r in (first, second)]
    assert all(d.state == JobState.SUCCEEDED and d.attempts == 1 for d in done), done
    assert all(p.scores_key for d in done for p in d.prototypes)  # scored
    assert worker.next_engine_started_during_store is True
