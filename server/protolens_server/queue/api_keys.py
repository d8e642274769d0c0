"""API keys and request rates in Redis: the ``ApiKeyStore`` (create, list, revoke, verify)
and the per-tenant ``RateLimiter`` (GCRA). The interceptor's resolver that uses them is
``api/auth.py`` (which re-exports these names).

A key reads ``pl_<id>_<secret>``: ``id`` (16 hex digits) finds the record in one lookup,
``secret`` (64 hex digits, 256 random bits) is never stored, only its SHA-256 (a fast
hash is enough for a secret of that entropy). A record is a hash at ``Keys.api_key(id)``
with the tenant, role, a name, its creation time and, once revoked, the revocation time;
revoked keys stay listed.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from protolens_server.errors import InvalidArgument, NotFound, QuotaExceeded, Unauthenticated
from protolens_server.principal import ROLES, TENANT_RULE, Principal, is_tenant_name
from protolens_server.queue.codec import text
from protolens_server.queue.connection import is_cluster
from protolens_server.queue.keys import Keys
from protolens_server.quotas import Quotas

KEY_PREFIX = "pl"
_KEY_RE = re.compile(r"^pl_([0-9a-f]{16})_([0-9a-f]{64})\Z")
_MAX_NAME = 200
_INVALID = "the API key is not valid (unknown, revoked or malformed)"


@dataclass(frozen=True)
class ApiKeyInfo:
    """What may be shown about a key: everything but its secret."""

    key_id: str
    tenant: str
    role: str
    name: str
    created_at: float
    revoked_at: float = 0.0

    @property
    def revoked(self) -> bool:
        return self.revoked_at > 0


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_tenant(tenant: str) -> str:
    if not is_tenant_name(tenant):
        raise InvalidArgument("tenant", f"{tenant!r}: {TENANT_RULE}")
    return tenant


class ApiKeyStore:
    """Create, list, revoke and verify API keys in Redis."""

    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def create(
        self, tenant: str, role: str = "tenant", name: str = ""
    ) -> tuple[ApiKeyInfo, str]:
        """A new key for ``tenant``; returns its record and the key itself (shown once)."""
        check_tenant(tenant)
        if role not in ROLES:
            raise InvalidArgument("role", f"{role!r}: one of {', '.join(ROLES)}")
        if len(name) > _MAX_NAME:
            raise InvalidArgument("name", f"at most {_MAX_NAME} characters")
        key_id, secret = secrets.token_hex(8), secrets.token_hex(32)
        info = ApiKeyInfo(key_id, tenant, role, name, time.time())
        # MULTI/EXEC, except on a Cluster: redis-py's async cluster transactions run each
        # queued command in a new thread and event loop (8.1), which can leave the client
        # with connections bound to a closed loop; both keys share one slot anyway.
        pipe = self.redis.pipeline(transaction=not is_cluster(self.redis))
        pipe.hset(
            self.keys.api_key(key_id),
            mapping={
                "tenant": tenant,
                "role": role,
                "name": name,
                "created_at": repr(info.created_at),
                "revoked_at": "0",
                "sha256": _hash(secret),
            },
        )
        pipe.sadd(self.keys.api_keys, key_id)
        await pipe.execute()
        return info, f"{KEY_PREFIX}_{key_id}_{secret}"

    async def get(self, key_id: str) -> ApiKeyInfo:
        fields = await self.redis.hgetall(self.keys.api_key(key_id)) if key_id else {}
        if not fields:
            raise NotFound(f"no API key {key_id!r}", field="key_id")
        return _info(key_id, fields)

    async def list(self, tenant: str = "") -> list[ApiKeyInfo]:
        """Every key (or ``tenant``'s), oldest first; never a secret."""
        ids = sorted(text(i) for i in await self.redis.smembers(self.keys.api_keys))
        pipe = self.redis.pipeline(transaction=False)
        for key_id in ids:
            pipe.hgetall(self.keys.api_key(key_id))
        infos = [_info(i, f) for i, f in zip(ids, await pipe.execute(), strict=True) if f]
        infos = [i for i in infos if not tenant or i.tenant == tenant]
        return sorted(infos, key=lambda i: i.created_at)

    async def revoke(self, key_id: str) -> ApiKeyInfo:
        """Revoke at once (the next call with the key is UNAUTHENTICATED); idempotent."""
        info = await self.get(key_id)
        if not info.revoked:
            await self.redis.hset(self.keys.api_key(key_id), "revoked_at", repr(time.time()))
        return await self.get(key_id)

    async def verify(self, key: str) -> Principal:
        """The principal of a valid key; ``Unauthenticated`` otherwise (never says why)."""
        match = _KEY_RE.match(key)
        if not match:
            raise Unauthenticated(_INVALID)
        key_id, secret = match.groups()
        fields = await self.redis.hmget(
            self.keys.api_key(key_id), "tenant", "role", "revoked_at", "sha256"
        )
        tenant, role, revoked_at, digest = (text(v) if v is not None else "" for v in fields)
        if not digest or not hmac.compare_digest(digest, _hash(secret)):
            raise Unauthenticated(_INVALID)
        if float(revoked_at or 0) > 0:
            raise Unauthenticated(_INVALID)
        return Principal(tenant, role, key_id)


def _info(key_id: str, fields: dict[Any, Any]) -> ApiKeyInfo:
    f = {text(k): text(v) for k, v in fields.items()}
    return ApiKeyInfo(
        key_id,
        f.get("tenant", ""),
        f.get("role", ""),
        f.get("name", ""),
        float(f.get("created_at", 0) or 0),
        float(f.get("revoked_at", 0) or 0),
    )


# GCRA (the generic cell rate algorithm): a tenant may send ``burst`` requests at once,
# then one every ``interval``; the key holds the theoretical arrival time (TAT) of the
# next request. Redis' clock, so every API replica agrees.
# KEYS: the tenant's rate key.  ARGV: interval (microseconds), burst (requests).
# Returns 0 when allowed, else the microseconds to wait.
_GCRA = r"""
local interval, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - burst * interval
if now < allow_at then return allow_at - now end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX',
           math.ceil((new_tat - now) / 1000) + 1)
return 0
"""


class RateLimiter:
    """``requests_per_second`` per tenant, shared by every API replica (state in Redis).

    GCRA: a burst of up to one second's worth of requests is allowed, then calls
    are admitted at the steady rate; a refused call is told exactly how long to
    wait before the next one would be admitted (RetryInfo).
    """

    def __init__(self, redis: aioredis.Redis, keys: Keys, quotas: Quotas) -> None:
        self.redis = redis
        self.keys = keys
        self.quotas = quotas
        self._gcra = redis.register_script(_GCRA)

    async def check(self, tenant: str) -> None:
        limit = self.quotas.for_tenant(tenant).requests_per_second
        if not limit:
            return
        interval_us = max(1, round(1_000_000 / limit))
        wait_us = int(await self._gcra(keys=[self.keys.rate(tenant)], args=[interval_us, limit]))
        if wait_us > 0:
            raise QuotaExceeded(
                f"more than {limit} requests per second (quota requests_per_second); slow down",
                quota="requests_per_second",
                limit=limit,
                retry_after_s=round(max(0.001, wait_us / 1_000_000), 3),
            )
