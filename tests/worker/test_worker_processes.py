"""Real worker processes (``python -m protolens_server.worker``) killed with real signals."""

from __future__ import annotations

import signal

from protolens_server.queue.keys import GROUP
from protolens_server.queue.records import JobState
from worker_helpers import WorkerProcess, alive, metric, scrape, tiny_spec, wait_for


async def test_sigkilled_workers_job_is_finished_by_another_exactly_once(
    wqueue, worker_settings, tiny_digest, tmp_path, processes
):
    for name in ("wa", "wb"):
        processes.append(WorkerProcess(worker_settings, name, tmp_path / f"{name}.log"))
    for w in processes:
        await wait_for(lambda w=w: alive(wqueue, w.name), 60, f"{w.name} to start")
    record, _ = await wqueue.submit(tiny_spec(tiny_digest, (1,), steps=400))

    async def running_with_progress():
        rec = await wqueue.get(record.job_id)
        return rec if rec.state == JobState.RUNNING and rec.step >= 3 else None

    running = await wait_for(running_with_progress, 60, "the job to make progress")
    victim = next(w for w in processes if w.name == running.worker)
    survivor = next(w for w in processes if w is not victim)
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait(10)

    async def finished():
        rec = await wqueue.get(record.job_id)
        return rec if rec.state.finished else None

    done = await wait_for(finished, 90, "the survivor to finish the job")
    assert done.state == JobState.SUCCEEDED, done.error + survivor.output()[-3000:]
    assert done.worker == survivor.name and done.attempts == 2
    assert len(done.prototypes) == 1
    events = await wqueue.redis.xrange(wqueue.keys.events(done.job_id))
    messages = [fields[b"message"] for _, fields in events]
    assert messages.count(b"succeeded") == 1
    result = await wqueue.redis.hget(wqueue.keys.result(done.cache_key), "job_id")
    assert result.decode() == done.job_id
    assert await wqueue.redis.xlen(wqueue.keys.dead) == 0
    assert await wqueue.redis.xlen(wqueue.keys.stream(1)) == 0
    assert (await wqueue.redis.xpending(wqueue.keys.stream(1), GROUP))["pending"] == 0
    # The survivor's metrics endpoint says what happened.
    port = int(await wqueue.redis.hget(wqueue.keys.worker_info(survivor.name), "metrics_port"))
    text = scrape(port)
    assert metric(text, "protolens_jobs_reclaimed_total") == 1
    assert metric(text, 'protolens_jobs_finished_total{state="SUCCEEDED"}') == 1
    assert metric(text, "protolens_worker_heartbeats_total") > 1
    assert metric(text, "protolens_generation_steps_total") >= 400


async def test_sigterm_mid_job_hands_it_back_and_loses_nothing(
    wqueue, worker_settings, tiny_digest, tmp_path, processes
):
    # Grace 0: the engine stops at its next step, so the job is surely mid-way.
    first = WorkerProcess(worker_settings, "wterm", tmp_path / "wterm.log", grace="0")
    processes.append(first)
    await wait_for(lambda: alive(wqueue, "wterm"), 60, "wterm to start")
    record, _ = await wqueue.submit(tiny_spec(tiny_digest, (3,), steps=400))

    async def progressed():
        rec = await wqueue.get(record.job_id)
        return rec.state == JobState.RUNNING and rec.step >= 3

    await wait_for(progressed, 60, "the job to make progress")
    first.proc.send_signal(signal.SIGTERM)
    assert first.proc.wait(30) == 0, first.output()[-3000:]
    handed = await wqueue.get(record.job_id)
    assert handed.state == JobState.QUEUED and handed.attempts == 0, first.output()[-3000:]
    assert not await alive(wqueue, "wterm")
    # A fresh worker in burst mode takes it at once and exits when the queue is empty.
    second = WorkerProcess(worker_settings, "wnext", tmp_path / "wnext.log", "--burst")
    processes.append(second)
    assert second.proc.wait(90) == 0, second.output()[-3000:]
    done = await wqueue.get(record.job_id)
    assert done.state == JobState.SUCCEEDED and done.worker == "wnext" and done.attempts == 1
    assert await wqueue.redis.xlen(wqueue.keys.stream(1)) == 0
