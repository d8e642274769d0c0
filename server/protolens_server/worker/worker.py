"""``Worker``: a long-lived process that pulls jobs, batches them, runs the engine, stores results.

    run(): startup -> loop { next_batch (reclaim, read, group) -> run_batch } -> shutdown
    heartbeat task: every ``heartbeat_s`` mark alive, keep entries fresh, read cancel flags

Prefetch (``Settings.worker_prefetch``): while the engine runs a batch (in a thread),
the event loop forms and claims the next one, so the engine starts it as soon as the
current batch is stored instead of waiting on Redis round trips. The prefetched jobs
are owned like running ones: heartbeats keep them, a cancel ends them before they
run, and a stopping worker hands them back. In ``run()``'s loop a batch's results are
then stored (PNGs, scores, the final writes) while the engine runs the prefetched batch
(one store in flight; ``run_once()`` stores its batch before it returns).

SIGTERM (``request_stop``) stops reading; a running batch may finish within
``shutdown_grace_s``, after which the engine stops between steps and the jobs
are handed back for another worker to reclaim at once. Nothing is lost: an
entry leaves the stream only when its job has a final state.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from protolens_server import metrics
from protolens_server.config import Settings
from protolens_server.cpu_budget import TorchThreads
from protolens_server.engine import ProgressEvent
from protolens_server.errors import (
    GENERATION_FAILED,
    ErrorRecord,
    GenerationCancelled,
    GenerationDiverged,
    InvalidArgument,
    InvalidModel,
    NotFound,
    ProtolensError,
)
from protolens_server.logging import bind, get_logger
from protolens_server.lr_memory import DiskRates
from protolens_server.queue.connection import UNREACHABLE, StoreError, is_missing_group
from protolens_server.queue.delivery import Delivery, Entry, FinishedJob, QueueConsumer
from protolens_server.queue.records import (
    EndMode,
    EndOutcome,
    JobSpec,
    JobState,
    StoredPrototype,
)
from protolens_server.queue.store import Store
from protolens_server.worker.batching import Batch, job_images
from protolens_server.worker.engine_process import EngineProcess
from protolens_server.worker.models import ModelCache
from protolens_server.worker.runner import (
    finishing_phase,
    job_slices,
    loading_phase,
    optimising_phase,
    package_all,
    preparing_phase,
    run_engine,
    waiting_phase,
)
from protolens_server.worker.throttle import Throttle

if TYPE_CHECKING:
    from protolens_server.engine import Prototype
    from protolens_server.models.catalog import ModelCatalog

    Packaged = tuple[list[StoredPrototype], list[bytes], list[bytes]]  # runner.package's
    # a job the engine ran, with its prototypes (engine in a thread) or packaged (in a child)
    Done = tuple[Delivery, list[Prototype] | Packaged | Exception]
    Pack = Callable[[list[Done]], Awaitable[list[Packaged | Exception]]]


log = get_logger("protolens.worker")
T = TypeVar("T")

# While a batch lingers (Settings.worker_batch_linger_ms) the worker reads what arrived
# this often: a burst's jobs are taken, peeked and claimed a read's worth at a time, and
# a stop is seen within this.
LINGER_POLL_S = 0.01

# Caller mistakes, a model file the loaders refuse (the same bytes are refused again),
# and divergence (generation is deterministic: the same request diverges again):
# retrying cannot help, so the job fails on the first attempt.
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    InvalidArgument,
    NotFound,
    InvalidModel,
    GenerationDiverged,
)


# Where a path may start: not inside a longer name or path.
_PATH_START = r"(?<![\w.@+~-])"
# An absolute path (two or more components, not the tail of a relative one).
_PATH = re.compile(_PATH_START + r"(?:[A-Za-z]:)?(?:[\\/][\w.@+~-]+){2,}[\\/]?")
_MAX_ERROR_CHARS = 300


def job_failure(error: BaseException, roots: Sequence[Path | None] = ()) -> ErrorRecord:
    """What a job records of its error (tenants read it in ``Job.error``): a domain
    error's reason, message and metadata; for any other exception ``GENERATION_FAILED``
    and ``"<ErrorClass>: <first line>"``. Messages are the first line (the last after a
    traceback), capped; a path under one of ``roots`` (the reference root, the model
    store: folders whose names tenants use) is shown relative to it (``photos/apple/3.png``
    says which file to fix), any other file path is replaced by ``<path>``.

    A model's own exceptions can carry a TorchScript traceback with the paths of the
    machine that built it, or of this one; the whole traceback goes to the log only.
    """
    known = [str(r).rstrip("/\\") for r in roots if r is not None and str(r).strip("/\\")]
    first = _clean(str(error), known)
    if isinstance(error, ProtolensError):
        metadata = {k: _clean(v, known) for k, v in error.metadata.items()}
        return ErrorRecord(error.reason, first or type(error).__name__, metadata)
    name = type(error).__name__
    return ErrorRecord(GENERATION_FAILED, f"{name}: {first}" if first else name)


def _clean(message: str, roots: Sequence[str] = ()) -> str:
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if any(line.startswith("Traceback") for line in lines):
        lines = lines[-1:]  # the exception a (TorchScript) traceback ends with
    first = lines[0] if lines else ""
    for root in sorted(roots, key=len, reverse=True):  # the deepest root first
        first = re.sub(_PATH_START + re.escape(root) + r"[\\/]", "", first)
    first = _PATH.sub("<path>", first)
    if len(first) > _MAX_ERROR_CHARS:
        first = first[: _MAX_ERROR_CHARS - 3] + "..."
    return first


def default_worker_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class Worker:
    """One worker: ``await Worker(settings).run()``; tests: ``run_once()``, ``run(burst=True)``."""

    def __init__(
        self,
        settings: Settings,
        *,
        catalog: ModelCatalog | None = None,
        device: str | None = None,
        name: str | None = None,
        metrics_port: int | None = None,
        block_ms: int = 500,
    ) -> None:
        # A catalog object stays in this process: given one, the engine runs in a thread.
        in_process = settings.engine_process and catalog is None
        if catalog is None:
            from protolens_server.models.catalog import ModelCatalog

            # inspected in a child process before it is loaded here (models/inspection.py)
            catalog = ModelCatalog.from_settings(settings, cache_bytes=0)
        self.settings = settings
        self.catalog = catalog
        self.device = resolve_device(device or settings.device)
        self.name = name or settings.worker_name or default_worker_name()
        self.models = ModelCache(lambda n: catalog.load(n, self.device), settings.model_cache_bytes)
        self.engine_process = EngineProcess(settings, self.device) if in_process else None
        self.metrics_port = metrics_port
        self.block_ms = block_ms
        self.consumer: QueueConsumer | None = None
        self.batches_run = 0
        self.batches_prefetched = 0  # batches that were formed while the engine ran another
        self.batches_lingered = 0  # batches that waited for more jobs (worker_batch_linger_ms)
        self._carry: list[Entry] = []  # read (several at once) but not yet looked at
        self._peeked: dict[str, tuple[JobSpec | None, str | None]] = {}  # carried jobs' specs
        self._running: list[Delivery] = []
        self._prefetched: Batch | None = None  # claimed while the engine ran the last batch
        self._lingering: Batch | None = None  # claimed, waiting for more jobs to join it
        self._prefetch_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._abort = False
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._cancel_task: asyncio.Task[None] | None = None
        self._publish_task: asyncio.Task[None] | None = None
        self._publish_next: list[Delivery] | None = None  # asked while a round was running
        self._store_task: asyncio.Task[None] | None = None  # a batch's results being stored
        self._storing: list[Delivery] = []  # that batch's jobs
        self._threads: TorchThreads | None = None  # set at startup for the in-process engine

    # --- the story ---------------------------------------------------------------
    async def run(self, *, burst: bool = False) -> None:
        """Work until ``request_stop()`` (or, with ``burst``, until the queue is empty)."""
        await self.startup()
        backoff = 0.1
        try:
            while not self._stopping:
                try:
                    handled = await self._iterate(0 if burst else self.block_ms, overlap=True)
                except UNREACHABLE as e:
                    backoff = min(5.0, backoff * 2)
                    log.warning("redis unreachable (%s); retrying in %.1fs", e, backoff)
                    await asyncio.sleep(backoff)
                    continue
                except StoreError as e:
                    if not is_missing_group(e) or self.consumer is None:
                        raise
                    # Redis lost its data (restarted empty, flushed): the jobs it held are
                    # gone with it, but the ones submitted from now on must still run.
                    log.warning("the job streams' consumer group is gone (%s): recreating it", e)
                    await self.consumer.ensure_groups()
                    continue
                backoff = 0.1
                if burst and handled == 0 and not self._carry:
                    break
        finally:
            await self.shutdown()

    async def run_once(self, block_ms: int = 0) -> int:
        """One iteration: form the next batch, run it and store it. Returns the jobs it held."""
        return await self._iterate(block_ms, overlap=False)

    async def _iterate(self, block_ms: int, *, overlap: bool) -> int:
        """``run_once``; with ``overlap`` (``run``'s loop) a batch's results may still be
        being stored when it returns, while the engine runs the next batch."""
        if self.consumer is None:
            await self.startup()
        batch = await self._take_prefetched()
        if batch:
            self.batches_prefetched += 1
        else:
            batch = await self.next_batch(block_ms, linger_ms=self.settings.worker_batch_linger_ms)
        if batch:
            await self.run_batch(batch, overlap=overlap)
        else:
            await self._finish_storing()
        return len(batch)

    async def startup(self) -> None:
        if self.consumer is not None:
            return
        self.consumer = Store.open(self.settings, "worker").consumer(self.name)
        if self.metrics_port is not None:
            self.metrics_port = metrics.serve_metrics(self.metrics_port)
        if self.engine_process is not None:
            self.engine_process.start()  # its imports run beside the rest of the startup
        else:
            self._threads = await asyncio.to_thread(
                _warm_up,
                compile=self.settings.engine_compile,
                torch_threads=self.settings.torch_threads,
                device=self.device,
            )
        try:  # Redis may be down right now: the loops retry with backoff, so carry on
            await self.consumer.ensure_groups()
            await self.heartbeat()
        except UNREACHABLE as e:
            log.warning("redis unreachable at start (%s); will keep trying", e)
        self._heartbeat_task = asyncio.create_task(self._heartbeat_loop(), name="heartbeat")
        self._cancel_task = asyncio.create_task(self._cancel_loop(), name="cancel-watch")
        log.info("worker %s started on %s", self.name, self.device)

    async def shutdown(self) -> None:
        """Hand back entries read but not started, leave the heartbeat set, disconnect."""
        if self.consumer is None:
            return
        await self._finish_storing()
        prefetched = await self._take_prefetched()
        await self._end_all(prefetched.deliveries, "handback")
        await self._hand_back_entries(self._carry)
        for task in (self._heartbeat_task, self._cancel_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self._publish_task is not None:
            await asyncio.gather(self._publish_task, return_exceptions=True)
        await self.consumer.leave()
        await self.consumer.close()
        self.consumer = None
        if self.engine_process is not None:
            await asyncio.to_thread(self.engine_process.close)
        log.info("worker %s stopped", self.name)

    def request_stop(self) -> None:
        """SIGTERM: stop reading; abort the batch after the grace period (or on a 2nd signal)."""
        if self._stopping:
            self._abort = True
            return
        self._stopping = True
        log.info("stopping: finishing the current batch within %ss", self.settings.shutdown_grace_s)
        loop = asyncio.get_running_loop()
        loop.call_later(self.settings.shutdown_grace_s, self._set_abort)

    def _set_abort(self) -> None:
        self._abort = True

    # --- taking work ---------------------------------------------------------------
    async def next_batch(self, block_ms: int = 0, *, linger_ms: float = 0) -> Batch:
        """Compatible jobs up to ``max_batch`` images: reclaimed first, then p0, p1, p2.

        Entries that do not fit are looked past (up to ``max_batch`` of them) so a
        compatible job further back still joins the batch; the ones passed over are
        handed back at once, for this or any other worker's next batch. Entries are read
        as many as the batch has room for, their specs in one round trip and the chosen
        jobs claimed in one more (the prefetch runs beside the engine: every round trip
        costs the engine thread a hand-over of the GIL).

        ``linger_ms`` (an idle worker's, ``Settings.worker_batch_linger_ms``; never a
        prefetch's): once jobs are claimed and nothing more is waiting, wait up to that
        long in all for more jobs while the batch is below budget (a read every
        ``LINGER_POLL_S``), so a burst submitted one by one fills one batch; a full batch
        starts at once. A job of another config passed over ends the wait (it would wait
        for this batch too).
        """
        batch = Batch(self.settings.max_batch)
        passed_over: list[Entry] = []
        chosen: list[tuple[Entry, JobSpec | None, str]] = []
        may_reclaim = True
        linger_until = 0.0  # monotonic; set when the linger starts
        try:
            while not self._stopping:
                if chosen and (batch.full or not self._carry):
                    await self._claim_chosen(batch, chosen)  # failed claims free their room
                if batch.full:
                    break
                room = batch.budget - batch.images
                blocking = 0 if batch.images else block_ms
                if batch.images and linger_ms > 0 and not (self._carry or passed_over):
                    if not linger_until:
                        linger_until = time.monotonic() + linger_ms / 1000
                        self._lingering = batch  # heartbeated, its cancels read meanwhile
                    left = linger_until - time.monotonic()
                    if left <= 0:
                        break
                    # then take what came meanwhile in one read (not one wake-up per job)
                    await asyncio.sleep(min(LINGER_POLL_S, left))
                entry, may_reclaim = await self._next_entry(room, blocking, may_reclaim)
                if entry is None:
                    if linger_until and not passed_over and time.monotonic() < linger_until:
                        continue  # linger on: the next pass sleeps before it reads
                    break
                if any(d.job_id == entry.job_id for d in (*self._running, *self._storing)):
                    # a prefetch reclaimed the entry of a job this worker is running or
                    # storing (its idle time outgrew reclaim_idle_s between heartbeats)
                    continue
                spec, cache_key = await self._peek_spec(entry)
                if spec is not None and not batch.plan(spec):
                    passed_over.append(entry)
                    if len(passed_over) >= self.settings.max_batch:
                        break
                    continue
                chosen.append((entry, spec, cache_key or ""))
            if chosen:
                await self._claim_chosen(batch, chosen)
        finally:
            self._lingering = None
            unclaimed = [entry for entry, _, _ in chosen]  # only after an error
            await self._hand_back_entries([*passed_over, *unclaimed, *self._carry])
        if linger_until:
            waited = time.monotonic() - (linger_until - linger_ms / 1000)
            self.batches_lingered += 1
            metrics.BATCH_LINGER_SECONDS.observe(waited)
            log.info("waited %.0f ms for more jobs: %d in the batch", 1000 * waited, len(batch))
            return self._live(batch)  # less jobs cancelled while it waited
        return batch

    async def _claim_chosen(
        self, batch: Batch, chosen: list[tuple[Entry, JobSpec | None, str]]
    ) -> None:
        """Claim the jobs planned into ``batch`` (one round trip); empties ``chosen``."""
        assert self.consumer is not None
        answers = await self.consumer.claim_many(
            [(e, ck) for e, _, ck in chosen], [spec for _, spec, _ in chosen]
        )
        for (entry, spec, _), (outcome, delivery) in zip(chosen, answers, strict=True):
            delivery = self._claimed(entry, outcome, delivery)
            if delivery is not None:
                batch.add(delivery, planned=spec is not None)
            elif spec is not None:
                batch.unplan(spec)
        chosen.clear()

    def _start_prefetch(self) -> None:
        """Form the next batch in the background (the engine is busy with this one)."""
        if not self.settings.worker_prefetch or self._stopping:
            return
        if self._prefetched is not None or self._prefetch_task is not None:
            return
        self._prefetch_task = asyncio.create_task(self._prefetch(), name="prefetch")

    async def _prefetch(self) -> None:
        try:
            batch = await self.next_batch(0)
        except UNREACHABLE as e:
            log.warning("prefetch skipped: redis unreachable (%s)", e)
            return
        if batch:
            self._prefetched = batch
            self._set_phase(batch.deliveries, *waiting_phase())

    async def _take_prefetched(self) -> Batch:
        """The prefetched batch less its jobs cancelled or lost meanwhile (may be empty)."""
        task, self._prefetch_task = self._prefetch_task, None
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
        batch, self._prefetched = self._prefetched, None
        return self._live(batch)

    def _live(self, batch: Batch | None) -> Batch:
        """``batch`` less its jobs cancelled or lost since they were claimed (may be empty)."""
        live = Batch(self.settings.max_batch)
        for delivery in batch.deliveries if batch is not None else []:
            if delivery.active:
                live.add(delivery)
        return live

    def _owned(self) -> list[Delivery]:
        """Deliveries this worker holds: the running batch, the prefetched one (or the one
        lingering for more jobs) and the one whose results are being stored."""
        waiting = self._prefetched.deliveries if self._prefetched is not None else []
        lingering = self._lingering.deliveries if self._lingering is not None else []
        return [d for d in (*self._running, *waiting, *lingering, *self._storing) if d.active]

    async def _hand_back_entries(self, entries: list[Entry]) -> None:
        assert self.consumer is not None
        entries = list(entries)
        self._carry.clear()
        self._peeked.clear()
        for entry in entries:
            await self.consumer.hand_back_entry(entry)

    async def _next_entry(
        self, room: int, block_ms: int, may_reclaim: bool
    ) -> tuple[Entry | None, bool]:
        """The next entry to look at: carried over, reclaimed, or read (up to ``room``
        at once: the rest are carried, their specs read with the first's)."""
        assert self.consumer is not None
        if self._carry:
            return self._carry.pop(0), may_reclaim
        if may_reclaim:
            reclaimed = await self.consumer.reclaim(1)
            if reclaimed:
                return reclaimed[0], True
        entries = await self.consumer.read(max(1, room), block_ms=block_ms)
        if len(entries) > 1:
            specs = await self.consumer.peek_specs([e.job_id for e in entries])
            self._peeked.update(zip((e.job_id for e in entries), specs, strict=True))
        self._carry.extend(entries[1:])
        return (entries[0] if entries else None), False

    async def _peek_spec(self, entry: Entry) -> tuple[JobSpec | None, str | None]:
        """The job's spec and cache key (None, None if its record is gone)."""
        assert self.consumer is not None
        peeked = self._peeked.pop(entry.job_id, None)
        if peeked is not None:
            return peeked
        return await self.consumer.peek_spec(entry.job_id)

    def _claimed(self, entry: Entry, outcome: str, delivery: Delivery | None) -> Delivery | None:
        """Count and log a claim's outcome; the delivery if the job is this worker's now."""
        if delivery is None:
            if outcome in ("dead", "cancelled"):
                state = JobState.FAILED if outcome == "dead" else JobState.CANCELLED
                metrics.JOBS_FINISHED.labels(state.value).inc()
                log.info("job %s %s without running", entry.job_id, state.value.lower())
            return None
        if delivery.took_over:
            metrics.JOBS_RECLAIMED.inc()
        if delivery.attempt == 1:
            rec = delivery.record
            metrics.JOB_QUEUED_SECONDS.observe(max(0.0, rec.started_at - rec.created_at))
        return delivery

    # --- running a batch ------------------------------------------------------------
    async def run_batch(self, batch: Batch, *, overlap: bool = False) -> None:
        """Generate, score and store every job of ``batch`` (or hand it back if stopping);
        ``overlap``: see ``_generate_and_store``."""
        self._running = list(batch.deliveries)
        try:
            if self._stopping:
                await self._end_all(self._running, EndMode.HANDBACK)
                return
            metrics.BATCH_OCCUPANCY.observe(min(1.0, batch.images / batch.budget))
            log.info("engine batch of %d job(s), %d image(s)", len(batch), batch.images)
            await self._generate_and_store(self._running, overlap=overlap)
        finally:
            self._running = []

    async def _generate_and_store(
        self, deliveries: list[Delivery], *, overlap: bool = False
    ) -> None:
        """Run the engine on ``deliveries`` and store their results. With ``overlap`` and the
        next batch claimed already, the results are stored while the engine runs that batch
        (one store in flight: the one before finishes first); else before returning."""
        specs = [d.record.spec for d in deliveries]
        started = time.monotonic()
        digest = specs[0].model_digest
        try:
            rates, shared = await self._learning_rates(digest)
            images = await self._input_images(specs)
            if self.engine_process is not None:
                engine = self._engine_in_process(deliveries, images, rates)
            else:
                engine = self._engine_in_thread(deliveries, images, rates)
            task = asyncio.ensure_future(engine)
            self._start_prefetch()
            results, pack = await task
        except GenerationCancelled:
            await self._after_stop(deliveries)
            return
        except Exception as e:
            await self._failed(deliveries, e)
            return
        self._count_batch(specs, time.monotonic() - started)
        await self._remember_learning_rates(digest, rates, shared)
        done = [(d, r) for d, r in zip(deliveries, results, strict=True) if d.active]
        await self._finish_storing()
        if overlap and (self._prefetched or self._prefetch_task is not None):
            self._storing = [d for d, _ in done]
            self._store_task = asyncio.create_task(self._store(done, pack, started), name="store")
        else:
            await self._store(done, pack, started)

    async def _engine_in_thread(
        self, deliveries: list[Delivery], images: list[bytes] | None, rates: dict[str, float]
    ) -> tuple[list[list[Prototype]], Pack]:
        """Load the model and run the engine in a thread; the prototypes are packaged when
        stored (in a thread too)."""
        specs = [d.record.spec for d in deliveries]
        model, digest = specs[0].model, specs[0].model_digest
        if not self.models.holds(model, digest):
            self._set_phase(deliveries, *loading_phase(model, self.device))
        # the batch's threads are chosen first: loading a model runs on them too
        handle = await asyncio.to_thread(
            _on_threads, self._threads, self.models.get, model, digest, choose=True
        )
        compile = self.settings.engine_compile
        self._set_phase(deliveries, *preparing_phase(specs[0], compile=compile))
        # on the batch's threads, set in the executor thread that runs it (per thread)
        results = await asyncio.to_thread(
            _on_threads,
            self._threads,
            run_engine,
            handle,
            specs,
            images=images,
            device=self.device,
            on_progress=self._progress_callback(deliveries),
            should_stop=self._stop_callback(deliveries),
            compile=compile,
            memory_budget=self.settings.gpu_memory_budget,
            lr_cache=rates,
        )

        def pack(done: list[Done]) -> Awaitable[list[Packaged | Exception]]:
            specs = [d.record.spec for d, _ in done]
            prototypes = [p for _, p in done]
            return asyncio.to_thread(
                _on_threads,
                self._threads,
                package_all,
                handle,
                specs,
                prototypes,
                settings=self.settings,
                device=self.device,
            )

        return results, pack

    async def _engine_in_process(
        self, deliveries: list[Delivery], images: list[bytes] | None, rates: dict[str, float]
    ) -> tuple[list[Packaged | Exception], Pack]:
        """Load, run and package in the engine process (``engine_process.py``), relaying its
        phases and progress; the results come back packaged."""
        assert self.engine_process is not None
        results = await asyncio.to_thread(
            self.engine_process.run,
            [d.record.spec for d in deliveries],
            images=images,
            lr_cache=rates,
            on_phase=self._phase_callback(deliveries),
            on_progress=self._progress_callback(deliveries),
            should_stop=self._stop_callback(deliveries),
        )
        return results, _packaged

    async def _finish_storing(self) -> None:
        """Wait for the results stored in the background (``overlap``), if any."""
        task, self._store_task = self._store_task, None
        if task is None:
            return
        try:
            await task
        except Exception as e:  # unstored jobs stay RUNNING: reclaimed once unheartbeated
            log.warning("storing %d result(s) failed: %s", len(self._storing), e)
        finally:
            self._storing = []

    async def _input_images(self, specs: list[JobSpec]) -> list[bytes] | None:
        """The input images of isolation jobs (from the blob store), None for prototype jobs."""
        if specs[0].mode != "isolation":
            return None
        assert self.consumer is not None
        return [await self.consumer.input_image(spec) for spec in specs]

    async def _store(self, done: list[Done], pack: Pack, started: float) -> None:
        """Package the jobs' prototypes (``pack``: PNGs, tensors, scores; one thread hop for
        all, or nothing to do when the engine process packaged them), then store every
        result in one round trip."""
        consumer = self.consumer
        assert consumer is not None
        for d, _ in done:
            d.phase, d.phase_message = finishing_phase(d.record.spec)
        self._schedule_publish([d for d, _ in done])
        packaged = await pack(done)
        ready: list[FinishedJob] = []
        for (delivery, _), out in zip(done, packaged, strict=True):
            if isinstance(out, Exception):
                await self._failed([delivery], out)
            elif delivery.active:  # a cancel meanwhile ended it already
                steps = max((p.steps for p in out[0]), default=0)
                ready.append(FinishedJob(delivery, *out[:2], steps, out[2]))
        oks = await _persist(lambda: consumer.finish_many(ready))
        elapsed = time.monotonic() - started
        for job, ok in zip(ready, oks, strict=True):
            spec = job.delivery.record.spec
            with bind(
                job_id=job.delivery.job_id, tenant=spec.tenant, trace_id=spec.trace_id or None
            ):
                if ok:
                    metrics.JOBS_FINISHED.labels(JobState.SUCCEEDED.value).inc()
                    metrics.JOB_RUNNING_SECONDS.observe(elapsed)
                    log.info("job %s succeeded in %.2fs", job.delivery.job_id, elapsed)
                else:
                    log.info("job %s finished elsewhere; result discarded", job.delivery.job_id)

    async def _failed(self, deliveries: list[Delivery], error: BaseException) -> None:
        """Retry (or fail, for caller errors); a failing batch is split to find the culprit."""
        permanent = isinstance(error, PERMANENT_ERRORS)
        live = [d for d in deliveries if d.active]
        if len(live) > 1:  # which job caused it is unknown: run each alone
            log.warning("batch of %d failed (%s); running its jobs one by one", len(live), error)
            for delivery in live:
                await self._generate_and_store([delivery])
            return
        failure = job_failure(error, (self.settings.reference_root, self.settings.model_store))
        detail = "".join(traceback.format_exception(error))[-4000:]
        for d in live:  # the detail stays in the server log; the job keeps the clean text
            with bind(job_id=d.job_id, tenant=d.record.spec.tenant):
                log.warning("job %s failed: %s\n%s", d.job_id, failure.message, detail)
        await self._end_all(live, EndMode.FAIL if permanent else EndMode.RETRY, error=failure)

    async def _after_stop(self, deliveries: list[Delivery]) -> None:
        """The engine stopped between steps: cancelled jobs end, the rest go back (shutdown)."""
        cancelled = [d for d in deliveries if d.cancelled and not d.lost]
        await self._end_all(cancelled, EndMode.CANCEL)
        await self._end_all([d for d in deliveries if d.active], EndMode.HANDBACK)

    async def _end_all(
        self, deliveries: list[Delivery], mode: EndMode, *, error: ErrorRecord | None = None
    ) -> None:
        consumer = self.consumer
        assert consumer is not None
        if mode == EndMode.CANCEL:
            for d in deliveries:  # before any await: no other path may end them too
                d.lost = True  # finished: nothing more to report for it
        for d in deliveries:
            outcome = await _persist(
                lambda d=d: consumer.end(d, mode, error=error or "", step=d.step)
            )
            if outcome == EndOutcome.RETRY:
                metrics.JOB_RETRIES.inc()
            elif outcome in (EndOutcome.DEAD, EndOutcome.CANCELLED):
                state = JobState.FAILED if outcome == EndOutcome.DEAD else JobState.CANCELLED
                metrics.JOBS_FINISHED.labels(state.value).inc()
            with bind(job_id=d.job_id, tenant=d.record.spec.tenant):
                log.info("job %s: %s (%s)", d.job_id, outcome, error.message if error else mode)

    async def _learning_rates(self, digest: str) -> tuple[dict[str, float], set[str]]:
        """Rates the finder chose for this model, and the keys Redis had: other workers'
        (Redis) over those this machine found before (``lr_memory``, the cache folder: an
        embedded stack's Redis starts empty, so a second ``protolens demo`` or ``up``
        would pay the probes again). A worker whose Redis does not answer uses the disk's
        alone; with neither, the engine finds them itself."""
        assert self.consumer is not None
        rates = dict(DiskRates(digest))
        try:
            shared = await self.consumer.learning_rates(digest)
        except StoreError as e:
            log.warning("learning rates of %s not read: %s", digest[:12], e)
            shared = {}
        return {**rates, **shared}, set(shared)

    async def _remember_learning_rates(
        self, digest: str, rates: dict[str, float], shared: set[str]
    ) -> None:
        """Share the rates Redis lacked with every worker, and keep those this machine's disk
        lacks there (a folder that cannot be written costs a probe next time, nothing else)."""
        assert self.consumer is not None
        disk = DiskRates(digest)
        unsaved = {k: v for k, v in rates.items() if disk.get(k) != v}
        if unsaved:
            disk.update(unsaved)
        try:
            await self.consumer.remember_learning_rates(
                digest, {k: v for k, v in rates.items() if k not in shared}
            )
        except StoreError as e:
            log.warning("learning rates of %s not shared: %s", digest[:12], e)

    def _count_batch(self, specs: list[JobSpec], seconds: float) -> None:
        self.batches_run += 1
        images = sum(job_images(s) for s in specs)
        steps = specs[0].steps
        metrics.ENGINE_BATCHES.inc()
        metrics.BATCH_JOBS.observe(len(specs))
        if seconds > 0:
            metrics.STEPS_PER_SECOND.set(images * steps / seconds)

    # --- callbacks from the engine thread (no Redis calls in there) -----------------
    def _stop_callback(self, deliveries: list[Delivery]) -> Callable[[], bool]:
        return lambda: self._abort or not any(d.active for d in deliveries)

    def _phase_callback(self, deliveries: list[Delivery]) -> Callable[[str], None]:
        """What the engine process says it started ("loading", "preparing", "finishing"),
        as the jobs' phases: set at once, in the thread that reads the child, as progress
        is (so a progress report that follows is never overwritten), written on the loop."""
        loop = asyncio.get_running_loop()
        spec = deliveries[0].record.spec

        def on_phase(name: str) -> None:
            if name == "finishing":
                phases = [finishing_phase(d.record.spec) for d in deliveries]
            else:
                one = (
                    loading_phase(spec.model, self.device)
                    if name == "loading"
                    else preparing_phase(spec, compile=self.settings.engine_compile)
                )
                phases = [one] * len(deliveries)
            for d, (phase, message) in zip(deliveries, phases, strict=True):
                d.phase, d.phase_message = phase, message
            loop.call_soon_threadsafe(self._schedule_publish, deliveries)

        return on_phase

    def _progress_callback(self, deliveries: list[Delivery]) -> Callable[[ProgressEvent], None]:
        loop = asyncio.get_running_loop()
        slices = job_slices([d.record.spec for d in deliveries])
        images = sum(s.stop - s.start for s in slices)
        last = [0]

        phase, message = optimising_phase(images)
        throttle = Throttle(
            loop,
            lambda: self._schedule_publish(deliveries),
            self.settings.progress_interval_s,
        )

        def on_progress(event: ProgressEvent) -> None:
            metrics.GENERATION_STEPS.inc(max(0, event.step - last[0]) * images)
            last[0] = event.step
            for d, s in zip(deliveries, slices, strict=True):
                d.step = event.step
                d.best_probability = max(event.target_probabilities[s], default=0.0)
                d.phase, d.phase_message = phase, message
            # the start and the last step at once; in between at most every interval
            # (the finishing phase writes the last step too, whatever the throttle held)
            throttle.call(force=event.step == 0 or event.step >= event.total_steps)

        return on_progress

    def _set_phase(self, deliveries: list[Delivery], phase: str, message: str) -> None:
        """Say what the worker is doing for these jobs (written at once, in the background)."""
        for d in deliveries:
            d.phase, d.phase_message = phase, message
        self._schedule_publish(deliveries)

    def _schedule_publish(self, deliveries: list[Delivery]) -> None:
        if self._publish_task is None or self._publish_task.done():
            self._publish_task = asyncio.create_task(self._publish(deliveries))
        else:  # the running round writes these too once it is done with its own
            self._publish_next = deliveries

    async def _publish(self, deliveries: list[Delivery]) -> None:
        """Write each job's latest progress and phase (one round trip for all), and again
        for what was asked while it ran (coalesced), until nothing more was asked."""
        assert self.consumer is not None
        published: dict[str, tuple[int, str]] = {}
        while True:
            todo = [
                d for d in deliveries if d.active and published.get(d.job_id) != (d.step, d.phase)
            ]
            updates = []
            for d in todo:
                published[d.job_id] = (d.step, d.phase)
                total = d.record.spec.steps
                updates.append((d, d.step, total, d.best_probability, d.phase, d.phase_message))
            try:
                await self.consumer.progress_many(updates)
            except StoreError as e:
                log.warning("progress of %d job(s) not written: %s", len(updates), e)
            # Only a new ask starts another round: the engine moves the steps on while a
            # round runs, and writing each time it did would undo the progress throttle.
            if self._publish_next is None:
                return
            deliveries = list({id(d): d for d in (*deliveries, *self._publish_next)}.values())
            self._publish_next = None

    # --- heartbeat -------------------------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        task = asyncio.current_task()
        while task is None or not task.cancelling():
            await asyncio.sleep(self.settings.heartbeat_s)
            try:
                await self.heartbeat()
            except Exception as e:  # the heartbeat must outlive any one failure
                log.warning("heartbeat failed: %s", e)
        # redis-py may swallow a cancellation that lands mid-command (or turn it into a
        # connection error): the loop checks ``cancelling()`` so shutdown never hangs.

    async def _cancel_loop(self) -> None:
        """Read running jobs' cancel flags every ``cancel_poll_s``: a cancel stops the engine
        at its next step instead of waiting for the (slower) heartbeat."""
        task = asyncio.current_task()
        while task is None or not task.cancelling():
            await asyncio.sleep(self.settings.cancel_poll_s)
            running = self._owned()
            if not running or self.consumer is None:
                continue
            try:
                asked = await self.consumer.cancel_requested(running)
            except Exception as e:  # the heartbeat reads the flags too; keep polling
                log.warning("cancel poll failed: %s", e)
                continue
            for d in asked:
                d.cancelled = True  # should_stop sees it at the engine's next step
            await self._end_all([d for d in asked if not d.lost], EndMode.CANCEL)

    async def heartbeat(self) -> None:
        """Mark alive, keep owned and held entries fresh, end jobs whose cancel was asked."""
        assert self.consumer is not None
        running = self._owned()
        await self.consumer.heartbeat(running, self._info())
        metrics.WORKER_HEARTBEATS.inc()
        cancelled = [d for d in running if d.cancelled and not d.lost]
        # These end now; the engine runs on for the rest of the batch (or stops if none).
        await self._end_all(cancelled, EndMode.CANCEL)
        for entry in list(self._carry):
            if not await self.consumer.hold(entry):
                self._carry.remove(entry)
        self._gpu_metrics()

    def _info(self) -> dict[str, str]:
        return {
            "pid": str(os.getpid()),
            "host": socket.gethostname(),
            "device": self.device,
            "metrics_port": str(self.metrics_port or ""),
            "running": ",".join(d.job_id for d in self._running if d.active),
            "batches": str(self.batches_run),
        }

    def _gpu_metrics(self) -> None:
        if not self.device.startswith("cuda"):
            return
        import torch

        if not torch.cuda.is_available():
            return
        if self.engine_process is None:  # else the engine process reports its memory
            metrics.GPU_MEMORY_BYTES.labels(self.device).set(
                torch.cuda.memory_allocated(self.device)
            )
            metrics.GPU_MEMORY_PEAK_BYTES.labels(self.device).set(
                torch.cuda.max_memory_allocated(self.device)
            )
        utilisation = _gpu_utilisation(self.device)
        if utilisation is not None:
            metrics.GPU_UTILISATION.labels(self.device).set(utilisation)

    # --- context manager for tests ---------------------------------------------------
    async def __aenter__(self) -> Worker:
        await self.startup()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()


_NO_UTILISATION: list[bool] = []  # set once reading it failed: not retried every heartbeat


def _gpu_utilisation(device: str) -> float | None:
    """The driver's utilisation of ``device`` over its last sample period (0-1), or None
    where it cannot be read (``torch.cuda.utilization`` needs pynvml or amdsmi)."""
    if _NO_UTILISATION:
        return None
    import torch

    try:
        return float(torch.cuda.utilization(device)) / 100.0
    except Exception:  # no pynvml/amdsmi, no NVML driver library, or an NVML error
        _NO_UTILISATION.append(True)
        return None


async def _packaged(done: list[Done]) -> list[Packaged | Exception]:
    """``pack`` for results the engine process packaged already."""
    return [out for _, out in done]  # type: ignore[misc]


def _warm_up(*, compile: bool, torch_threads: int, device: str) -> TorchThreads:
    """Set torch's CPU threads (``cpu_budget``) and pay torch's lazy imports before the
    first job, not during it: with ``compile``, ``torch._dynamo`` (about 1.5 s and 70 MB).
    Without it the engine never imports it (its optimisers are its own, not
    ``torch.optim``'s), so neither does the worker."""
    threads = TorchThreads(torch_threads, device)
    log.info("torch threads: %d", threads.budget)
    metrics.TORCH_THREADS.set(threads.threads)
    if compile:
        import torch._dynamo  # noqa: F401
    return threads


def _choose_threads(threads: TorchThreads | None) -> None:
    """Choose the batch's torch threads (``cpu_budget.TorchThreads``), set them in the
    calling thread and count them (``run_engine`` logs the count its own thread runs on)."""
    if threads is not None:
        metrics.TORCH_THREADS.set(threads.before_batch())


def _on_threads(
    threads: TorchThreads | None,
    fn: Callable[..., T],
    *args: Any,
    choose: bool = False,
    **kw: Any,
) -> T:
    """``fn(*args, **kw)`` in the calling (executor) thread on the batch's torch threads,
    chosen first where ``choose`` (``_choose_threads``): loading a model and scoring run
    on the batch's count too."""
    if choose:
        _choose_threads(threads)
    elif threads is not None:
        threads.apply()
    return fn(*args, **kw)


async def _persist(call: Callable[[], Awaitable[T]], patience_s: float = 60.0) -> T:
    """Run a final write under ``asyncio.shield``, retrying while Redis is unreachable.

    A result costs GPU minutes: worth waiting out a Redis restart for. The write is
    a check-and-set script, so a retry after a lost reply cannot store twice.
    """
    delay, deadline = 0.1, time.monotonic() + patience_s
    while True:
        try:
            return await asyncio.shield(call())
        except UNREACHABLE as e:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("redis unreachable while storing (%s); retrying in %.1fs", e, delay)
            await asyncio.sleep(delay)
            delay = min(5.0, delay * 2)
