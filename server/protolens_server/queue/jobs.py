"""``JobQueue``: what the gRPC API calls to submit, read, cancel and watch jobs.

All state changes go through the Lua scripts in ``scripts.py``; this module
prepares their arguments and turns their answers into records and domain
errors. Workers use ``queue.delivery`` for their side.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from typing import Any, TypeVar, cast

import redis.asyncio as aioredis

from protolens_server import metrics
from protolens_server.blobs import BlobStore, blob_key, is_blob_key, open_blob_store
from protolens_server.config import Settings
from protolens_server.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    JobNotFound,
    NotFound,
    QueueFull,
    QuotaExceeded,
)
from protolens_server.logging import get_logger
from protolens_server.queue import scripts
from protolens_server.queue.blob_gc import BlobSweep, collect_blobs
from protolens_server.queue.cache import cache_key
from protolens_server.queue.codec import (
    event_from_fields,
    prototypes_from_json,
    record_from_fields,
    record_to_fields,
    scores_from_json,
    text,
)
from protolens_server.queue.connection import client_name, redis_from_url
from protolens_server.queue.keys import (
    CACHE_KEY_FIELD,
    GROUP,
    PARKED,
    PNG_FIELD,
    PRIORITIES,
    PROTOTYPES_FIELD,
    STREAM_FIELD,
    TENANT_FIELD_PREFIX,
    TENANT_QUEUE_FIELD,
    Keys,
)
from protolens_server.queue.pages import Offload, newest_first
from protolens_server.queue.pages import new_record_id as new_job_id
from protolens_server.queue.records import JobEvent, JobRecord, JobSpec, JobState
from protolens_server.queue.watch import EventFanout, check_cursor
from protolens_server.quotas import Quotas, load_quotas

_SUBMIT_TRIES = 20
_INLINE_TARGETS = 64  # specs with more targets are encoded off the event loop
_INLINE_SPEC_BYTES = 16 * 1024  # stored specs larger than this are parsed off it
T = TypeVar("T")
_MAX_ID_CHARS = 256
log = get_logger("protolens.queue")


class JobQueue:
    """The API side of the queue: ``Store.jobs`` (queue/store.py), or, with a connection
    of its own (tests, benches, tools), ``await JobQueue.connect(settings)``."""

    def __init__(
        self,
        redis: aioredis.Redis,
        settings: Settings,
        quotas: Quotas | None = None,
        *,
        offload: Offload | None = None,
        blobs: BlobStore | None = None,
        events_redis: aioredis.Redis | None = None,
    ) -> None:
        self.redis = redis
        # Where result images live (Redis holds their keys): settings.blob_url by default.
        self.blobs = blobs or open_blob_store(
            settings.blob_url, endpoint_url=settings.blob_endpoint_url
        )
        self._next_blob_sweep = 0.0
        # Where large records are encoded and parsed (the API's RequestPool), so a job of
        # a thousand targets never holds the event loop; None: inline.
        self.offload = offload
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self.quotas = quotas if quotas is not None else load_quotas(settings.tenants_file)
        # The shared WatchJob reader's client (``connect_event_reader``); ``redis`` if None.
        self._events_redis = events_redis
        self.events = EventFanout(events_redis or redis, block_ms=settings.watch_read_block_ms)
        self._submit = redis.register_script(scripts.SUBMIT)
        self._cancel = redis.register_script(scripts.CANCEL)

    @classmethod
    async def connect(cls, settings: Settings) -> JobQueue:
        if not settings.redis_url:
            raise InvalidArgument("redis_url", "no Redis configured: set PROTOLENS_REDIS_URL")
        client = connect_redis(settings)
        queue = cls(client, settings, events_redis=connect_event_reader(settings))
        await ensure_groups(client, queue.keys)
        return queue

    async def close(self) -> None:
        await self.events.close()
        if self._events_redis is not None:
            await self._events_redis.aclose()
        await self.redis.aclose()

    # --- submit --------------------------------------------------------------------
    async def submit(self, spec: JobSpec, *, image: bytes | None = None) -> tuple[JobRecord, str]:
        """Queue ``spec`` unless a replay, a cached result or an identical job in flight answers it.

        ``image``: an isolation's input PNG, whose blob key is ``spec.image_key``; it goes
        to the blob store, and a sweep keeps it while a job may read it.
        Returns the caller's view of the job and the outcome: ``queued``,
        ``cache_hit``, ``dedup_join`` or ``idempotent_replay``.
        """
        self._validate(spec)
        if image is not None:
            await self._keep_input(spec, image)
        ck = await self._cpu(_large(spec), cache_key, spec)
        for _ in range(_SUBMIT_TRIES):
            answer = await self._try_submit(spec, ck)
            if answer is not None:
                record, outcome = answer
                metrics.JOBS_CREATED.labels(outcome).inc()
                if outcome in ("queued", "cache_hit", "dedup_join"):
                    metrics.CACHE_LOOKUPS.labels("hit" if outcome == "cache_hit" else "miss").inc()
                if outcome == "dedup_join":
                    metrics.DEDUP_JOINS.inc()
                return record, outcome
        raise QueueFull("the queue is too busy to accept this job right now", retry_after_s=1.0)

    async def _try_submit(self, spec: JobSpec, ck: str) -> tuple[JobRecord, str] | None:
        k = self.keys
        use_idem = bool(spec.request_id)
        idem_key = k.idempotency(spec.tenant, spec.request_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(idem_key)
        pipe.hget(k.result(ck), PROTOTYPES_FIELD)
        pipe.get(k.inflight(ck))
        prev, cached, inflight = await pipe.execute()
        prev = text(prev) if (prev and use_idem) else ""
        if prev:
            try:
                earlier = await self.get(prev, tenant=spec.tenant)
            except JobNotFound:
                pass  # expired, or this tenant cancelled its interest: submit afresh
            else:
                if not earlier.spec.same_request(spec):
                    raise AlreadyExists(
                        f"request_id {spec.request_id!r} was already used for job "
                        f"{earlier.job_id}, a different request; give this request a new "
                        "request_id (a retry must repeat the request exactly)",
                        request_id=spec.request_id,
                        job=earlier.job_id,
                    )
                return earlier, "idempotent_replay"
        inflight = text(inflight) if inflight else ""
        record = self._new_record(spec, ck, cached)
        fields = await self._cpu(_large(spec), record_to_fields, record)
        flat = [x for kv in fields.items() for x in kv]
        inflight_job = k.job(inflight) if inflight else k.job(record.job_id)
        answer = await self._submit(
            keys=[
                idem_key,
                k.result(ck),
                k.inflight(ck),
                inflight_job,
                k.tenant_jobs(spec.tenant),
                k.job(record.job_id),
                k.events(record.job_id),
                k.stream(spec.priority),
                *k.streams,
                *k.tenant_queues(spec.tenant),
                k.ready,
                k.ready_set,
                *k.state_indexes,
            ],
            args=[
                prev,
                inflight,
                "1" if cached is not None else "0",
                record.job_id,
                spec.tenant,
                self.settings.job_retention_s,
                self.settings.max_queued_jobs,
                self.settings.result_ttl_s,
                repr(time.time()),
                record.state.value,
                "1" if use_idem else "0",
                len(fields),
                *flat,
                self.quotas.for_tenant(spec.tenant).max_queued_jobs,
                GROUP,
                PARKED,
                k.tenant_base(spec.tenant),
                spec.priority,
            ],
        )
        outcome, value = text(answer[0]), text(answer[1])
        if outcome == "retry":
            return None
        if outcome == "full":
            raise QueueFull(
                f"the queue holds {value} jobs (limit {self.settings.max_queued_jobs});"
                " retry later",
                retry_after_s=max(1.0, self.settings.heartbeat_s),
            )
        if outcome == "tenant_full":
            limit = self.quotas.for_tenant(spec.tenant).max_queued_jobs
            raise QuotaExceeded(
                f"you have {value} jobs waiting (quota max_queued_jobs={limit}); retry when"
                " some have started",
                quota="max_queued_jobs",
                limit=limit,
                retry_after_s=max(1.0, self.settings.heartbeat_s),
            )
        if outcome == "dedup_join":
            return await self.get(value, tenant=spec.tenant), outcome
        return record, outcome

    async def _keep_input(self, spec: JobSpec, image: bytes) -> None:
        """Store a job's input image as a blob and name it in ``Keys.input_blobs`` until the
        job's record can have expired (a sweep spares a blob named there, and one written
        within its grace, which covers the moment between the two writes)."""
        if blob_key(image) != spec.image_key:
            raise ValueError("the image's blob key is not the spec's image_key")
        await asyncio.to_thread(self.blobs.put, image)
        until = time.time() + self.settings.job_retention_s  # later calls: later times
        await self.redis.zadd(self.keys.input_blobs, {spec.image_key: until})

    def _new_record(self, spec: JobSpec, ck: str, cached: bytes | None) -> JobRecord:
        now = time.time()
        steps = spec.steps
        record = JobRecord(
            job_id=new_job_id(), spec=spec, created_at=now, cache_key=ck, total_steps=steps
        )
        if cached is not None:
            record.prototypes = prototypes_from_json(cached)
            record.state = JobState.SUCCEEDED
            record.cache_hit = True
            record.started_at = record.finished_at = now
            record.step = steps
            record.best_probability = max((p.probability for p in record.prototypes), default=0.0)
        return record

    def _validate(self, spec: JobSpec) -> None:
        s = self.settings
        if spec.priority not in PRIORITIES:
            raise InvalidArgument("priority", f"must be 0 (high), 1 or 2 (got {spec.priority})")
        if not spec.targets:
            raise InvalidArgument("targets", "name at least one target class")
        if len(spec.targets) > s.max_targets_per_job:
            raise InvalidArgument(
                "targets", f"{len(spec.targets)} targets; at most {s.max_targets_per_job} per job"
            )
        steps = spec.steps
        if steps > s.max_steps:
            field = "steps" if spec.config.steps else "max_steps"
            raise InvalidArgument(f"config.{field}", f"{steps} steps; at most {s.max_steps}")
        if not spec.tenant or len(spec.tenant) > _MAX_ID_CHARS:
            raise InvalidArgument("tenant", f"must be 1..{_MAX_ID_CHARS} characters")
        if len(spec.request_id) > _MAX_ID_CHARS:
            raise InvalidArgument("request_id", f"must be at most {_MAX_ID_CHARS} characters")
        limit = self.quotas.for_tenant(spec.tenant).max_target_steps
        if limit and spec.images * steps > limit:
            raise QuotaExceeded(
                job_size_message(spec, limit), quota="max_target_steps", limit=limit,
                retry_after_s=None,
            )  # fmt: skip

    # --- read ------------------------------------------------------------------------
    async def get(self, job_id: str, *, tenant: str | None = None) -> JobRecord:
        """The job as ``tenant`` sees it; JobNotFound if missing or not theirs."""
        fields = await self.redis.hgetall(self.keys.job(job_id)) if job_id else {}
        large = len(fields.get(b"spec") or b"") > _INLINE_SPEC_BYTES
        return await self._cpu(large, self._view, job_id, fields, tenant)

    async def _cpu(self, large: bool, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)``: offloaded when the work is ``large`` and an offload is set."""
        if large and self.offload is not None:
            return cast(T, await self.offload(fn, *args))
        return fn(*args)

    def _view(self, job_id: str, fields: dict[Any, Any], tenant: str | None) -> JobRecord:
        if not fields or b"spec" not in fields:
            raise JobNotFound(f"job {job_id!r} not found", job=job_id)
        if tenant is not None and (TENANT_FIELD_PREFIX + tenant).encode() not in fields:
            raise JobNotFound(f"job {job_id!r} not found", job=job_id)
        record = record_from_fields(fields)
        if tenant is not None and tenant != record.spec.tenant:
            # A tenant that joined another's job sees it as its own: never who else asked.
            record.spec = replace(record.spec, tenant=tenant, request_id="", trace_id="")
        return record

    async def list(
        self, *, tenant: str, page_size: int = 50, page_token: str = ""
    ) -> tuple[list[JobRecord], str]:
        """The tenant's jobs, newest first; pass the returned token for the next page."""
        return await newest_first(
            self.redis,
            self.keys.tenant_jobs(tenant),
            self.keys.job,
            lambda job_id, fields: self._view(job_id, fields, tenant),
            page_size=page_size,
            page_token=page_token,
            offload=self.offload,
        )

    # --- cancel ----------------------------------------------------------------------
    async def cancel(self, job_id: str, *, tenant: str | None = None) -> JobRecord:
        """Cancel: queued jobs at once, running ones between optimisation steps.

        A job shared by several tenants (dedup join) is only detached from the
        calling tenant; the others keep it. Finished jobs: FailedPrecondition.
        """
        k = self.keys
        meta = await self.redis.hmget(
            k.job(job_id), STREAM_FIELD, CACHE_KEY_FIELD, TENANT_QUEUE_FIELD
        )
        stream = text(meta[0]) if meta[0] else k.stream(1)
        ck = text(meta[1]) if meta[1] else ""
        tenant_queue = text(meta[2]) if meta[2] else k.tenant_queue(tenant or "", 1)
        answer = await self._cancel(
            keys=[
                k.job(job_id),
                k.events(job_id),
                stream,
                k.inflight(ck),
                k.tenant_jobs(tenant or ""),
                tenant_queue,
                *k.state_indexes,
            ],
            args=[job_id, tenant or "", repr(time.time()), self.settings.job_retention_s, GROUP],
        )
        outcome, state = text(answer[0]), text(answer[1])
        if outcome == "notfound":
            raise JobNotFound(f"job {job_id!r} not found", job=job_id)
        if outcome == "finished":
            raise FailedPrecondition(
                f"job {job_id} already finished ({state}); only queued or running jobs can be"
                " cancelled",
                job=job_id,
                state=state,
            )
        if outcome == "detached":
            record = record_from_fields(await self.redis.hgetall(k.job(job_id)))
            record.spec = replace(record.spec, tenant=tenant or "", request_id="", trace_id="")
            record.state = JobState.CANCELLED
            record.prototypes = []
            return record
        return await self.get(job_id, tenant=tenant)

    # --- watch -----------------------------------------------------------------------
    async def watch(
        self, job_id: str, *, tenant: str | None = None, after: str = "0"
    ) -> AsyncIterator[tuple[str, JobEvent]]:
        """Past events after ``after``, then new ones as they come, until the job ends.

        Past events are read directly (short reads); live ones come from the
        process's one shared reader (``queue/watch.py``), so a watch holds no Redis
        connection while it waits.
        """
        last = check_cursor(after or "0")
        await self.get(job_id, tenant=tenant)
        key = self.keys.events(job_id)
        checked_end = False
        while True:
            entries = await self.redis.xread({key: last}, count=100)
            entries = entries[0][1] if entries else []
            for entry_id, fields in entries:
                last = text(entry_id)
                event = event_from_fields(job_id, fields, last)
                yield last, event
                if event.state.finished:
                    return
            if entries:
                continue
            if checked_end:
                break
            # Caught up: has the job ended? The script that finished it wrote its final
            # event atomically with the state, so read once more before standing in for
            # that event (one may have landed since the read above).
            try:
                record = await self.get(job_id, tenant=tenant)
            except JobNotFound:
                return
            if not record.state.finished:
                break
            checked_end = True
        if checked_end:
            # Still no final event after the job ended (it was read before ``after``,
            # trimmed or expired): say how the job ended.
            yield last, _final_event(job_id, record)
            return
        async with self.events.subscribe(key, last) as subscription:
            while True:
                entry_id, fields = await subscription.next()
                event = event_from_fields(job_id, fields, text(entry_id))
                yield entry_id, event
                if event.state.finished:
                    return

    # --- results ---------------------------------------------------------------------
    async def get_png(
        self,
        job_id: str,
        index: int,
        *,
        tenant: str | None = None,
        record: JobRecord | None = None,
    ) -> bytes:
        """PNG bytes of prototype ``index`` (its position in ``JobRecord.prototypes``).

        ``record``: the job as ``get(job_id, tenant=tenant)`` just returned it, so a
        caller that already holds it saves a second read and parse of the job hash.
        """
        if record is None or record.job_id != job_id:
            record = await self.get(job_id, tenant=tenant)
        if record.state != JobState.SUCCEEDED:
            raise FailedPrecondition(
                f"job {job_id} is {record.state.value}; prototypes exist once it SUCCEEDED",
                job=job_id,
                state=record.state.value,
            )
        if not 0 <= index < len(record.prototypes):
            raise InvalidArgument(
                "index", f"job {job_id} has prototypes 0..{len(record.prototypes) - 1}"
            )
        stored = await self.redis.hget(
            self.keys.result(record.cache_key), PNG_FIELD.format(index=index)
        )
        # The result hash names the blob (results stored before the blob store hold the
        # bytes themselves, until they expire).
        png = stored
        if stored is not None and is_blob_key(stored):
            png = await asyncio.to_thread(self.blobs.get, text(stored))
        if png is None:
            raise NotFound(f"the stored image of job {job_id} has expired; submit it again")
        return bytes(png)

    async def get_tensor(
        self,
        job_id: str,
        index: int,
        *,
        tenant: str | None = None,
        record: JobRecord | None = None,
    ) -> bytes:
        """Prototype ``index`` as a float32 safetensors file (``imageio.encode_tensor``):
        the lossless tensor the worker stored, or, for a result stored before tensors
        were, its PNG decoded (8-bit values; metadata ``"from": "png"``)."""
        if record is None or record.job_id != job_id:
            record = await self.get(job_id, tenant=tenant)
        ready = record.state == JobState.SUCCEEDED and 0 <= index < len(record.prototypes)
        key = record.prototypes[index].tensor_key if ready else ""
        if key:
            data = await asyncio.to_thread(self.blobs.get, key)
            if data is None:
                raise NotFound(f"the stored tensor of job {job_id} has expired; submit it again")
            return bytes(data)
        png = await self.get_png(job_id, index, tenant=tenant, record=record)  # checks state
        return await asyncio.to_thread(_tensor_from_png, png)

    async def load_scores(self, record: JobRecord, indexes: Sequence[int] | None = None) -> None:
        """Fill ``scores`` of the record's prototypes (all, or those at ``indexes``) from the
        blob store; a prototype whose scores blob is gone (its result expired) keeps None."""
        wanted = range(len(record.prototypes)) if indexes is None else indexes
        todo = [i for i in wanted if record.prototypes[i].scores_key]
        if not todo:
            return
        raws = await asyncio.to_thread(
            lambda: [self.blobs.get(record.prototypes[i].scores_key) for i in todo]
        )
        for i, raw in zip(todo, raws, strict=True):
            if raw is not None:
                record.prototypes[i] = replace(record.prototypes[i], scores=scores_from_json(raw))

    async def collect_blobs(self) -> BlobSweep:
        """Delete the blobs no stored result names (older than ``blob_gc_grace_s``)."""
        return await collect_blobs(
            self.redis, self.keys, self.blobs, grace_s=self.settings.blob_gc_grace_s
        )

    async def collect_blobs_if_due(self) -> BlobSweep | None:
        """``collect_blobs`` once per ``blob_gc_interval_s`` across all API replicas
        (the first to set the lock key sweeps); None when not due here."""
        interval = self.settings.blob_gc_interval_s
        now = time.monotonic()
        if interval <= 0 or now < self._next_blob_sweep:
            return None
        self._next_blob_sweep = now + interval
        if not await self.redis.set(self.keys.blob_gc_lock, "1", nx=True, px=int(interval * 1000)):
            return None
        sweep = await self.collect_blobs()
        log.info(
            "blobs.collected",
            extra={"results": sweep.results, "deleted": sweep.deleted, "young": sweep.kept_young},
        )
        return sweep

    # --- operations ------------------------------------------------------------------
    async def stats(self) -> dict[str, Any]:
        """Queue depth per priority, oldest waiting age, jobs by state, dead letters, workers."""
        return await queue_stats(self.redis, self.keys, self.settings)

    async def update_metrics(self) -> dict[str, Any]:
        """Sample ``stats()`` into the queue gauges of ``protolens_server.metrics``."""
        stats = await self.stats()
        set_queue_gauges(stats)
        return stats


