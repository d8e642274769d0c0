"""Check records in Redis (``CheckStore``): what every API replica reads, and what the
replica driving a check (``checks/service.py``) writes.

Keys (names in ``queue/keys.py``; ``{id}`` is a Cluster hash tag, so one check's keys
share a slot):

- ``check:{id}``         hash: the record (``CheckRecord``; request, state, progress, ...)
- ``check:{id}:report``  hash: ``html`` and ``json`` of a SUCCEEDED check
- ``check:{id}:lease``   the driving replica's token (``SET NX PX``, renewed while it drives)
- ``tenant:<len>:<tenant>:checks``  the tenant's check ids (score 0: lexical = time order)
- ``checks:running``     ids of RUNNING checks (score = start time): what the sweep reads
- ``checkidem:<len>:<tenant>:<rid>``  the check a tenant's StartCheck ``request_id`` started

Every state change is one Lua script, so it is atomic and one-way: RUNNING ->
SUCCEEDED | FAILED | CANCELLED, and a finished record never changes again;
progress never goes down. The driver's writes are fenced by its lease: a replica
that lost the lease (paused past its TTL while another took over) writes
nothing. Record and report expire ``Settings.job_retention_s`` after their last
write, like job records.
"""

from __future__ import annotations

import enum
import json
import time
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from protolens_server.errors import CheckNotFound
from protolens_server.queue.codec import text
from protolens_server.queue.keys import Keys
from protolens_server.queue.pages import new_record_id, newest_first


class CheckState(enum.StrEnum):
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


RUNNING = CheckState.RUNNING
FINAL_STATES = (CheckState.SUCCEEDED, CheckState.FAILED, CheckState.CANCELLED)

# KEYS: check, lease, tenant index, running set
# ARGV: id, owner, lease_ms, retention_s, created_at, then field/value pairs
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call('ZADD', KEYS[3], 0, ARGV[1])
redis.call('EXPIRE', KEYS[3], ARGV[4])
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[1])
return 1
"""

# KEYS: check, lease.  ARGV: owner, retention_s, progress, then field/value pairs.
# Answers RUNNING when written, else the state that stopped it (or 'gone' / 'lost').
_UPDATE = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 'gone' end
if state ~= 'RUNNING' then return state end
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 'lost' end
local p = tonumber(ARGV[3])
local old = tonumber(redis.call('HGET', KEYS[1], 'progress') or '0') or 0
if p < old then p = old end
redis.call('HSET', KEYS[1], 'progress', string.format('%.6f', p), unpack(ARGV, 4))
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 'RUNNING'
"""

# KEYS: check, lease, report, running.  ARGV: id, owner, retention_s, html, json,
# then field/value pairs (state, finished_at, ...). The driver's end: allowed while the
# lease is its own or nobody's; 'ok' when written, else what stopped it.
_FINISH = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 'gone' end
if state ~= 'RUNNING' then return state end
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[2] then return 'lost' end
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
redis.call('EXPIRE', KEYS[1], ARGV[3])
if ARGV[4] ~= '' or ARGV[5] ~= '' then
  redis.call('HSET', KEYS[3], 'html', ARGV[4], 'json', ARGV[5])
  redis.call('EXPIRE', KEYS[3], ARGV[3])
