"""Linger (Settings.worker_batch_linger_ms): an idle worker that claimed a batch below its
budget waits a bounded time for more jobs of the same config before it starts it.

A burst submitted one by one fills one batch (without the linger the first job runs
alone), a lone job waits about the linger and no more, a full batch does not wait, and a
stop or a cancel during the wait loses nothing.
"""

from __future__ import annotations

import asyncio

import pytest
from protolens_server import metrics
from protolens_server.queue.records import JobState
from protolens_server.worker import Worker
from worker_helpers import alive, tiny_spec, wait_for

EIGHT = tuple(range(8))  # fills a batch of max_batch=8 images on its own


def _lingered_seconds() -> float:
    return metrics.REGISTRY.get_sample_value("protolens_batch_linger_seconds_sum") or 0.0


async def _idle_worker(settings, name: str, wqueue) -> tuple[Worker, asyncio.Task[None]]:  # type: ignore[no-untyped-def]
    """A worker in run()'s loop, blocked on its read of an empty queue."""
    worker = Worker(settings, name=name)
    task = asyncio.create_task(worker.run())
    await wait_for(lambda: alive(wqueue, name), 60, "the worker to start")
    await asyncio.sleep(0.3)
    return worker, task


async def _finished(wqueue, job_id: str, timeout: float = 60.0):  # type: ignore[no-untyped-def]
    async def done():  # type: ignore[no-untyped-def]
        record = await wqueue.get(job_id)
        return record if record.state.finished else None

    return await wait_for(done, timeout, f"job {job_id} to finish")


@pytest.mark.parametrize("linger_ms", [0, 5000])
async def test_a_burst_submitted_one_by_one_fills_one_batch(
    wqueue, worker_settings, tiny_digest, linger_ms
):
    settings = worker_settings.model_copy(update={"worker_batch_linger_ms": linger_ms})
    worker, task = await _idle_worker(settings, f"w-linger-burst-{linger_ms}", wqueue)
    try:
        ids = []
        for i in range(8):  # one image each: 8 fill max_batch
            record, _ = await wqueue.submit(tiny_spec(tiny_digest, (i,), seed=300 + i))
            ids.append(record.job_id)
            await asyncio.sleep(0.25)  # the worker, idle, wakes for the first job
        records = [await _finished(wqueue, j) for j in ids]
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, 30)
    assert all(r.state == JobState.SUCCEEDED and r.attempts == 1 for r in records), records
    if linger_ms:
        assert worker.batches_run == 1 and worker.batches_lingered == 1
        # it started once full, long before the linger ran out: measured from the last
        # submit to the batch's start (the engine's own time, which load stretches, is
        # not part of it)
        started = min(r.started_at for r in records)
        assert started - max(r.created_at for r in records) < linger_ms / 1000 - 2
    else:  # today's behaviour without it: the first job runs alone
        assert worker.batches_run >= 2 and worker.batches_lingered == 0


async def test_a_lone_job_waits_about_the_linger(wqueue, worker_settings, tiny_digest):
    settings = worker_settings.model_copy(update={"worker_batch_linger_ms": 400})
    worker, task = await _idle_worker(settings, "w-linger-lone", wqueue)
    try:
        before = _lingered_seconds()
        record, _ = await wqueue.submit(tiny_spec(tiny_digest, (1,), seed=400))
        done = await _finished(wqueue, record.job_id)
        waited = _lingered_seconds() - before
        full, _ = await wqueue.submit(tiny_spec(tiny_digest, EIGHT, seed=401))
        done_full = await _finished(wqueue, full.job_id)
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, 30)
    assert done.state == JobState.SUCCEEDED and done_full.state == JobState.SUCCEEDED
    assert 0.39 <= waited <= 0.4 + 0.3, waited  # the linger, and little more
    assert worker.batches_run == 2 and worker.batches_lingered == 1  # a full batch never waits


async def test_stopping_during_the_linger_hands_the_job_back(wqueue, worker_settings, tiny_digest):
    settings = worker_settings.model_copy(
        update={"worker_batch_linger_ms": 3000, "shutdown_grace_s": 30.0}
    )
    worker, task = await _idle_worker(settings, "w-linger-stop", wqueue)
    record, _ = await wqueue.submit(tiny_spec(tiny_digest, (2,), seed=500))

    async def claimed():  # type: ignore[no-untyped-def]
        return (await wqueue.get(record.job_id)).state == JobState.RUNNING

    await wait_for(claimed, 10, "the job to be claimed")
    worker.request_stop()
    await asyncio.wait_for(task, 30)
    assert worker.batches_run == 0 and worker.batches_lingered == 1
    back = await wqueue.get(record.job_id)
    assert back.state == JobState.QUEUED, back
    other = Worker(worker_settings, name="w-linger-after")
    await asyncio.wait_for(other.run(burst=True), 120)
    done = await wqueue.get(record.job_id)
    assert done.state == JobState.SUCCEEDED and done.attempts == 1, done
    assert done.worker == "w-linger-after"


async def test_a_cancel_during_the_linger_ends_the_job_unrun(wqueue, worker_settings, tiny_digest):
    settings = worker_settings.model_copy(update={"worker_batch_linger_ms": 3000})
    worker, task = await _idle_worker(settings, "w-linger-cancel", wqueue)
    try:
        record, _ = await wqueue.submit(tiny_spec(tiny_digest, (3,), seed=600))

        async def claimed():  # type: ignore[no-untyped-def]
            return (await wqueue.get(record.job_id)).state == JobState.RUNNING

        await wait_for(claimed, 10, "the job to be claimed")
        await wqueue.cancel(record.job_id, tenant="team-a")
        done = await _finished(wqueue, record.job_id, 10)
        await asyncio.sleep(3.5)  # past the linger: the batch would have run by now
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, 30)
    assert done.state == JobState.CANCELLED and done.step == 0, done
    assert worker.batches_run == 0 and worker.batches_lingered == 1
    assert (await wqueue.get(record.job_id)).state == JobState.CANCELLED


async def test_a_job_of_another_config_ends_the_linger(wqueue, worker_settings, tiny_digest):
    """The batch stops waiting once it passes over a job it cannot take: that job would
    otherwise wait out the linger too."""
    settings = worker_settings.model_copy(update={"worker_batch_linger_ms": 4000})
    worker, task = await _idle_worker(settings, "w-linger-other", wqueue)
    try:
        first, _ = await wqueue.submit(tiny_spec(tiny_digest, (1,), seed=700, steps=6))

        async def claimed():  # type: ignore[no-untyped-def]
            return (await wqueue.get(first.job_id)).state == JobState.RUNNING

        await wait_for(claimed, 10, "the first job to be claimed")
        other, _ = await wqueue.submit(tiny_spec(tiny_digest, (2,), seed=701, steps=7))
        asked = asyncio.get_running_loop().time()
        done = [await _finished(wqueue, j.job_id) for j in (first, other)]
        took = asyncio.get_running_loop().time() - asked
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, 30)
    assert all(d.state == JobState.SUCCEEDED and d.attempts == 1 for d in done), done
    assert worker.batches_run == 2 and worker.batches_lingered >= 1
    assert took < 2.5, took  # well inside the 4 s linger