def job_size_message(spec: JobSpec, limit: int) -> str:
    """Why a job is over the tenant's ``max_target_steps``, and what would fit."""
    steps, images = spec.steps, spec.images
    field = "config.steps" if spec.config.steps else "config.max_steps"
    fits = [f"split it into jobs of at most {limit // steps} targets x prototypes each"]
    if limit // images:
        fits.append(f"lower {field} to {limit // images} or less")
    return (
        f"{len(spec.targets)} targets x {spec.prototypes_per_target} prototypes x {steps}"
        f" steps ({field}) = {images * steps:,} target-steps; your quota max_target_steps is"
        f" {limit:,}: {' or '.join(fits)} (an operator can raise the quota in tenants_file)"
    )


def connect_redis(settings: Settings) -> aioredis.Redis:
    """The API's async client for ``settings.redis_url``: a bounded pool that waits for a
    free connection (``redis_max_connections``, ``redis_pool_timeout_s``; queue/connection.py).
    """
    return redis_from_url(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        pool_timeout_s=settings.redis_pool_timeout_s,
        client_name=client_name("api"),
    )


def connect_event_reader(settings: Settings) -> aioredis.Redis:
    """The client of a process's one WatchJob reader (``queue/watch.py``): a connection of
    its own, outside the request pool, so its blocking read never waits behind a flood of
    requests for a pooled connection (when it did, a busy pool ended every watch)."""
    return redis_from_url(settings.redis_url, client_name=client_name("events"))


