"""Out-of-memory in a real worker process: the engine splits the batch and retries.

``PROTOLENS_FAULT_OOM_ABOVE=2`` (worker/runner.py) makes the worker's model raise
``torch.OutOfMemoryError`` on any forward over 2 images, as a too-small GPU would.
Until this test no test set the hook at all; and where jobs reach an idle worker one
by one (the fault suite submits them over gRPC to a worker already waiting), the
first usually starts alone: a blocking read returns the first entry at once and the
batch takes only what is already queued. Here the jobs wait in the queue before the
worker starts, so three compatible jobs (5 images) surely share one engine batch.
"""

from __future__ import annotations

import asyncio
import io
import time

import numpy as np
import pytest
from faults_support import WorkerProcess, fault_settings, scrape, stored_once
from PIL import Image
from protolens_server import ENGINE_VERSION
from protolens_server.engine import GenerationConfig, Target
from protolens_server.models.catalog import ModelCatalog
from protolens_server.queue.jobs import JobQueue
from protolens_server.queue.records import JobRecord, JobSpec, JobState
from protolens_server.worker.runner import FAULT_OOM_ENV
from protolens_server.worker.worker import Worker

LIMIT = 2
# equidistant start: its baseline forwards (1 image each) run through the hook too; a
# given rate, so the counts below are the batches' (the finder's probe splits on OOM
# too: test_engine_self_tuning)
CONFIG = GenerationConfig(
    steps=6, lr=0.05, transforms="small", equidistant_steps=3, progress_every=2, autocast=False
).to_dict()
# 3 prototypes of one target coupled by diversity: one unit of 3 > LIMIT images, unsplittable
UNSPLITTABLE = {**CONFIG, "prototypes": 3, "diversity": 0.5}


def _spec(digest: str, classes: list[int], seed: int, config: dict) -> JobSpec:
    return JobSpec(
        model="tiny",
        model_digest=digest,
        targets=tuple(Target((c,)) for c in classes),
        config=config,
        seed=seed,
        engine_version=ENGINE_VERSION,
        tenant="team-a",
    )


async def _finished(queue: JobQueue, job_ids: list[str], timeout: float) -> list[JobRecord]:
    deadline = time.monotonic() + timeout
    while True:
        records = [await queue.get(j) for j in job_ids]
        if all(r.state.finished for r in records):
            return records
        assert time.monotonic() < deadline, [(r.job_id, r.state) for r in records]
        await asyncio.sleep(0.05)


async def _pixels(queue: JobQueue, record: JobRecord) -> list[np.ndarray]:
    return [
        np.asarray(Image.open(io.BytesIO(await queue.get_png(record.job_id, i))), dtype=np.int16)
        for i in range(len(record.prototypes))
    ]


