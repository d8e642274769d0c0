"""The worker's side of the queue: read and reclaim entries, own them, report, finish.

Delivery semantics (at least once, exactly one stored result):

- ``read`` takes waiting jobs fairly (``scripts.TAKE``: round robin over
  tenants, priorities within a tenant) by claiming their entries from the
  ``PARKED`` consumer; ``reclaim`` takes entries other workers stopped
  heartbeating. Both put an entry in this consumer's pending list;
  ``claim`` then makes this worker the job's *owner* (a token unique to the
  delivery) and counts an attempt. Only the owner may report progress or
  finish the job, and a finished job is never rewritten, so when a slow worker
  and the worker that reclaimed its job both finish, one result is stored.
- ``heartbeat`` resets the idle time of owned entries (``XCLAIM ... JUSTID``),
  so only entries of workers that stopped heartbeating become reclaimable, and
  returns each job's cancel flag.
- ``end`` gives a job up: retry, fail (dead letter), cancel or hand back.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from dataclasses import dataclass, field, replace
from typing import Any

import redis.asyncio as aioredis

from protolens_server.blobs import BlobStore, open_blob_store
from protolens_server.config import Settings
from protolens_server.errors import ErrorRecord, InvalidArgument, NotFound
from protolens_server.queue import scripts
from protolens_server.queue.batch_calls import run_scripts
from protolens_server.queue.codec import (
    prototypes_to_json,
    record_from_fields,
    scores_to_json,
    spec_from_json,
    text,
)
from protolens_server.queue.connection import is_cluster
from protolens_server.queue.keys import (
    BLOBS_FIELD,
    CACHE_KEY_FIELD,
    CANCEL_FIELD,
    GROUP,
    JOB_ID_FIELD,
    PARKED,
    PNG_FIELD,
    PROTOTYPES_FIELD,
    SPEC_FIELD,
    Keys,
)
from protolens_server.queue.records import EndMode, EndOutcome, JobRecord, JobSpec, StoredPrototype
from protolens_server.quotas import Quotas, load_quotas

# An entry handed back gets this idle time (plus how long it has been in the line of
# handed-back entries), so the next reclaim of any worker takes it, oldest in line first.
HANDBACK_IDLE_MS = 31_536_000_000
_SCAN_ROWS = 1000  # pending entries looked at per worker consumer when reclaiming


@dataclass(frozen=True)
class Entry:
    """A stream entry in this consumer's pending list, not yet claimed.

    ``line_since_ms``: when a batch first passed this entry over (unix ms; 0 if never):
    its place in the line of passed-over entries, kept when it is passed over again.
    """

    stream: str
    entry_id: str
    job_id: str
    reclaimed: bool = False
    line_since_ms: int = 0


@dataclass
class Delivery:
    """A job this worker owns for one attempt."""

    entry: Entry
    token: str
    record: JobRecord
    attempt: int
    cancelled: bool = False  # cancel was asked (set by heartbeat)
    lost: bool = False  # another delivery owns the job now, or it finished (set by heartbeat)
    took_over: bool = False  # the job was RUNNING under a worker that stopped heartbeating
    step: int = 0  # latest progress, kept by the worker
    best_probability: float = 0.0
    phase: str = ""  # what the worker is doing for it (a JobPhase value), kept by the worker
    phase_message: str = ""

    @property
    def active(self) -> bool:
        return not (self.cancelled or self.lost)

    @property
    def job_id(self) -> str:
        return self.entry.job_id


@dataclass(frozen=True)
class FinishedJob:
    """A job's result as ``QueueConsumer.finish_many`` stores it: its prototypes, each
    one's PNG and float32 tensor (safetensors), and the steps it took."""

    delivery: Delivery
    prototypes: list[StoredPrototype]
    pngs: list[bytes]
    step: int
    tensors: list[bytes] = field(default_factory=list)