def _large(spec: JobSpec) -> bool:
    return len(spec.targets) > _INLINE_TARGETS


def _final_event(job_id: str, record: JobRecord) -> JobEvent:
    return JobEvent(
        job_id,
        record.state,
        record.step,
        record.total_steps,
        record.best_probability,
        record.error,
    )


async def ensure_groups(redis: aioredis.Redis, keys: Keys) -> None:
    """Create the ``workers`` consumer group on every priority stream (idempotent)."""
    for stream in keys.streams:
        try:
            await redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
        except aioredis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise


async def queue_stats(redis: aioredis.Redis, keys: Keys, settings: Settings) -> dict[str, Any]:
    now = time.time()
    depth: dict[str, int] = {}
    running_entries: dict[str, int] = {}
    oldest = 0.0
    for p, stream in zip(PRIORITIES, keys.streams, strict=True):
        # Waiting jobs' entries sit with the PARKED consumer; the rest of the pending
        # entries are taken by workers (running, or about to).
        waiting = pending = 0
        try:
            summary = await redis.xpending(stream, GROUP)
            pending = int(summary["pending"])
            for c in summary.get("consumers") or []:
                if text(c["name"]) == PARKED:
                    waiting = int(c["pending"])
        except aioredis.ResponseError:
            pass
        depth[str(p)] = waiting
        running_entries[str(p)] = pending - waiting
        head = []
        if waiting:
            head = await redis.xpending_range(stream, GROUP, "-", "+", 1, consumername=PARKED)
        if head:
            ms = int(text(head[0]["message_id"]).split("-")[0])
            oldest = max(oldest, now - ms / 1000)
    horizon = now - settings.job_retention_s
    pipe = redis.pipeline(transaction=False)
    for state in JobState:
        if state.finished:
            pipe.zremrangebyscore(keys.by_state(state), "-inf", horizon)
        pipe.zcard(keys.by_state(state))
    counts = [c for c in await pipe.execute()]
    by_state: dict[str, int] = {}
    i = 0
    for state in JobState:
        if state.finished:
            i += 1
        by_state[state.value] = int(counts[i])
        i += 1
    # Workers killed without a goodbye linger in the set; forget them after an hour.
    forget_before = now - max(3600.0, 10 * settings.reclaim_idle_s)
    await redis.zremrangebyscore(keys.workers, "-inf", forget_before)
    alive = await redis.zcount(keys.workers, now - settings.reclaim_idle_s, "+inf")
    return {
        "queue_depth": depth,
        "pending": running_entries,
        "oldest_queued_age_s": oldest,
        "jobs_by_state": by_state,
        "dead_letters": int(await redis.xlen(keys.dead)),
        "workers_alive": int(alive),
    }


def set_queue_gauges(stats: dict[str, Any]) -> None:
    for p, n in stats["queue_depth"].items():
        metrics.QUEUE_DEPTH.labels(p).set(n)
    metrics.QUEUE_OLDEST_AGE.set(stats["oldest_queued_age_s"])
    for state, n in stats["jobs_by_state"].items():
        metrics.JOBS_BY_STATE.labels(state).set(n)
    metrics.DEAD_LETTERS.set(stats["dead_letters"])
    metrics.WORKERS_ALIVE.set(stats["workers_alive"])


def _tensor_from_png(png: bytes) -> bytes:
    from protolens_server.imageio import decode_png, encode_tensor, png_channels, png_provenance

    meta = {**png_provenance(png), "from": "png"}
    return encode_tensor(decode_png(png, png_channels(png)), meta)  # an alpha stays