end
redis.call('ZREM', KEYS[4], ARGV[1])
if holder then redis.call('DEL', KEYS[2]) end
return 'ok'
"""

# KEYS: check, running.  ARGV: id, tenant, now, retention_s.
# Any replica; the driver sees the state on its next write and cancels its jobs.
_CANCEL = """
local f = redis.call('HMGET', KEYS[1], 'tenant', 'state')
if not f[1] or f[1] ~= ARGV[2] then return {'notfound', ''} end
if f[2] ~= 'RUNNING' then return {'finished', f[2]} end
redis.call('HSET', KEYS[1], 'state', 'CANCELLED', 'message', 'cancelled',
  'finished_at', ARGV[3], 'updated_at', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('ZREM', KEYS[2], ARGV[1])
return {'cancelled', 'CANCELLED'}
"""

# KEYS: check, lease.  ARGV: owner, lease_ms. Take over a RUNNING check nobody drives.
_TAKE = """
if redis.call('HGET', KEYS[1], 'state') ~= 'RUNNING' then return 0 end
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'driver', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'drives', 1)
return 1
"""

# KEYS: idempotency key.  ARGV: check id. Forget a request_id whose check never started.
_FORGET_REQUEST = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: lease.  ARGV: owner, lease_ms (0: release).
_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '0' then return redis.call('DEL', KEYS[1]) end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""


@dataclass
class GenerationStats:
    """How much a check generated and how much came from the cache."""

    jobs: int = 0
    cache_hits: int = 0
    generated: int = 0  # jobs that ran the engine
    job_ids: list[str] = field(default_factory=list)

    def add(self, hit: bool, job_id: str = "") -> None:
        self.jobs += 1
        self.cache_hits += int(hit)
        self.generated += int(not hit)
        if job_id:
            self.job_ids.append(job_id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "jobs": self.jobs,
            "cache_hits": self.cache_hits,
            "generated": self.generated,
            "job_ids": list(self.job_ids),
        }


new_check_id = new_record_id  # a check's id has a job id's form (queue/pages.py)


@dataclass
class CheckRecord:
    """One check as stored. ``request`` is the validated, resolved request (models by
    ``name@version`` and digest, class indices, config, seed, reference digests, policy):
    enough to rebuild the same job specs, and so the same cache keys, on any replica."""

    check_id: str
    tenant: str
    model: str
    baseline: str
    request: dict[str, Any]
    state: CheckState = RUNNING
    progress: float = 0.0
    message: str = "starting"
    stats: GenerationStats = field(default_factory=GenerationStats)
    job_ids: list[str] = field(default_factory=list)  # one per job spec, in spec order
    created_at: float = field(default_factory=time.time)
    updated_at: float = 0.0
    finished_at: float = 0.0
    error: dict[str, Any] | None = None  # code, reason, message, metadata
    verdict: dict[str, Any] = field(default_factory=dict)  # passed, failed_rules, flagged_classes
    driver: str = ""  # token of the replica that drives (or drove) it
    drives: int = 1  # 1 + how many times another replica took it over
    lease_held: bool = False  # someone drives it now (read only)

    @property
    def finished(self) -> bool:
        return self.state != RUNNING

    def fields(self) -> dict[str, str]:
        return {
            "tenant": self.tenant,
            "model": self.model,
            "baseline": self.baseline,
            "request": json.dumps(self.request, sort_keys=True),
            "state": self.state,
            "progress": f"{self.progress:.6f}",
            "message": self.message,
            **self.progress_fields(),
            "created_at": repr(self.created_at),
            "updated_at": repr(self.updated_at or self.created_at),
            "driver": self.driver,
            "drives": str(self.drives),
        }

    def progress_fields(self) -> dict[str, str]:
        return {
            "stats": json.dumps(self.stats.to_dict()),
            "job_ids": json.dumps(self.job_ids),
        }

    @classmethod
    def from_fields(cls, check_id: str, raw: dict[Any, Any]) -> CheckRecord:
        f = {text(k): text(v) for k, v in raw.items()}
        stats = json.loads(f.get("stats") or "{}")
        return cls(
            check_id=check_id,
            tenant=f["tenant"],
            model=f.get("model", ""),
            baseline=f.get("baseline", ""),
            request=json.loads(f.get("request") or "{}"),
            state=CheckState(f.get("state") or RUNNING),
            progress=float(f.get("progress") or 0.0),
            message=f.get("message", ""),
            stats=GenerationStats(
                jobs=int(stats.get("jobs", 0)),
                cache_hits=int(stats.get("cache_hits", 0)),
                generated=int(stats.get("generated", 0)),
                job_ids=list(stats.get("job_ids", [])),
            ),
            job_ids=json.loads(f.get("job_ids") or "[]"),
            created_at=float(f.get("created_at") or 0.0),
            updated_at=float(f.get("updated_at") or 0.0),
            finished_at=float(f.get("finished_at") or 0.0),
            error=json.loads(f["error"]) if f.get("error") else None,
            verdict=json.loads(f.get("verdict") or "{}"),
            driver=f.get("driver", ""),
            drives=int(f.get("drives") or 1),
        )


class CheckStore:
    """Reads and atomic writes of check records (see the module docstring)."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, *, retention_s: int) -> None:
        self.redis = redis
        self.keys = keys
        self.retention_s = int(retention_s)
        self._create = redis.register_script(_CREATE)
        self._update = redis.register_script(_UPDATE)
        self._finish = redis.register_script(_FINISH)
        self._cancel = redis.register_script(_CANCEL)
        self._take = redis.register_script(_TAKE)
        self._renew = redis.register_script(_RENEW)
        self._forget_request = redis.register_script(_FORGET_REQUEST)

    # --- idempotent starts (AIP-155) ------------------------------------------------------
    async def claim_request(self, tenant: str, request_id: str, check_id: str) -> str:
        """Bind ``request_id`` to ``check_id`` unless it is bound already: "" when this call
        bound it (start the check), else the id of the check it was bound to first."""
        key = self.keys.check_idempotency(tenant, request_id)
        if await self.redis.set(key, check_id, nx=True, ex=self.retention_s):
            return ""
        first = await self.redis.get(key)
        return (
            text(first)
            if first is not None
            else await self.claim_request(tenant, request_id, check_id)
        )  # it expired or was forgotten in between: try again

    async def forget_request(self, tenant: str, request_id: str, check_id: str) -> None:
        """Unbind ``request_id`` if it still names ``check_id`` (whose start failed)."""
        key = self.keys.check_idempotency(tenant, request_id)
        await self._forget_request(keys=[key], args=[check_id])

    # --- the driver's writes -----------------------------------------------------------
    async def create(self, record: CheckRecord, owner: str, lease_ms: int) -> None:
        """Store a new RUNNING record, its index entries and ``owner``'s lease, at once."""
        k = self.keys
        record.driver = owner
        created = await self._create(
            keys=[
                k.check(record.check_id),
                k.check_lease(record.check_id),
                k.tenant_checks(record.tenant),
                k.running_checks,
            ],
            args=[
                record.check_id,
                owner,
                lease_ms,
                self.retention_s,
                repr(record.created_at),
                *_flat(record.fields()),
            ],
        )
        if not created:  # 48 random bits in the same millisecond: never in practice
            raise RuntimeError(f"check id {record.check_id} already exists")

    async def update(self, record: CheckRecord, owner: str, *, with_jobs: bool = False) -> str:
        """Write progress and message (and job ids and stats); returns RUNNING if written,
        else the state that ended it, ``lost`` (another replica drives) or ``gone``."""
        extra = record.progress_fields() if with_jobs else {}
        answer = await self._update(
            keys=[self.keys.check(record.check_id), self.keys.check_lease(record.check_id)],
            args=[
                owner,
                self.retention_s,
                f"{record.progress:.6f}",
                *_flat({"message": record.message, "updated_at": repr(time.time()), **extra}),
            ],
        )
        return text(answer)

    async def finish(
        self, record: CheckRecord, owner: str, *, html: str = "", json_text: str = ""
    ) -> str:
        """End the check (``record.state`` final); ``ok``, or the state/``lost``/``gone``
        that was there first (nothing written then)."""
        if record.state not in FINAL_STATES:
            raise ValueError(f"not a final state: {record.state}")
        k = self.keys
        now = time.time()
        record.finished_at = record.finished_at or now
        fields = {
            "state": record.state,
            "progress": f"{record.progress:.6f}",
            "message": record.message,
            "finished_at": repr(record.finished_at),
            "updated_at": repr(now),
            **record.progress_fields(),
        }
        if record.error is not None:
            fields["error"] = json.dumps(record.error)
        if record.verdict:
            fields["verdict"] = json.dumps(record.verdict)
        answer = await self._finish(
            keys=[
                k.check(record.check_id),
                k.check_lease(record.check_id),
                k.check_report(record.check_id),
                k.running_checks,
            ],
            args=[record.check_id, owner, self.retention_s, html, json_text, *_flat(fields)],
        )
        return text(answer)

    async def take(self, check_id: str, owner: str, lease_ms: int) -> bool:
        """Take the lease of a RUNNING check whose lease expired (or was released)."""
        k = self.keys
        got = await self._take(
            keys=[k.check(check_id), k.check_lease(check_id)], args=[owner, lease_ms]
        )
        return bool(got)

    async def renew(self, check_id: str, owner: str, lease_ms: int) -> bool:
        """Extend ``owner``'s lease; False if it is not theirs any more."""
        return bool(
            await self._renew(keys=[self.keys.check_lease(check_id)], args=[owner, lease_ms])
        )

    async def release(self, check_id: str, owner: str) -> None:
        """Give the lease up (another replica may resume the check at once)."""
        await self._renew(keys=[self.keys.check_lease(check_id)], args=[owner, 0])

    # --- any replica -------------------------------------------------------------------
    async def get(self, check_id: str, tenant: str | None = None) -> CheckRecord:
        """The record; CheckNotFound when missing or another tenant's (no hint which)."""
        raw, lease = {}, 0
        if check_id:
            pipe = self.redis.pipeline(transaction=False)
            pipe.hgetall(self.keys.check(check_id))
            pipe.exists(self.keys.check_lease(check_id))
            raw, lease = await pipe.execute()
        return self._view(check_id, raw, tenant, bool(lease))

    async def cancel(self, check_id: str, tenant: str) -> tuple[str, str]:
        """Mark a RUNNING check CANCELLED: (``cancelled`` | ``finished`` | ``notfound``, state)."""
        k = self.keys
        answer = await self._cancel(
            keys=[k.check(check_id), k.running_checks],
            args=[check_id, tenant, repr(time.time()), self.retention_s],
        )
        return text(answer[0]), text(answer[1])

    async def report(self, check_id: str) -> tuple[str, str] | None:
        html, js = await self.redis.hmget(self.keys.check_report(check_id), "html", "json")
        if html is None and js is None:
            return None
        return text(html or b""), text(js or b"")

    async def list(
        self, tenant: str, *, page_size: int = 50, page_token: str = ""
    ) -> tuple[list[CheckRecord], str]:
        """The tenant's checks, newest first; pass the returned token for the next page."""
        return await newest_first(
            self.redis,
            self.keys.tenant_checks(tenant),
            self.keys.check,
            lambda check_id, raw: self._view(check_id, raw, tenant, False),
            page_size=page_size,
            page_token=page_token,
        )

    async def orphans(self, limit: int = 100) -> list[str]:
        """RUNNING checks nobody holds the lease of (their driver died or let go)."""
        k = self.keys
        ids = [text(i) for i in await self.redis.zrange(k.running_checks, 0, limit - 1)]
        if not ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for check_id in ids:
            pipe.hget(k.check(check_id), "state")
            pipe.exists(k.check_lease(check_id))
        answers = await pipe.execute()
        out, stale = [], []
        for i, check_id in enumerate(ids):
            state, leased = answers[2 * i], answers[2 * i + 1]
            if state is None or text(state) != RUNNING:
                stale.append(check_id)  # expired, or ended by a script that missed the index
            elif not leased:
                out.append(check_id)
        if stale:
            await self.redis.zrem(k.running_checks, *stale)
        return out

    def _view(
        self, check_id: str, raw: dict[Any, Any], tenant: str | None, leased: bool
    ) -> CheckRecord:
        if not raw or b"tenant" not in raw:
            raise CheckNotFound(f"check {check_id!r} not found", check=check_id)
        record = CheckRecord.from_fields(check_id, raw)
        if tenant is not None and record.tenant != tenant:
            raise CheckNotFound(f"check {check_id!r} not found", check=check_id)
        record.lease_held = leased
        return record


def _flat(fields: dict[str, str]) -> list[str]:
    return [x for kv in fields.items() for x in kv]