async def test_oom_in_a_worker_splits_the_batch_and_matches_an_unfaulted_run(
    redis_url, tiny_store, tmp_path, report, monkeypatch
) -> None:
    monkeypatch.delenv(FAULT_OOM_ENV, raising=False)  # the in-process reference is unfaulted
    digest = ModelCatalog(tiny_store, builtins=False).describe("tiny").digest
    batched = [([0, 1, 2], 11), ([3], 12), ([4], 13)]  # 5 images, one compatible batch
    settings = fault_settings(redis_url, tiny_store, key_prefix="ploom")
    queue = await JobQueue.connect(settings)
    jobs = [(await queue.submit(_spec(digest, c, s, CONFIG)))[0].job_id for c, s in batched]
    big, _ = await queue.submit(_spec(digest, [1], 14, UNSPLITTABLE))
    worker = WorkerProcess(
        settings, "w-oom", tmp_path / "w-oom.log", env={FAULT_OOM_ENV: str(LIMIT)}
    )
    try:
        records = await _finished(queue, jobs, 90)
        (failed,) = await _finished(queue, [big.job_id], 60)
        after, _ = await queue.submit(_spec(digest, [0], 15, CONFIG))  # it carries on
        (later,) = await _finished(queue, [after.job_id], 60)
        port = int(await queue.redis.hget(queue.keys.worker_info("w-oom"), "metrics_port"))
        samples = await asyncio.to_thread(scrape, port)
        assert worker.proc.poll() is None, worker.output()[-3000:]  # not crashed
    finally:
        code = worker.stop()
    log = worker.output()
    assert code == 0, log[-3000:]

    # The batch of 5 met one injected OOM, was split (chunks of <= 2) and every job
    # succeeded in that one engine call: no retry, no one-by-one fallback in the worker.
    assert [r.state for r in records] == [JobState.SUCCEEDED] * 3, [r.error for r in records]
    assert [r.attempts for r in records] == [1, 1, 1]
    assert all([await stored_once(queue, j) for j in jobs])
    assert "running its jobs one by one" not in log
    # 1 (the batch of 5) + 2 (the unsplittable job's two attempts)
    assert samples["protolens_injected_oom_total"] == 3, log[-3000:]
    assert log.count("worker.injected_oom") == 3
    # the engine reported its one split (5 images -> chunks of <= 2) to the worker
    assert samples["protolens_engine_oom_splits_total"] == 1
    assert log.count("worker.oom_split") == 1
    assert samples["protolens_engine_batches_total"] == 2  # the split batch, then `after`
    assert samples["protolens_job_retries_total"] == 1  # only the unsplittable job

    # A unit that still does not fit at a chunk of one fails clearly, dead-lettered.
    assert failed.state == JobState.FAILED and failed.attempts == settings.max_attempts
    assert "OutOfMemoryError" in failed.error and f"> {LIMIT} images" in failed.error
    assert await queue.redis.xlen(queue.keys.dead) == 1
    assert later.state == JobState.SUCCEEDED and later.attempts == 1
    assert samples['protolens_jobs_finished_total{state="SUCCEEDED"}'] == 4
    assert samples['protolens_jobs_finished_total{state="FAILED"}'] == 1

    # The same jobs without the fault (a real worker in this process, another key prefix):
    # the same prototypes, as the engine seeds each prototype on its own.
    ref_settings = fault_settings(redis_url, tiny_store, key_prefix="ploom-ref")
    ref_queue = await JobQueue.connect(ref_settings)
    ref_jobs = [(await ref_queue.submit(_spec(digest, c, s, CONFIG)))[0].job_id for c, s in batched]
    reference = Worker(ref_settings, name="w-ref", block_ms=50)
    await asyncio.wait_for(reference.run(burst=True), 60)
    assert reference.batches_run == 1  # unfaulted: the 5 images in one chunk
    refs = [await ref_queue.get(j) for j in ref_jobs]
    worst = 0
    for got, ref in zip(records, refs, strict=True):
        assert ref.state == JobState.SUCCEEDED and len(got.prototypes) == len(ref.prototypes)
        for p, q in zip(got.prototypes, ref.prototypes, strict=True):
            assert (p.target, p.index, p.seed) == (q.target, q.index, q.seed)
            assert p.probability == pytest.approx(q.probability, abs=1e-5)
            assert p.logit == pytest.approx(q.logit, abs=1e-4)
            assert [c for c, _ in p.top5] == [c for c, _ in q.top5]
        for a, b in zip(await _pixels(queue, got), await _pixels(ref_queue, ref), strict=True):
            worst = max(worst, int(np.abs(a - b).max()))
    assert worst <= 1  # 8-bit PNGs: at most one level of float rounding
    await ref_queue.close()
    await queue.close()
    report(
        f"out-of-memory in a worker (PROTOLENS_FAULT_OOM_ABOVE={LIMIT}, real process)",
        "a batch of 3 jobs (5 images) hit the injected OOM, was split into chunks of <= 2"
        " in the same engine call: 3/3 SUCCEEDED on attempt 1, each stored once, prototypes"
        f" equal to an unfaulted run (max PNG difference {worst}/255); a job whose one unit"
        f" (3 coupled prototypes) still OOMs FAILED after {failed.attempts} attempts with"
        " OutOfMemoryError in its error, dead-lettered; the worker went on",
        jobs=5,
        lost=0,
    )


def test_the_hook_keeps_an_eager_model_visible_to_the_layer_probes(monkeypatch) -> None:
    """An eager model with BatchNorm, the BatchNorm prior on: with the hook firing (chunks of
    one), the prototypes equal those without it, so the engine's probes still see the layers
    through the wrapper (a plain function in its place would silently drop the prior)."""
    import torch
    from protolens_server.engine import InputSpec
    from protolens_server.models.handle import ModelHandle
    from protolens_server.worker.runner import run_engine, with_injected_oom
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5),
    ).eval()  # fmt: skip
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 1.5)
    spec = InputSpec(3, 16, 16, (0.5,) * 3, (0.25,) * 3)
    handle = ModelHandle("eager", "test:eager", net, spec, tuple("abcde"), "0" * 64)
    jobs = [_spec("0" * 64, [0, 1, 2], 3, {**CONFIG, "bn_prior": 1.0})]
    monkeypatch.delenv(FAULT_OOM_ENV, raising=False)
    (plain,) = run_engine(handle, jobs, device="cpu")
    monkeypatch.setenv(FAULT_OOM_ENV, "1")
    assert isinstance(with_injected_oom(handle).module, nn.Module)
    before = _injected()
    (faulted,) = run_engine(handle, jobs, device="cpu")
    assert _injected() == before + 1  # the batch of 3 hit it once, then ran in chunks of 1
    for p, q in zip(plain, faulted, strict=True):
        # chunks of 1 vs a batch of 3: kernel rounding differs a little (docs/engine.md);
        # a dropped BatchNorm prior (weight 1.0) would move pixels by far more
        assert torch.allclose(p.image, q.image, atol=1e-3)


def _injected() -> float:
    from protolens_server import metrics

    return metrics.REGISTRY.get_sample_value("protolens_injected_oom_total") or 0.0
