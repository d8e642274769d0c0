"""Checks run by the service: generation goes through the job queue, so workers generate
and the content cache is shared; comparison and the report run here (in a thread).

``CheckRunner.start(...)`` validates at once (models, classes, policy), submits
one job per chunk of classes per version with ``JobQueue.submit`` (a cached
chunk is answered at once: ``cache_hit``), waits for the jobs, reads their PNGs
and scores back, then runs the same ``analyse`` as ``run_check``. Checks live in
this API process's memory (``MAX_CHECKS`` kept, oldest finished dropped first);
their jobs, results and cache are in Redis like any other job's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from protolens_server.checks.local_cache import group_by_class
from protolens_server.checks.policy import Policy
from protolens_server.checks.prototypes import (
    DEFAULT_CHUNK,
    ClassPrototypes,
    GenerationStats,
    check_spec,
    chunks,
)
from protolens_server.checks.result import CheckResult, ModelRef
from protolens_server.checks.run import analyse, check_compatible, resolve_classes
from protolens_server.engine.types import GenerationConfig
from protolens_server.errors import FailedPrecondition, JobNotFound, ProtolensError
from protolens_server.queue.records import JobRecord, JobSpec, JobState

MAX_CHECKS = 256
log = logging.getLogger(__name__)
POLL_S = 0.2


@dataclass
class CheckRun:
    check_id: str
    tenant: str
    model: str
    baseline: str
    state: str = "RUNNING"  # RUNNING | SUCCEEDED | FAILED | CANCELLED
    progress: float = 0.0
    message: str = "starting"
    created_at: float = field(default_factory=time.time)
    finished_at: float = 0.0
    stats: GenerationStats = field(default_factory=GenerationStats)
    result: CheckResult | None = None
    html: str = ""
    json: str = ""
    error: ProtolensError | None = None
    job_ids: list[str] = field(default_factory=list)
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def finished(self) -> bool:
        return self.state != "RUNNING"


@dataclass
class _Version:
    name: str
    handle: Any
    info: Any
    reference_digest: str = ""


class CheckRunner:
    def __init__(
        self,
        queue: Any,
        catalog: Any,
        settings: Any,
        resolve_reference: Any = None,
        *,
        chunk_size: int = DEFAULT_CHUNK,
    ) -> None:
        self.queue = queue
        self.catalog = catalog
        self.settings = settings
        self.resolve_reference = resolve_reference
        self.chunk_size = chunk_size
        self.checks: OrderedDict[str, CheckRun] = OrderedDict()

    async def start(
        self,
        *,
        tenant: str,
        model: str,
        baseline: str = "",
        classes: list[str] | None = None,
        config: GenerationConfig,
        seed: int = 0,
        reference_set: str = "",
        policy: Policy,
    ) -> CheckRun:
        """Validate, then run in the background; returns the RUNNING check."""
        new = await self._version(model)
        old = await self._version(baseline) if baseline else None
        check_compatible(new.handle, old.handle if old else None)
        wanted = resolve_classes(new.handle, classes)
        if reference_set:
            for v in filter(None, (new, old)):
                v.reference_digest = await asyncio.to_thread(
                    self.resolve_reference, reference_set, v.info, tuple(wanted)
                )
        run = CheckRun(secrets.token_hex(8), tenant, new.name, old.name if old else "")
        versions = [v for v in (new, old) if v is not None]
        specs = [
            (v, check_spec(
                v.name, v.info.digest, chunk, config, seed,
                reference_set=reference_set, reference_digest=v.reference_digest, tenant=tenant,
            ))
            for v in versions
            for chunk in chunks(wanted, self.chunk_size)
        ]  # fmt: skip
        records = await self._submit(run, specs)
        self._remember(run)
        run.task = asyncio.create_task(
            self._run(run, new, old, specs, records, config, seed, policy),
            name=f"protolens-check-{run.check_id}",
        )
        return run

    async def _submit(
        self, run: CheckRun, specs: list[tuple[_Version, JobSpec]]
    ) -> list[JobRecord]:
        """One job per chunk; a cached chunk comes back finished (``cache_hit``)."""
        records = []
        try:
            for _, spec in specs:
                record, outcome = await self.queue.submit(spec)
                run.stats.add(outcome == "cache_hit", record.job_id)
                run.job_ids.append(record.job_id)
                records.append(record)
        except BaseException:
            await asyncio.shield(self._cancel_jobs(run))
            raise
        run.message = f"{run.stats.cache_hits}/{run.stats.jobs} jobs from the cache"
        return records

    def get(self, check_id: str, tenant: str) -> CheckRun:
        run = self.checks.get(check_id)
        if run is None or run.tenant != tenant:
            raise JobNotFound(f"check {check_id!r} not found", check=check_id)
        return run

    async def cancel(self, check_id: str, tenant: str) -> CheckRun:
        run = self.get(check_id, tenant)
        if run.finished:
            raise FailedPrecondition(f"check {check_id} already ended {run.state}")
        if run.task is not None:
            run.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await run.task
        return run

    async def close(self) -> None:
        for run in list(self.checks.values()):
            if run.task is not None and not run.task.done():
                run.task.cancel()

    # -- internals -----------------------------------------------------------------
    async def _version(self, name: str) -> _Version:
        info = await asyncio.to_thread(self.catalog.describe, name)
        handle = await asyncio.to_thread(self.catalog.load, info.name)
        return _Version(info.name, handle, info)

    def _remember(self, run: CheckRun) -> None:
        self.checks[run.check_id] = run
        while len(self.checks) > MAX_CHECKS:
            oldest = next((k for k, r in self.checks.items() if r.finished), None)
            if oldest is None:
                break
            del self.checks[oldest]

    async def _run(
        self,
        run: CheckRun,
        new: _Version,
        old: _Version | None,
        specs: list[tuple[_Version, JobSpec]],
        records: list[JobRecord],
        config: GenerationConfig,
        seed: int,
        policy: Policy,
    ) -> None:
        try:
            versions = [v for v in (new, old) if v is not None]
            records = await self._wait(run, records)
            run.message, run.progress = "comparing", max(run.progress, 0.95)
            produced: dict[int, dict[int, ClassPrototypes]] = {id(v): {} for v in versions}
            for (v, spec), record in zip(specs, records, strict=True):
                for cp in await self._read(spec, record, run.tenant):
                    produced[id(v)][cp.class_index] = cp
            result = await asyncio.to_thread(
                analyse,
                new.handle,
                produced[id(new)],
                baseline_model=old.handle if old else None,
                baseline_prototypes=produced[id(old)] if old else None,
                policy=policy,
                model_ref=ModelRef(new.name, new.info.digest, new.info.source),
                baseline_ref=ModelRef(old.name, old.info.digest, old.info.source) if old else None,
                config=config,
                seed=seed,
                stats=run.stats,
                reference_digest=new.reference_digest,
            )
            run.html, run.json = await asyncio.to_thread(_render, result)
            run.result, run.state, run.progress, run.message = result, "SUCCEEDED", 1.0, "done"
        except asyncio.CancelledError:
            run.state, run.message = "CANCELLED", "cancelled"
            await asyncio.shield(self._cancel_jobs(run))
        except ProtolensError as exc:
            run.state, run.error, run.message = "FAILED", exc, str(exc)
        except Exception as exc:  # a bug: keep serving, say so on the check
            log.error("check.internal_error", exc_info=exc, extra={"check": run.check_id})
            run.state, run.message = "FAILED", "internal error"
            run.error = ProtolensError(f"internal error: {type(exc).__name__}")
        finally:
            run.finished_at = time.time()

    async def _wait(self, run: CheckRun, records: list[JobRecord]) -> list[JobRecord]:
        while True:
            records = [
                r if r.state.finished else await self.queue.get(r.job_id, tenant=run.tenant)
                for r in records
            ]
            done = sum(1.0 if r.state.finished else r.step / max(1, r.total_steps) for r in records)
            run.progress = 0.95 * done / max(1, len(records))
            bad = next(
                (r for r in records if r.state.finished and r.state != JobState.SUCCEEDED), None
            )
            if bad is not None:
                raise FailedPrecondition(
                    f"generation job {bad.job_id} ended {bad.state.value}: {bad.error}",
                    job=bad.job_id,
                )
            if all(r.state.finished for r in records):
                return records
            await asyncio.sleep(POLL_S)

    async def _read(self, spec: JobSpec, record: JobRecord, tenant: str) -> list[ClassPrototypes]:
        pngs = [
            await self.queue.get_png(record.job_id, i, tenant=tenant)
            for i in range(len(record.prototypes))
        ]
        items = [{"probability": p.probability, "scores": p.scores} for p in record.prototypes]
        return group_by_class(spec, items, pngs, hit=record.cache_hit, job_id=record.job_id)

    async def _cancel_jobs(self, run: CheckRun) -> None:
        for job_id in run.job_ids:
            with contextlib.suppress(ProtolensError):
                await self.queue.cancel(job_id, tenant=run.tenant)


def _render(result: CheckResult) -> tuple[str, str]:
    import json

    from protolens_server.checks.report import render_html

    return render_html(result), json.dumps(result.to_dict(), indent=2)
