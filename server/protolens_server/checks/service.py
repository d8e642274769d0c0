"""Checks run by the service: workers generate through the job queue (content cache shared),
the API replicas keep each check's record in Redis and drive it, one replica at a time.

``CheckRunner.start(...)`` validates at once (models, classes, policy), submits
one job per chunk of classes per version with ``JobQueue.submit`` (a cached
chunk is answered at once: ``cache_hit``), stores the check's record with the
validated request (``queue/checks.py``) and a lease held by this replica, and
drives it in an asyncio task: wait for the jobs, read their PNGs and scores
back, run the same ``analyse`` as ``run_check`` (in a thread), generate the flagged
classes again on more prototypes and analyse once more (``checks.confirmation``; those
jobs follow the first round's in the record), store the result and the report. The
lease is renewed every ``lease_s / 3`` seconds.

Any replica answers get / list / cancel / report from Redis. A replica that
finds a RUNNING check whose lease expired (its driver died) takes the lease and
resumes it: ``get`` does on the spot, ``sweep`` (the API server calls it from
its sampler loop) for every orphan. Resuming rebuilds the job specs from the
stored request (same cache keys), waits on the stored jobs (a job whose record
is gone is submitted again: a cache hit or a dedup join), and analyses; no
generation is repeated. ``cancel`` marks the record CANCELLED (final) and
cancels its jobs; the driver sees it on its next write and stops. ``close``
(API shutdown) stops this replica's drivers and releases their leases, so
another replica resumes them at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from protolens_server.checks.confirmation import (
    Confirmation,
    classes_to_confirm,
    confirmation_config,
    merged,
)
from protolens_server.checks.local_cache import group_by_class
from protolens_server.checks.matching import (
    ClassMatch,
    classes_per_version,
    refuse_numbered_folders,
)
from protolens_server.checks.policy import Policy
from protolens_server.checks.prototypes import (
    DEFAULT_CHUNK,
    ClassPrototypes,
    check_spec,
    chunks,
)
from protolens_server.checks.result import CheckResult, ModelRef
from protolens_server.checks.run import PREVIOUS, analyse, check_compatible, resolve_classes
from protolens_server.engine.types import GenerationConfig
from protolens_server.errors import (
    CheckNotFound,
    ErrorRecord,
    FailedPrecondition,
    InvalidArgument,
    JobNotFound,
    ProtolensError,
    QuotaExceeded,
    ReferenceSetError,
)
from protolens_server.queue.checks import CheckRecord, CheckState, new_check_id
from protolens_server.queue.connection import UNREACHABLE
from protolens_server.queue.records import JobRecord, JobSpec, JobState

if TYPE_CHECKING:
    from protolens_server.config import Settings
    from protolens_server.models.catalog import ModelCatalog
    from protolens_server.models.handle import ModelHandle
    from protolens_server.models.info import ModelInfo
    from protolens_server.queue.store import Store
    from protolens_server.scores.naming import ReferenceResolver


log = logging.getLogger(__name__)
POLL_S = 0.2
LEASE_S = 15.0  # a dead replica's checks are resumed at most this long after it died
IDEMPOTENT_WAIT_S = 60.0  # a retry waits at most this long for the first call's start

_REDIS_DOWN = UNREACHABLE


@dataclass
class _Version:
    name: str
    handle: ModelHandle
    info: ModelInfo
    reference_digest: str = ""


@dataclass
class _Plan:
    """What a driver needs, built the same way at start and on resume."""

    new: _Version
    old: _Version | None
    config: GenerationConfig
    seed: int
    policy: Policy
    specs: list[tuple[_Version, JobSpec]]
    request: dict[str, Any]
    tenant: str
    match: ClassMatch | None = None  # how the versions' classes pair (checks/matching.py)


class _Stop(Exception):
    """The record stopped taking this driver's writes: ended elsewhere, lost, or gone."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class CheckRunner:
    def __init__(
        self,
        store: Store,
        catalog: ModelCatalog,
        settings: Settings,
        resolve_reference: ReferenceResolver | None = None,
        *,
        chunk_size: int = DEFAULT_CHUNK,
        lease_s: float = LEASE_S,
    ) -> None:
        self.queue = store.jobs
        self.catalog = catalog
        self.settings = settings
        self.resolve_reference = resolve_reference
        self.chunk_size = chunk_size
        self.lease_s = lease_s
        self.store = store.check_store
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.driving: dict[str, asyncio.Task[None]] = {}
        # tenant -> checks this process drives or is starting for it (max_checks_per_tenant)
        self._running: dict[str, int] = {}
        self._closed = False

    @property
    def _lease_ms(self) -> int:
        return max(1, int(self.lease_s * 1000))

    # --- the RPCs ----------------------------------------------------------------------
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
        request_id: str = "",
    ) -> CheckRecord:
        """Validate, submit the jobs, store the record, drive it; returns it RUNNING.

        With a ``request_id`` (AIP-155) a retry returns the check the first call started
        (whatever its state now) instead of starting another.
        """
        check_id = new_check_id()
        if request_id:
            first = await self._started_by(tenant, request_id, check_id)
            if first is not None:
                return first
        try:
            self._reserve(tenant)
        except QuotaExceeded:
            if request_id:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.store.forget_request(tenant, request_id, check_id))
            raise
        try:
            return await self._start(
                check_id, tenant, model, baseline, classes, config, seed, reference_set, policy
            )
        except BaseException:
            self._unreserve(tenant)
            if request_id:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.store.forget_request(tenant, request_id, check_id))
            raise

    def _reserve(self, tenant: str) -> None:
        """One of ``tenant``'s ``max_checks_per_tenant`` running checks on this process (held
        until its drive ends); QuotaExceeded if none is free."""
        limit = self.settings.max_checks_per_tenant
        held = self._running.get(tenant, 0)
        if held >= limit:
            raise QuotaExceeded(
                f"you have {held} checks running on this server (limit"
                f" max_checks_per_tenant={limit}); wait for one to end, or cancel one",
                quota="max_checks_per_tenant",
                limit=limit,
                retry_after_s=5.0,
            )
        self._running[tenant] = held + 1

    def _unreserve(self, tenant: str) -> None:
        left = self._running.get(tenant, 0) - 1
        if left > 0:
            self._running[tenant] = left
        else:
            self._running.pop(tenant, None)

    async def _started_by(self, tenant: str, request_id: str, check_id: str) -> CheckRecord | None:
        """The check ``request_id`` started (waiting while its first call is still starting
        it), or None once the id is bound to ``check_id`` for this call to start."""
        deadline = asyncio.get_running_loop().time() + IDEMPOTENT_WAIT_S
        while True:
            first = await self.store.claim_request(tenant, request_id, check_id)
            if not first:
                return None
            with contextlib.suppress(CheckNotFound):  # the first call is still starting it
                return await self.store.get(first, tenant)
            if asyncio.get_running_loop().time() > deadline:
                raise FailedPrecondition(
                    f"the check of request_id {request_id!r} is still starting; retry later",
                    request_id=request_id,
                )
            await asyncio.sleep(POLL_S)

    async def _start(
        self,
        check_id: str,
        tenant: str,
        model: str,
        baseline: str,
        classes: list[str] | None,
        config: GenerationConfig,
        seed: int,
        reference_set: str,
        policy: Policy,
    ) -> CheckRecord:
        if baseline == PREVIOUS:
            baseline = await asyncio.to_thread(self.catalog.previous, model)
        new = await self._version(model)
        try:
            old = await self._version(baseline) if baseline else None
        except InvalidArgument as exc:
            raise exc.for_field("baseline") from None
        match = check_compatible(new.handle, old.handle if old else None, policy)
        wanted = resolve_classes(new.handle, classes)
        if reference_set and old is not None:
            await asyncio.to_thread(self._refuse_numbered_folders, reference_set, new, old, match)
        if reference_set:
            for v in filter(None, (new, old)):
                # each version's own indices of the checked classes (checks/matching.py)
                own = wanted if v is new or match is None else match.baseline_indices(wanted)
                v.reference_digest = await asyncio.to_thread(
                    self.resolve_reference, reference_set, v.info, tuple(own)
                )
        request = {
            "model": new.name,
            "model_digest": new.info.digest,
            "baseline": old.name if old else "",
            "baseline_digest": old.info.digest if old else "",
            "classes": wanted,
            "config": config.to_dict(),
            "seed": int(seed),
            "reference_set": reference_set,
            "reference_digests": [v.reference_digest for v in (new, old) if v is not None],
            "policy": policy.to_dict(),
            "policy_source": policy.source,
            "chunk_size": self.chunk_size,
        }
        record = CheckRecord(check_id, tenant, new.name, request["baseline"], request)
        plan = self._plan(new, old, request, tenant)
        jobs = await self._submit(record, plan.specs)
        try:
            await self.store.create(record, self.owner, self._lease_ms)
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._cancel_jobs(record))
            raise
        self._spawn(record, plan, jobs, reserved=True)
        return record

    async def get(self, check_id: str, tenant: str) -> CheckRecord:
        """The check as stored; resumes it here first if its driver is gone."""
        record = await self.store.get(check_id, tenant)
        if not record.finished and not record.lease_held:
            await self._try_resume(check_id)
        return record

    async def list(
        self, tenant: str, *, page_size: int = 50, page_token: str = ""
    ) -> tuple[list[CheckRecord], str]:
        return await self.store.list(tenant, page_size=page_size, page_token=page_token)

    async def report(self, check_id: str, tenant: str) -> tuple[str, str]:
        record = await self.store.get(check_id, tenant)
        if record.state != CheckState.SUCCEEDED:
            raise FailedPrecondition(f"check {check_id} is {record.state}; no report")
        report = await self.store.report(check_id)
        if report is None:
            raise CheckNotFound(f"the report of check {check_id} has expired", check=check_id)
        return report

    async def cancel(self, check_id: str, tenant: str) -> CheckRecord:
        """Mark it CANCELLED (from any replica) and cancel its jobs."""
        outcome, state = await self.store.cancel(check_id, tenant)
        if outcome == "notfound":
            raise CheckNotFound(f"check {check_id!r} not found", check=check_id)
        if outcome == "finished":
            raise FailedPrecondition(f"check {check_id} already ended {state}")
        record = await self.store.get(check_id, tenant)
        await self._cancel_jobs(record)
        return record

    async def sweep(self) -> int:
        """Resume every RUNNING check whose lease expired; returns how many this replica took."""
        taken = 0
        for check_id in await self.store.orphans():
            taken += await self._try_resume(check_id)
        return taken

    async def tick(self) -> None:
        """The API server's periodic hook."""
        await self.sweep()

    async def close(self) -> None:
        """Stop driving (jobs keep running) and release the leases: another replica resumes."""
        self._closed = True
        tasks = [t for t in self.driving.values() if not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- driving -----------------------------------------------------------------------
    def _spawn(
        self,
        record: CheckRecord,
        plan: _Plan | None,
        jobs: list[JobRecord] | None,
        *,
        reserved: bool = False,
    ) -> None:
        """Drive ``record`` in a task; its tenant's running count holds it until the task
        ends (``reserved``: start() counted it already; a resumed check is counted, never
        refused)."""
        if not reserved:
            self._running[record.tenant] = self._running.get(record.tenant, 0) + 1
        task = asyncio.create_task(
            self._drive(record, plan, jobs), name=f"protolens-check-{record.check_id}"
        )
        self.driving[record.check_id] = task
        task.add_done_callback(lambda t: self._forget(record, t))

    def _forget(self, record: CheckRecord, task: asyncio.Task[None]) -> None:
        self._unreserve(record.tenant)
        if self.driving.get(record.check_id) is task:
            del self.driving[record.check_id]

    async def _try_resume(self, check_id: str) -> bool:
        current = self.driving.get(check_id)
        if self._closed or (current is not None and not current.done()):
            return False
        if not await self.store.take(check_id, self.owner, self._lease_ms):
            return False
        try:
            record = await self.store.get(check_id)
        except CheckNotFound:
            await self.store.release(check_id, self.owner)
            return False
        log.info("check.resumed", extra={"check": check_id, "drives": record.drives})
        self._spawn(record, None, None)
        return True

    async def _drive(
        self, record: CheckRecord, plan: _Plan | None, jobs: list[JobRecord] | None
    ) -> None:
        """Drive one check to its end under the lease (resuming when ``plan`` is None)."""
        renew = asyncio.create_task(self._keep_lease(record.check_id, asyncio.current_task()))
        try:
            if plan is None or jobs is None:
                plan = await self._rebuild(record)
                jobs = await self._submit(record, plan.specs, resume=True)
                await self._write(record, with_jobs=True)
            result = await self._generate_and_analyse(record, plan, jobs)
            html, json_text = await asyncio.to_thread(_render, result)
            doc = result.to_dict()
            record.verdict = {k: doc[k] for k in ("passed", "failed_rules", "flagged_classes")}
            record.state, record.progress, record.message = CheckState.SUCCEEDED, 1.0, "done"
            await self._end(record, html=html, json_text=json_text)
        except _Stop as stop:  # ended elsewhere (cancelled), or another replica drives it
            if stop.why == "CANCELLED":
                await asyncio.shield(self._cancel_jobs(record))
            log.info("check.stopped", extra={"check": record.check_id, "why": stop.why})
        except (asyncio.CancelledError, *_REDIS_DOWN) as exc:
            # close(), a lost lease, or Redis away: the jobs carry on, and a replica (maybe
            # this one, on its next sweep) resumes the check once the lease is free.
            if not isinstance(exc, asyncio.CancelledError):
                log.warning(
                    "check.redis_error", extra={"check": record.check_id, "error": str(exc)}
                )
        except ProtolensError as exc:
            await self._fail(record, exc)
        except Exception as exc:  # a bug: keep serving, say so on the check
            log.error("check.internal_error", exc_info=exc, extra={"check": record.check_id})
            await self._fail(record, ProtolensError(f"internal error: {type(exc).__name__}"))
        finally:
            renew.cancel()
            with contextlib.suppress(Exception):  # only if still ours (a no-op once finished)
                await asyncio.shield(self.store.release(record.check_id, self.owner))

    async def _keep_lease(self, check_id: str, driver: asyncio.Task[Any] | None) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                held = await self.store.renew(check_id, self.owner, self._lease_ms)
            except Exception as exc:  # Redis blip: try again; past the TTL another replica wins
                log.warning(
                    "check.lease_renew_failed", extra={"check": check_id, "error": str(exc)}
                )
                continue
            if not held:
                log.warning("check.lease_lost", extra={"check": check_id})
                if driver is not None:
                    driver.cancel()
                return

    async def _fail(self, record: CheckRecord, exc: ProtolensError) -> None:
        record.state, record.message = CheckState.FAILED, str(exc)
        record.error = ErrorRecord.of(exc).to_dict()  # data: the API maps it to a status
        try:
            await self._end(record)
        except (_Stop, *_REDIS_DOWN) as stop:  # ended elsewhere, or resumed after Redis is back
            log.info("check.fail_not_stored", extra={"check": record.check_id, "why": str(stop)})

    async def _end(self, record: CheckRecord, *, html: str = "", json_text: str = "") -> None:
        answer = await asyncio.shield(
            self.store.finish(record, self.owner, html=html, json_text=json_text)
        )
        if answer != "ok":
            raise _Stop(answer)

    async def _write(self, record: CheckRecord, *, with_jobs: bool = False) -> None:
        answer = await self.store.update(record, self.owner, with_jobs=with_jobs)
        if answer != "RUNNING":
            raise _Stop(answer)

    async def _rebuild(self, record: CheckRecord) -> _Plan:
        """The plan from the stored request; the models must still have the same digests."""
        r = record.request
        new = await self._version(r["model"], r["model_digest"])
        old = await self._version(r["baseline"], r["baseline_digest"]) if r["baseline"] else None
        for v, digest in zip(filter(None, (new, old)), r["reference_digests"], strict=True):
            v.reference_digest = digest
        return self._plan(new, old, r, record.tenant)

    def _plan(self, new: _Version, old: _Version | None, r: dict[str, Any], tenant: str) -> _Plan:
        config = GenerationConfig.from_dict(r["config"])
        policy = Policy.from_dict(r["policy"], source=r["policy_source"] or "policy")
        # the same handles (digests checked) and policy pair the classes the same way
        match = check_compatible(new.handle, old.handle if old else None, policy)
        specs = _specs(new, old, r["classes"], config, r, tenant, match)
        return _Plan(new, old, config, int(r["seed"]), policy, specs, r, tenant, match)

    async def _submit(
        self,
        record: CheckRecord,
        specs: list[tuple[_Version, JobSpec]],
        *,
        resume: bool = False,
        offset: int = 0,
    ) -> list[JobRecord]:
        """One job per chunk (a cached chunk comes back finished: ``cache_hit``). On resume
        the stored jobs are read back; only a job whose record is gone is submitted again.
        ``offset``: where these specs' jobs start in ``record.job_ids`` (the confirming
        round's follow the first round's)."""
        jobs: list[JobRecord] = []
        submitted: list[str] = []
        known = list(record.job_ids[offset:]) if resume else []
        try:
            for i, (_, spec) in enumerate(specs):
                if i < len(known):
                    with contextlib.suppress(JobNotFound):
                        jobs.append(await self.queue.get(known[i], tenant=record.tenant))
                        continue
                job, outcome = await self.queue.submit(spec)
                submitted.append(job.job_id)
                record.stats.add(outcome == "cache_hit", job.job_id)
                jobs.append(job)
        except BaseException:
            if not resume:  # a failed start leaves nothing running
                await asyncio.shield(self._cancel_jobs(record, submitted))
            raise
        # a resumed first round keeps the confirming round's jobs stored after it
        tail = list(record.job_ids[offset + len(specs) :]) if resume else []
        record.job_ids = list(record.job_ids[:offset]) + [j.job_id for j in jobs] + tail
        record.message = f"{record.stats.cache_hits}/{record.stats.jobs} jobs from the cache"
        return jobs

    async def _generate_and_analyse(
        self, record: CheckRecord, plan: _Plan, jobs: list[JobRecord]
    ) -> CheckResult:
        first = await self._produce(record, plan, plan.specs, jobs)
        result = await self._analyse(record, plan, first)
        confirm = classes_to_confirm(result.classes, plan.config)
        if not confirm:
            return result
        # the confirming round (checks/confirmation.py): its jobs follow the first round's
        # in the record, so a resumed drive finds them (the same analysis picks the same
        # classes, the same specs the same cache keys)
        specs = _specs(
            plan.new, plan.old, confirm, confirmation_config(plan.config), plan.request,
            plan.tenant, plan.match,
        )  # fmt: skip
        jobs = await self._submit(record, specs, resume=True, offset=len(plan.specs))
        await self._write(record, with_jobs=True)
        again = await self._produce(record, plan, specs, jobs, doing="confirming flags")
        both = {k: merged(first[k], again[k]) for k in first}
        confirmed = await self._analyse(record, plan, both)
        confirmed.confirmation = Confirmation.of(result.classes, confirm)
        return confirmed

    async def _produce(
        self,
        record: CheckRecord,
        plan: _Plan,
        specs: list[tuple[_Version, JobSpec]],
        jobs: list[JobRecord],
        *,
        doing: str = "generating",
    ) -> dict[str, dict[int, ClassPrototypes]]:
        """Each version's prototypes by class (``"new"``, ``"old"``), once the jobs ended; the
        baseline's keyed by the model's index of their class (``plan.match``)."""
        jobs = await self._wait(record, jobs, doing=doing)
        produced: dict[str, dict[int, ClassPrototypes]] = {"new": {}, "old": {}}
        for (v, spec), job in zip(specs, jobs, strict=True):
            side = "new" if v is plan.new else "old"
            for cp in await self._read(spec, job, record.tenant):
                produced[side][cp.class_index] = cp
        if plan.match is not None:
            produced["old"] = plan.match.to_model(produced["old"])
        return produced

    async def _analyse(
        self, record: CheckRecord, plan: _Plan, produced: dict[str, dict[int, ClassPrototypes]]
    ) -> CheckResult:
        record.message, record.progress = "comparing", max(record.progress, 0.95)
        await self._write(record)
        new, old = plan.new, plan.old
        record.stats.job_ids = list(record.job_ids)
        return await asyncio.to_thread(
            analyse,
            new.handle,
            produced["new"],
            baseline_model=old.handle if old else None,
            baseline_prototypes=produced["old"] if old else None,
            match=plan.match,
            policy=plan.policy,
            model_ref=ModelRef(new.name, new.info.digest, new.info.source),
            baseline_ref=ModelRef(old.name, old.info.digest, old.info.source) if old else None,
            config=plan.config,
            seed=plan.seed,
            stats=record.stats,
            reference_digest=new.reference_digest,
        )

    async def _wait(
        self, record: CheckRecord, jobs: list[JobRecord], *, doing: str = "generating"
    ) -> list[JobRecord]:
        """Until every job ended; each round writes progress (and learns of a cancel)."""
        while True:
            jobs = [
                j if j.state.finished else await self.queue.get(j.job_id, tenant=record.tenant)
                for j in jobs
            ]
            bad = next(
                (j for j in jobs if j.state.finished and j.state != JobState.SUCCEEDED), None
            )
            if bad is not None:
                raise FailedPrecondition(
                    f"generation job {bad.job_id} ended {bad.state.value}: {bad.error}",
                    job=bad.job_id,
                )
            if all(j.state.finished for j in jobs):
                return jobs
            done = sum(1.0 if j.state.finished else j.step / max(1, j.total_steps) for j in jobs)
            ended = sum(j.state.finished for j in jobs)
            record.progress = max(record.progress, 0.95 * done / max(1, len(jobs)))
            record.message = (
                f"{doing}: {ended}/{len(jobs)} jobs done ({record.stats.cache_hits} from the cache)"
            )
            await self._write(record)
            await asyncio.sleep(POLL_S)

    async def _read(self, spec: JobSpec, job: JobRecord, tenant: str) -> list[ClassPrototypes]:
        pngs = [
            await self.queue.get_png(job.job_id, i, tenant=tenant, record=job)
            for i in range(len(job.prototypes))
        ]
        await self.queue.load_scores(job)
        probabilities = [p.probability for p in job.prototypes]
        scores = [p.scores for p in job.prototypes]
        return group_by_class(
            spec, probabilities, scores, pngs, hit=job.cache_hit, job_id=job.job_id
        )

    async def _cancel_jobs(self, record: CheckRecord, job_ids: list[str] | None = None) -> None:
        for job_id in record.job_ids if job_ids is None else job_ids:
            with contextlib.suppress(ProtolensError):
                await self.queue.cancel(job_id, tenant=record.tenant)

    def _refuse_numbered_folders(
        self, name: str, new: _Version, old: _Version, match: ClassMatch | None
    ) -> None:
        """A registered set's numbered class folders must mean one class in both versions
        (``matching.refuse_numbered_folders``): refused before any folder is walked."""
        from protolens_server.scores.naming import FIELD, class_folders, registered_path

        folder = registered_path(self.settings.reference_root, name)
        try:
            folders = [f.name for f in class_folders(folder)]
        except OSError as exc:
            raise ReferenceSetError(
                FIELD, f"reference set {name!r} cannot be read: {exc.strerror or exc}"
            ) from None
        refuse_numbered_folders(
            folders,
            match,
            new.handle.class_names,
            old.handle.class_names,
            where=f"reference set {name!r}",
            field=FIELD,
        )

    async def _version(self, name: str, digest: str = "") -> _Version:
        info = await asyncio.to_thread(self.catalog.describe, name)
        if digest and info.digest != digest:
            raise FailedPrecondition(
                f"model {info.name} changed since the check started (digest {info.digest[:12]},"
                f" was {digest[:12]}); start a new check",
                model=info.name,
            )
        handle = await asyncio.to_thread(self.catalog.load, info.name)
        return _Version(info.name, handle, info)


def _specs(
    new: _Version,
    old: _Version | None,
    classes: list[int],
    config: GenerationConfig,
    r: dict[str, Any],
    tenant: str,
    match: ClassMatch | None,
) -> list[tuple[_Version, JobSpec]]:
    """One job spec per chunk of ``classes`` per version, new first (the queue's cache keys);
    the baseline's chunks hold its own indices of the same classes (``match``)."""
    versions = [new] if old is None else [new, old]
    sides = zip(versions, classes_per_version(classes, match), strict=True)
    return [
        (v, check_spec(
            v.name, v.info.digest, chunk, config, r["seed"],
            reference_set=r["reference_set"], reference_digest=v.reference_digest,
            tenant=tenant,
        ))
        for v, own in sides
        for chunk in chunks(own, r["chunk_size"])
    ]  # fmt: skip


def _render(result: CheckResult) -> tuple[str, str]:
    import json

    from protolens_server.checks.report import render_html

    return render_html(result), json.dumps(result.to_dict(), indent=2)