class QueueConsumer:
    """One worker's connection to the queue, as consumer ``name`` of group ``workers``."""

    def __init__(
        self,
        redis: aioredis.Redis,
        settings: Settings,
        name: str,
        *,
        blobs: BlobStore | None = None,
        quotas: Quotas | None = None,
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.name = name
        self.keys = Keys(settings.key_prefix)
        # Where result images go (Redis keeps their keys): settings.blob_url by default.
        self.blobs = blobs or open_blob_store(
            settings.blob_url, endpoint_url=settings.blob_endpoint_url
        )
        self._claim = redis.register_script(scripts.CLAIM)
        self._heartbeat = redis.register_script(scripts.HEARTBEAT)
        self._hold = redis.register_script(scripts.HOLD)
        self._cancel_flags = redis.register_script(scripts.CANCEL_FLAGS)
        self._progress = redis.register_script(scripts.PROGRESS)
        self._finish = redis.register_script(scripts.FINISH)
        self._end = redis.register_script(scripts.END)
        self._take = redis.register_script(scripts.TAKE)
        # per-tenant running limits: the Store's quotas, or settings.tenants_file read here
        quotas = quotas if quotas is not None else load_quotas(settings.tenants_file)
        default_running, own = quotas.running_limits()
        self._running_limits = (default_running, json.dumps(own) if own else "{}")

    async def input_image(self, spec: JobSpec) -> bytes:
        """A job's input image (an isolation's PNG): from the blob store by ``image_key``,
        or inline (base64) in a record written before the blob store."""
        if spec.image_key:
            data = await asyncio.to_thread(self.blobs.get, spec.image_key)
            if data is None:
                raise NotFound("the job's input image is gone from the blob store; submit it again")
            return data
        if spec.image:
            return base64.b64decode(spec.image)
        raise InvalidArgument("image", "the job names no input image")

    async def ensure_groups(self) -> None:
        """Create the ``workers`` group on every priority stream (idempotent)."""
        from protolens_server.queue.jobs import ensure_groups

        await ensure_groups(self.redis, self.keys)

    async def close(self) -> None:
        await self.redis.aclose()

    async def peek_spec(self, job_id: str) -> tuple[JobSpec | None, str | None]:
        """A job's spec and cache key before claiming it (None, None if its record is gone)."""
        return (await self.peek_specs([job_id]))[0]

    async def peek_specs(self, job_ids: list[str]) -> list[tuple[JobSpec | None, str | None]]:
        """``peek_spec`` for many jobs in one round trip."""
        if not job_ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hmget(self.keys.job(job_id), SPEC_FIELD, CACHE_KEY_FIELD)
        out: list[tuple[JobSpec | None, str | None]] = []
        for raw, ck in await pipe.execute():
            if raw is None:
                out.append((None, None))
            else:
                out.append((spec_from_json(raw), text(ck) if ck is not None else None))
        return out

    # --- taking work -----------------------------------------------------------------
    async def read(self, count: int, *, block_ms: int = 0) -> list[Entry]:
        """Up to ``count`` waiting jobs, taken fairly across tenants (p0 first within one).

        With ``block_ms`` and nothing waiting, wait until a job is queued (or the time is up).
        """
        out = await self._take_jobs(count)
        if not out and block_ms > 0:
            # Wakes on any new entry (a submit or a retry), then takes again.
            await self.redis.xread({s: "$" for s in self.keys.streams}, count=1, block=block_ms)
            out = await self._take_jobs(count)
        return out

    async def _take_jobs(self, count: int) -> list[Entry]:
        default_running, own = self._running_limits
        reply = await self._take(
            keys=[self.keys.ready, self.keys.ready_set],
            args=[self.keys.prefix, GROUP, PARKED, self.name, count, default_running, own],
        )
        flat = [text(v) for v in reply]
        return [Entry(flat[i], flat[i + 1], flat[i + 2]) for i in range(0, len(flat), 3)]

    async def reclaim(self, count: int) -> list[Entry]:
        """Up to ``count`` entries no worker is running, in the order they should run.

        First the line of entries handed back (passed over by a batch of another
        config, or read ahead and released), in the order they were first passed
        over; then entries of workers that stopped heartbeating (idle longer than
        ``reclaim_idle_s``), p0 first. Only entries held by workers: the ``PARKED``
        consumer's waiting entries are taken in fair order by ``read``.
        """
        min_idle = int(self.settings.reclaim_idle_s * 1000)
        now_ms = int(time.time() * 1000)
        found: list[tuple[tuple[int, int, int], str, str, int]] = []
        for rank, stream in enumerate(self.keys.streams):
            summary = await self.redis.xpending(stream, GROUP)
            holders = [
                text(c["name"])
                for c in summary.get("consumers") or []
                if text(c["name"]) != PARKED and int(c["pending"]) > 0
            ]
            for holder in holders:
                rows = await self.redis.xpending_range(
                    stream, GROUP, "-", "+", _SCAN_ROWS, consumername=holder, idle=min_idle
                )
                for row in rows:
                    idle = int(row["time_since_delivered"])
                    since = now_ms - (idle - HANDBACK_IDLE_MS) if idle >= HANDBACK_IDLE_MS else 0
                    order = (0, 0, since) if since else (1, rank, -idle)
                    found.append((order, stream, text(row["message_id"]), since))
        found.sort(key=lambda f: f[0])
        out: list[Entry] = []
        for _order, stream, entry_id, since in found:
            if len(out) >= count:
                break
            for claimed_id, fields in await self.redis.xclaim(
                stream, GROUP, self.name, min_idle, [entry_id]
            ):
                if fields:
                    job_id = text(fields[b"job"])
                    out.append(Entry(stream, text(claimed_id), job_id, True, since))
                else:  # deleted while pending: nothing to run
                    await self.redis.xack(stream, GROUP, claimed_id)
        return out

    async def claim(
        self, entry: Entry, cache_key: str | None = None
    ) -> tuple[str, Delivery | None]:
        """Own ``entry``'s job for one attempt (``cache_key``: the job's, if already read).

        Returns ("run", delivery) or (outcome, None) where outcome is ``lost``
        (another consumer has it), ``gone`` (record expired), ``skip`` (already
        finished), ``cancelled`` or ``dead`` (out of attempts).
        """
        if cache_key is None:
            ck = await self.redis.hget(self.keys.job(entry.job_id), CACHE_KEY_FIELD)
            cache_key = text(ck) if ck else ""
        return (await self.claim_many([(entry, cache_key)]))[0]

    async def claim_many(
        self, entries: list[tuple[Entry, str]], specs: list[JobSpec | None] | None = None
    ) -> list[tuple[str, Delivery | None]]:
        """``claim`` for many (entry, its job's cache key) in one round trip, in order;
        ``specs``: their specs where already peeked (the records reuse them)."""
        calls, tokens = [], []
        # one random draw for the batch (4 bytes a token, as before): a call to the OS
        # per job costs the worker's event loop a hand-over of the GIL each
        nonces = secrets.token_hex(4 * len(entries))
        for i, (entry, cache_key) in enumerate(entries):
            token = f"{self.name}/{entry.entry_id}/{nonces[8 * i : 8 * i + 8]}"
            tokens.append(token)
            calls.append(self._claim_call(entry, cache_key, token))
        answers = await run_scripts(self.redis, self._claim, calls)
        out: list[tuple[str, Delivery | None]] = []
        known = specs if specs is not None else [None] * len(entries)
        for (entry, _), token, spec, answer in zip(entries, tokens, known, answers, strict=True):
            outcome = text(answer[0])
            if outcome != "run":
                out.append((outcome, None))
                continue
            fields = dict(zip(answer[3::2], answer[4::2], strict=True))
            record = record_from_fields(fields, spec)
            took_over = text(answer[2]) == "RUNNING"
            attempt = int(text(answer[1]))
            out.append((outcome, Delivery(entry, token, record, attempt, took_over=took_over)))
        return out

    def _claim_call(self, entry: Entry, cache_key: str, token: str) -> tuple[list[str], list[Any]]:
        k = self.keys
        return (
            [
                k.job(entry.job_id),
                k.events(entry.job_id),
                entry.stream,
                k.dead,
                k.inflight(cache_key),
                *k.state_indexes,
            ],
            [
                entry.job_id,
                entry.entry_id,
                token,
                self.name,
                self.name,
                GROUP,
                repr(time.time()),
                self.settings.max_attempts,
                self.settings.job_retention_s,
            ],
        )

    async def hold(self, entry: Entry) -> bool:
        """Keep an entry read ahead of its batch from being reclaimed; False if lost."""
        return bool(await self._hold(keys=[entry.stream], args=[GROUP, self.name, entry.entry_id]))

    # --- while running ---------------------------------------------------------------
    async def heartbeat(
        self, deliveries: list[Delivery], info: dict[str, str] | None = None
    ) -> None:
        """Mark this worker alive, keep owned entries fresh, refresh cancel flags.

        Sets ``delivery.cancelled`` / ``delivery.lost`` from what Redis says.
        """
        now = time.time()
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(self.keys.workers, {self.name: now})
        if info:
            pipe.hset(self.keys.worker_info(self.name), mapping=info)
            ttl = max(60, int(self.settings.reclaim_idle_s * 4))
            pipe.expire(self.keys.worker_info(self.name), ttl)
        calls = [
            (
                [self.keys.job(d.job_id), d.entry.stream],
                [d.token, GROUP, self.name, d.entry.entry_id],
            )
            for d in deliveries
        ]
        await pipe.execute()
        flags = await run_scripts(self.redis, self._heartbeat, calls)
        for d, flag in zip(deliveries, flags, strict=True):
            d.lost = int(flag) < 0
            d.cancelled = int(flag) == 1

    async def cancel_requested(self, deliveries: list[Delivery]) -> list[Delivery]:
        """The deliveries whose job has its cancel flag set (one round trip for all: one
        script call, which answers only the flagged ones; a pipeline on a cluster)."""
        if not deliveries:
            return []
        if not is_cluster(self.redis):
            keys = [self.keys.job(d.job_id) for d in deliveries]
            (flagged,) = await run_scripts(self.redis, self._cancel_flags, [(keys, [CANCEL_FIELD])])
            return [deliveries[int(i) - 1] for i in flagged]
        pipe = self.redis.pipeline(transaction=False)
        for d in deliveries:
            pipe.hget(self.keys.job(d.job_id), CANCEL_FIELD)
        flags = await pipe.execute()
        return [d for d, flag in zip(deliveries, flags, strict=True) if flag in (b"1", "1")]

    async def progress_many(
        self, updates: list[tuple[Delivery, int, int, float, str, str]]
    ) -> list[bool]:
        """``progress`` for many jobs in one round trip (``batch_calls.run_scripts``):
        (delivery, step, total, best_probability, phase, phase_message) each."""
        calls = [self._progress_call(*u) for u in updates]
        return [bool(f) for f in await run_scripts(self.redis, self._progress, calls)]

    def _progress_call(
        self,
        delivery: Delivery,
        step: int,
        total: int,
        best_probability: float,
        phase: str = "",
        phase_message: str = "",
    ) -> tuple[list[str], list[Any]]:
        k = self.keys
        return (
            [k.job(delivery.job_id), k.events(delivery.job_id)],
            [
                delivery.token,
                step,
                total,
                repr(float(best_probability)),
                self.settings.job_retention_s,
                phase,
                phase_message,
                repr(time.time()),
            ],
        )

    async def learning_rates(self, model_digest: str) -> dict[str, float]:
        """The rates the engine's finder chose for these weights, by ``engine.lr_key``."""
        raw = await self.redis.hgetall(self.keys.learning_rates(model_digest))
        return {text(k): float(text(v)) for k, v in raw.items()}

    async def remember_learning_rates(self, model_digest: str, rates: dict[str, float]) -> None:
        """Share newly found rates with every worker (a rate is a pure function of its key,
        so concurrent writers agree)."""
        if rates:
            mapping = {k: repr(float(v)) for k, v in rates.items()}
            await self.redis.hset(self.keys.learning_rates(model_digest), mapping=mapping)

    async def progress(
        self,
        delivery: Delivery,
        step: int,
        total: int,
        best_probability: float,
        phase: str = "",
        phase_message: str = "",
    ) -> bool:
        """Record progress (and what the worker is doing: a ``JobPhase``) and add an event."""
        keys, args = self._progress_call(
            delivery, step, total, best_probability, phase, phase_message
        )
        return bool(await self._progress(keys=keys, args=args))

    # --- giving work up ------------------------------------------------------------
    async def finish(
        self,
        delivery: Delivery,
        prototypes: list[StoredPrototype],
        pngs: list[bytes],
        step: int,
        tensors: list[bytes] | None = None,
    ) -> bool:
        """Store the result and mark the job SUCCEEDED; False if this delivery lost the job.
        ``pngs`` and ``tensors`` (float32 safetensors) are each prototype's image files."""
        job = FinishedJob(delivery, prototypes, pngs, step, tensors or [])
        return (await self.finish_many([job]))[0]

    async def finish_many(self, jobs: list[FinishedJob]) -> list[bool]:
        """``finish`` for many jobs: their blobs written in one thread hop, their final
        writes in one round trip. One answer per job (False: the delivery lost it).

        Each final write is a check-and-set script, so running the lot again after a
        lost reply stores nothing twice (a job it already finished answers False).
        """
        if not jobs:
            return []
        # Images and scores go to the blob store first; the result hash names them (a sweep
        # between the two spares them: blob_gc's grace).
        written = await asyncio.to_thread(
            lambda: [_put_blobs(self.blobs, j.prototypes, j.pngs, j.tensors) for j in jobs]
        )
        calls = [
            self._finish_call(job, stored, keys)
            for job, (stored, keys) in zip(jobs, written, strict=True)
        ]
        return [text(a) == "ok" for a in await run_scripts(self.redis, self._finish, calls)]

    def _finish_call(
        self, job: FinishedJob, stored: list[StoredPrototype], blob_keys: list[str]
    ) -> tuple[list[str], list[Any]]:
        k, delivery = self.keys, job.delivery
        ck = delivery.record.cache_key
        protos_json = prototypes_to_json(stored)
        result_fields: list[str | bytes] = [
            PROTOTYPES_FIELD,
            protos_json,
            JOB_ID_FIELD,
            delivery.job_id,
            BLOBS_FIELD,
            " ".join(blob_keys),
        ]
        for i, p in enumerate(stored):
            if p.png_key:
                result_fields += [PNG_FIELD.format(index=i), p.png_key]
        best = max((p.probability for p in job.prototypes), default=0.0)
        return (
            [
                k.job(delivery.job_id),
                k.events(delivery.job_id),
                delivery.entry.stream,
                k.inflight(ck),
                k.result(ck),
                *k.state_indexes,
            ],
            [
                delivery.token,
                GROUP,
                delivery.entry.entry_id,
                delivery.job_id,
                repr(time.time()),
                self.settings.job_retention_s,
                self.settings.result_ttl_s,
                protos_json,
                job.step,
                repr(float(best)),
                len(result_fields) // 2,
                *result_fields,
            ],
        )

    async def end(
        self,
        delivery: Delivery,
        mode: EndMode | str,
        *,
        error: ErrorRecord | str = "",
        step: int = 0,
    ) -> EndOutcome:
        """Give a job up (an ``EndMode``), recording ``error`` (a plain text is a
        ``GENERATION_FAILED`` message). Returns what happened (an ``EndOutcome``).
        """
        try:
            mode = EndMode(mode)
        except ValueError:
            raise ValueError(f"unknown end mode {mode!r}") from None
        failure = error if isinstance(error, ErrorRecord) else ErrorRecord("", error)
        k = self.keys
        spec = delivery.record.spec
        answer = await self._end(
            keys=[
                k.job(delivery.job_id),
                k.events(delivery.job_id),
                delivery.entry.stream,
                k.inflight(delivery.record.cache_key),
                k.dead,
                k.tenant_queue(spec.tenant, spec.priority),
                k.ready,
                k.ready_set,
                *k.state_indexes,
            ],
            args=[
                delivery.token,
                GROUP,
                delivery.entry.entry_id,
                delivery.job_id,
                repr(time.time()),
                self.settings.job_retention_s,
                mode.value,
                failure.message[:4000],
                self.settings.max_attempts,
                self.name,
                step,
                PARKED,
                k.tenant_base(spec.tenant),
                failure.reason,
                json.dumps(failure.metadata, separators=(",", ":")),
            ],
        )
        return EndOutcome(text(answer))

    async def hand_back_entry(self, entry: Entry) -> None:
        """Release an entry read but never claimed so the next reclaim takes it at once,
        keeping its place in the line of handed-back entries (``Entry.line_since_ms``)."""
        waited = int(time.time() * 1000) - entry.line_since_ms if entry.line_since_ms else 0
        await self.redis.xclaim(
            entry.stream,
            GROUP,
            self.name,
            0,
            [entry.entry_id],
            idle=HANDBACK_IDLE_MS + max(0, waited),
            justid=True,
        )

    async def leave(self) -> None:
        """Remove this worker from the heartbeat set (clean shutdown)."""
        await self.redis.zrem(self.keys.workers, self.name)
        await self.redis.delete(self.keys.worker_info(self.name))


def _put_blobs(
    blobs: BlobStore,
    prototypes: list[StoredPrototype],
    pngs: list[bytes],
    tensors: list[bytes] = (),  # type: ignore[assignment]
) -> tuple[list[StoredPrototype], list[str]]:
    """Write each prototype's PNG, float tensor and scores to the blob store; the
    prototypes as Redis keeps them (blob keys, no scores) and every key written."""
    stored, keys = [], []
    for i, p in enumerate(prototypes):
        png_key = blobs.put(pngs[i]) if i < len(pngs) else ""
        tensor_key = blobs.put(tensors[i]) if i < len(tensors) else ""
        scores_key = blobs.put(scores_to_json(p.scores)) if p.scores else ""
        keys += [k for k in (png_key, tensor_key, scores_key) if k]
        stored.append(
            replace(p, png_key=png_key, tensor_key=tensor_key, scores_key=scores_key, scores=None)
        )
    return stored, keys
