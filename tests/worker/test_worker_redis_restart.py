"""Redis restarts (with AOF) while a worker runs a job: the job still ends stored once."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from protolens_server.queue.jobs import JobQueue
from protolens_server.queue.records import JobState
from protolens_server.worker import Worker
from worker_helpers import tiny_spec


async def test_redis_restart_mid_job_loses_nothing(
    redis_server_factory, worker_settings, tiny_digest
):
    server = redis_server_factory(aof=True)
    settings = worker_settings.model_copy(update={"redis_url": server.url})
    queue = await JobQueue.connect(settings)
    record, _ = await queue.submit(tiny_spec(tiny_digest, (1,), steps=120))
    worker = Worker(settings, name="w-restart")
    task = asyncio.create_task(worker.run())
    try:
        async for _, event in queue.watch(record.job_id):
            if event.step >= 2:
                break
        await asyncio.to_thread(server.restart)  # AOF: the queue and the job survive

        async def finished() -> bool:
            try:
                return (await queue.get(record.job_id)).state.finished
            except (aioredis.ConnectionError, aioredis.TimeoutError):
                return False

        for _ in range(600):
            if await finished():
                break
            await asyncio.sleep(0.1)
        done = await queue.get(record.job_id)
        assert done.state == JobState.SUCCEEDED, done.error
        assert done.attempts == 1 and len(done.prototypes) == 1
        assert await queue.redis.xlen(queue.keys.stream(1)) == 0
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, 30)
        await queue.close()


async def test_redis_restarted_empty_mid_job_the_worker_goes_on(
    redis_server_factory, worker_settings, tiny_digest
):
    """Redis comes back with nothing (no persistence, a failover to an empty replica, a
    flush) while a worker runs a job: that job is gone with the data, but the worker
    recreates the consumer group and runs the jobs submitted after. It used to die on
    ``NOGROUP`` from its next reclaim (XPENDING on a stream without the group), leaving
    every later job QUEUED until someone restarted it."""
    server = redis_server_factory(aof=False)
    settings = worker_settings.model_copy(update={"redis_url": server.url})
    queue = await JobQueue.connect(settings)
    record, _ = await queue.submit(tiny_spec(tiny_digest, (1,), steps=120))
    worker = Worker(settings, name="w-empty")
    task = asyncio.create_task(worker.run())
    try:
        async for _, event in queue.watch(record.job_id):
            if event.step >= 2:
                break
        await asyncio.to_thread(server.restart)  # no AOF: everything is gone
        later = None
        for _ in range(100):  # the API's client rides out the restart
            try:
                later, _ = await queue.submit(tiny_spec(tiny_digest, (2,), steps=3, seed=7))
                break
            except (aioredis.ConnectionError, aioredis.TimeoutError):
                await asyncio.sleep(0.1)
        assert later is not None
        for _ in range(600):
            if task.done() or (await queue.get(later.job_id)).state.finished:
                break
            await asyncio.sleep(0.1)
        assert not task.done(), task.exception()
        done = await queue.get(later.job_id)
        assert done.state == JobState.SUCCEEDED, done.error
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, 30)
        await queue.close()
