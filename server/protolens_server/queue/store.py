"""``Store``: a process's one Redis connection and the typed repositories on it.

The API builds one with ``await Store.connect(settings)`` (a bounded pool, named
``protolens-api@host:pid``), a worker with ``Store.open(settings, "worker")`` (named
``protolens-worker@host:pid``), an admin tool with ``Store.open(settings, "admin")``;
every repository they use comes from it and shares its pool and its blob store:

- ``jobs``: the ``JobQueue`` (submit, read, cancel, watch jobs; the watches' one shared
  reader has a connection of its own, ``protolens-events@host:pid``, outside the pool);
- ``consumer(name)``: a worker's ``QueueConsumer`` (claim, heartbeat, finish);
- ``api_keys`` and ``rate_limiter``: the API-key store and per-tenant request limits;
- ``check_store``: registry-check records.

Nothing above ``queue/`` makes a Redis client or names a key: it asks the Store.
"""

from __future__ import annotations

from functools import cached_property

import redis.asyncio as aioredis

from protolens_server.blobs import BlobStore, open_blob_store
from protolens_server.config import Settings
from protolens_server.errors import InvalidArgument
from protolens_server.queue.api_keys import ApiKeyStore, RateLimiter
from protolens_server.queue.checks import CheckStore
from protolens_server.queue.connection import client_name, pool_usage, probe_client, redis_from_url
from protolens_server.queue.delivery import QueueConsumer
from protolens_server.queue.jobs import (
    JobQueue,
    connect_event_reader,
    connect_redis,
    ensure_groups,
)
from protolens_server.queue.keys import Keys
from protolens_server.quotas import Quotas, load_quotas


class Store:
    """One Redis client (and its pool), the blob store, and the repositories built on them.

    Repositories are made on first use and kept, so the API's servicers, check runner and
    auth share one of each. ``close`` closes the client (and the job queue's watchers).
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        settings: Settings,
        *,
        quotas: Quotas | None = None,
        blobs: BlobStore | None = None,
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self._quotas = quotas
        self._blobs = blobs

    @classmethod
    async def connect(cls, settings: Settings) -> Store:
        """The API's store: a bounded pool of ``redis_max_connections`` that waits up to
        ``redis_pool_timeout_s`` for a free connection, with the job streams' groups made."""
        _require_url(settings)
        store = cls(connect_redis(settings), settings)
        await ensure_groups(store.redis, store.keys)
        return store

    @classmethod
    def open(cls, settings: Settings, role: str) -> Store:
        """A store whose client (named for ``role``) connects on its first command: a
        worker waits out a Redis that is not up yet, and makes the groups itself."""
        _require_url(settings)
        return cls(redis_from_url(settings.redis_url, client_name=client_name(role)), settings)

    async def close(self) -> None:
        if "jobs" in self.__dict__:
            await self.jobs.close()  # its watchers, then the client
        else:
            await self.redis.aclose()

    # --- what is shared -----------------------------------------------------------------
    @cached_property
    def quotas(self) -> Quotas:
        """Per-tenant limits (``settings.tenants_file``)."""
        return self._quotas if self._quotas is not None else load_quotas(self.settings.tenants_file)

    @cached_property
    def blobs(self) -> BlobStore:
        """Where result images live (Redis holds their keys): ``settings.blob_url``."""
        if self._blobs is not None:
            return self._blobs
        return open_blob_store(self.settings.blob_url, endpoint_url=self.settings.blob_endpoint_url)

    # --- the repositories ---------------------------------------------------------------
    @cached_property
    def jobs(self) -> JobQueue:
        """Jobs; their watches are served by one reader on a connection of its own."""
        events = connect_event_reader(self.settings) if self.settings.redis_url else None
        return JobQueue(
            self.redis, self.settings, self.quotas, blobs=self.blobs, events_redis=events
        )

    def consumer(self, name: str) -> QueueConsumer:
        """Worker ``name``'s side of the queue (``close`` closes this store's client)."""
        return QueueConsumer(self.redis, self.settings, name, blobs=self.blobs, quotas=self.quotas)

    @cached_property
    def api_keys(self) -> ApiKeyStore:
        return ApiKeyStore(self.redis, self.keys)

    @cached_property
    def rate_limiter(self) -> RateLimiter:
        return RateLimiter(self.redis, self.keys, self.quotas)

    @cached_property
    def check_store(self) -> CheckStore:
        """Registry-check records (kept ``job_retention_s``, like jobs)."""
        return CheckStore(self.redis, self.keys, retention_s=self.settings.job_retention_s)

    # --- the connection itself ----------------------------------------------------------
    def pool_usage(self) -> tuple[int, int]:
        """(in use, idle) connections of this store's pool."""
        return pool_usage(self.redis)

    def health_client(self) -> aioredis.Redis:
        """A client for health PINGs (queue/connection.probe_client); this one when the
        Redis is embedded (no URL)."""
        if not self.settings.redis_url:
            return self.redis
        timeout = max(0.5, self.settings.health_probe_s)
        return probe_client(self.settings.redis_url, timeout, role="api-health")


def _require_url(settings: Settings) -> None:
    if not settings.redis_url:
        raise InvalidArgument("redis_url", "no Redis configured: set PROTOLENS_REDIS_URL")
