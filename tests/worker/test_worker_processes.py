"""Real worker processes (``python -m protolens_server.worker``) killed with real signals."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from protolens_server.config import Settings
from protolens_server.queue.jobs import JobQueue
from protolens_server.queue.keys import GROUP
from protolens_server.queue.records import JobState
from worker_helpers import tiny_spec


class WorkerProcess:
    def __init__(
        self, settings: Settings, name: str, log: Path, *args: str, grace: str = "0.3"
    ) -> None:
        self.name = name
        base = {k: v for k, v in os.environ.items() if not k.startswith("PROTOLENS_")}
        base.update(
            PROTOLENS_REDIS_URL=settings.redis_url,
            PROTOLENS_KEY_PREFIX=settings.key_prefix,
            PROTOLENS_MODEL_STORE=str(settings.model_store),
            PROTOLENS_REFERENCE_ROOT=str(settings.reference_root),
            PROTOLENS_BUILTIN_MODELS="false",
            PROTOLENS_DEVICE="cpu",
            PROTOLENS_PROGRESS_INTERVAL_S=str(settings.progress_interval_s),
            PROTOLENS_HEARTBEAT_S="0.2",
            PROTOLENS_RECLAIM_IDLE_S="1.5",
            PROTOLENS_MAX_ATTEMPTS="3",
            PROTOLENS_SHUTDOWN_GRACE_S=grace,
            PROTOLENS_METRICS_PORT="0",
            PROTOLENS_WORKER_NAME=name,
        )
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "protolens_server.worker", "--log-format", "text", *args],
            env=base,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")


async def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def alive(queue: JobQueue, name: str) -> bool:
    return await queue.redis.zscore(queue.keys.workers, name) is not None


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def metric(text: str, line_start: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.split()[-1])
    return 0.0


@pytest.fixture
def processes():
    started: list[WorkerProcess] = []
    yield started
    for w in started:
        if w.proc.poll() is None:
            w.proc.kill()
        w.proc.wait(10)


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
