"""The engine in a child process of the worker (``Settings.engine_process``): the same jobs,
phases, progress, learning rates, cancels, shutdown, errors and metrics as in a thread,
and a child killed mid-batch loses no job and finishes none twice."""

from __future__ import annotations

import asyncio
import os
import signal

import psutil
from protolens_server import metrics
from protolens_server.engine import GenerationConfig, lr_key
from protolens_server.lr_memory import DiskRates
from protolens_server.models.catalog import ModelCatalog
from protolens_server.queue.keys import GROUP
from protolens_server.queue.records import JobPhase, JobState
from protolens_server.worker import Worker
from protolens_server.worker.engine_process import EngineProcess
from worker_helpers import WorkerProcess, alive, metric, scrape, tiny_config, tiny_spec, wait_for


def sample(name: str) -> float:
    return metrics.REGISTRY.get_sample_value(name) or 0.0


def in_child(settings):  # type: ignore[no-untyped-def]
    return settings.model_copy(update={"engine_process": True})


async def test_a_job_runs_in_the_engine_process_with_phases_scores_rates_and_metrics(
    wqueue, worker_settings, tiny_digest
):
    # the finder must run here: a rate an earlier test left in the run's cache folder makes
    # PREPARING so short that the worker's coalesced progress writes can skip it (seen once
    # in CI: LOADING_MODEL, then OPTIMISING), and the rate checked below would not be found
    DiskRates(tiny_digest).path.unlink(missing_ok=True)
    config = tiny_config(0, max_steps=40)  # lr found by the engine, stop by convergence
    spec = tiny_spec(tiny_digest, (1, 2), reference_set="refset", config=config)
    record, _ = await wqueue.submit(spec)
    steps_before = sample("protolens_generation_steps_total")
    batches_before = sample("protolens_engine_batches_total")
    async with Worker(in_child(worker_settings), name="w-child") as worker:
        assert worker.engine_process is not None
        assert await worker.run_once() == 1
        child = worker.engine_process.pid
        assert child is not None and child != os.getpid()
        assert len(worker.models) == 0  # the model was loaded in the child only
    done = await wqueue.get(record.job_id)
    assert done.state == JobState.SUCCEEDED, done.error
    assert [p.target.classes for p in done.prototypes] == [(1,), (2,)]
    await wqueue.load_scores(done)
    assert all(p.scores is not None and "layers" in p.scores for p in done.prototypes)
    events = [e async for _, e in wqueue.watch(record.job_id)]
    phases = [e.phase for e in events if e.phase]
    for phase in (JobPhase.LOADING_MODEL, JobPhase.PREPARING, JobPhase.OPTIMISING):
        assert phase.value in phases, phases
    assert max(e.step for e in events) >= 1
    # the rate the child's engine found came back and was shared through Redis
    shared = await wqueue.redis.hgetall(wqueue.keys.learning_rates(tiny_digest))
    handle = ModelCatalog(worker_settings.model_store, builtins=False).load("tiny", "cpu")
    key = lr_key(handle, GenerationConfig.from_dict(config), "cpu")
    assert float(shared[key.encode()]) == done.prototypes[0].lr
    # the worker serves the metrics of what ran in the child
    assert sample("protolens_engine_batches_total") == batches_before + 1
    assert sample("protolens_generation_steps_total") >= steps_before + 2
    assert sample("protolens_models_loaded") == 1
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == "zombie"


async def test_engine_errors_come_back_from_the_child_as_in_a_thread(
    wqueue, worker_settings, store_root, tiny_digest
):
    poison = ModelCatalog(store_root / "models", builtins=False).describe("poison").digest
    failing, _ = await wqueue.submit(tiny_spec(poison, model="poison"))
    unknown, _ = await wqueue.submit(tiny_spec(tiny_digest, (42,)))
    async with Worker(in_child(worker_settings), name="w-child-errors") as worker:
        await worker.run(burst=True)
    failed = await wqueue.get(failing.job_id)  # retried, then dead-lettered
    assert failed.state == JobState.FAILED and failed.attempts == 2
    assert "poisoned model" in failed.error
    refused = await wqueue.get(unknown.job_id)  # a domain error: failed at once
    assert refused.state == JobState.FAILED and refused.attempts == 1 and "42" in refused.error


async def test_cancel_and_abort_stop_the_child_between_steps(wqueue, worker_settings, tiny_digest):
    cancelled, _ = await wqueue.submit(tiny_spec(tiny_digest, steps=2000))
    worker = Worker(in_child(worker_settings), name="w-child-cancel")
    task = asyncio.create_task(worker.run())
    try:
        async for _, event in wqueue.watch(cancelled.job_id):
            if event.step >= 2:
                break
        await wqueue.cancel(cancelled.job_id, tenant="team-a")
        at_cancel = (await wqueue.get(cancelled.job_id)).step
        events = [e async for _, e in wqueue.watch(cancelled.job_id)]
        assert events[-1].state == JobState.CANCELLED
        assert (await wqueue.get(cancelled.job_id)).step - at_cancel <= 100
        await asyncio.sleep(0.3)
        assert worker.batches_run == 0 and not worker._running  # the child's engine stopped
        # a stop past the grace period (0.5 s here) hands a running job back
        handed, _ = await wqueue.submit(tiny_spec(tiny_digest, (3,), steps=5000, seed=4))
        async for _, event in wqueue.watch(handed.job_id):
            if event.step >= 2:
                break
        worker.request_stop()
        await asyncio.wait_for(task, 30)
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, 30)
    back = await wqueue.get(handed.job_id)
    assert back.state == JobState.QUEUED and back.attempts == 0


def engine_child(worker: WorkerProcess) -> psutil.Process | None:
    """The worker's engine process (a spawn child), once started."""
    for child in psutil.Process(worker.proc.pid).children():
        if any("spawn_main" in part for part in child.cmdline()):
            return child
    return None


async def test_a_killed_engine_process_loses_no_job_and_finishes_none_twice(
    wqueue, worker_settings, tiny_digest, tmp_path, processes
):
    # Four compatible jobs queued before the worker starts: its first batch holds them all.
    records = [
        (await wqueue.submit(tiny_spec(tiny_digest, (c,), steps=300, seed=20 + c)))[0]
        for c in (1, 2, 3, 4)
    ]
    worker = WorkerProcess(
        worker_settings, "w-kill", tmp_path / "w-kill.log", env={"PROTOLENS_ENGINE_PROCESS": "true"}
    )
    processes.append(worker)
    await wait_for(lambda: alive(wqueue, "w-kill"), 60, "the worker to start")

    async def all_running():
        recs = [await wqueue.get(r.job_id) for r in records]
        return all(r.state == JobState.RUNNING and r.step >= 3 for r in recs)

    await wait_for(all_running, 90, "the batch to make progress")
    victim = engine_child(worker)
    assert victim is not None, worker.output()[-3000:]
    victim.send_signal(signal.SIGKILL)

    async def all_finished():
        recs = [await wqueue.get(r.job_id) for r in records]
        return recs if all(r.state.finished for r in recs) else None

    done = await wait_for(all_finished, 120, "every job to finish")
    log = worker.output()
    assert worker.proc.poll() is None, log[-3000:]  # the worker itself carried on
    assert [r.state for r in done] == [JobState.SUCCEEDED] * 4, [r.error for r in done]
    for r in done:
        events = await wqueue.redis.xrange(wqueue.keys.events(r.job_id))
        assert [f[b"message"] for _, f in events].count(b"succeeded") == 1
        stored = await wqueue.redis.hget(wqueue.keys.result(r.cache_key), "job_id")
        assert stored.decode() == r.job_id
    assert "engine process died" in log and "running its jobs one by one" in log
    replacement = engine_child(worker)
    assert replacement is not None and replacement.pid != victim.pid
    assert await wqueue.redis.xlen(wqueue.keys.dead) == 0
    assert (await wqueue.redis.xpending(wqueue.keys.stream(1), GROUP))["pending"] == 0
    port = int(await wqueue.redis.hget(wqueue.keys.worker_info("w-kill"), "metrics_port"))
    text = await asyncio.to_thread(scrape, port)
    assert metric(text, 'protolens_jobs_finished_total{state="SUCCEEDED"}') == 4


def test_an_engine_process_that_is_never_used_closes_cleanly(worker_settings) -> None:
    engine = EngineProcess(in_child(worker_settings), "cpu")
    engine.start()
    pid = engine.pid
    engine.close()
    assert engine.pid is None and pid is not None and not psutil.pid_exists(pid)
