"""One ``Store`` per process: one client and pool, every repository on it."""

from __future__ import annotations

import asyncio
import json
import os
import socket

import pytest
from protolens_server.config import Settings
from protolens_server.errors import InvalidArgument
from protolens_server.queue.store import Store
from protolens_server.quotas import Quotas, TenantLimits
from queue_helpers import make_spec


async def _named(store: Store, role: str) -> int:
    """Connections Redis lists under this process's name for ``role``."""
    name = f"protolens-{role}@{socket.gethostname()}:{os.getpid()}"
    return sum(1 for c in await store.redis.client_list() if c.get("name") == name)


async def test_the_api_store_shares_one_bounded_pool_among_its_repositories(
    settings: Settings,
) -> None:
    store = await Store.connect(settings.model_copy(update={"redis_max_connections": 2}))
    try:
        # one of each, on the store's own client, quotas and blob store
        assert store.jobs is store.jobs and store.api_keys is store.api_keys
        for repo in (store.jobs, store.api_keys, store.rate_limiter, store.check_store):
            assert repo.redis is store.redis
        assert store.jobs.blobs is store.blobs and store.rate_limiter.quotas is store.quotas
        # all four at once: the pool (of 2) waits for a free connection, it never opens a third
        _, secret = await store.api_keys.create("alpha", "tenant")
        await asyncio.gather(
            *(store.jobs.submit(make_spec(seed=s)) for s in range(4)),
            store.api_keys.verify(secret),
            store.check_store.orphans(),
            *(store.rate_limiter.check("alpha") for _ in range(4)),
        )
        assert sum(store.pool_usage()) == 2
        assert await _named(store, "api") == 2
    finally:
        await store.close()


async def test_a_worker_store_names_its_connection_and_its_consumer_shares_it(
    settings: Settings,
) -> None:
    store = Store.open(settings, "worker")
    consumer = store.consumer("w1")
    try:
        assert consumer.redis is store.redis and consumer.blobs is store.blobs
        await consumer.ensure_groups()  # connects on the first command
        assert await _named(store, "worker") == 1
    finally:
        await consumer.close()


async def test_the_workers_running_limits_come_from_the_stores_quotas(settings: Settings) -> None:
    """One reading of the tenants file per process: the consumer takes the store's quotas
    (here given directly, with no file: the consumer must not read one of its own)."""
    quotas = Quotas(
        defaults=TenantLimits(max_running_jobs=3), tenants={"beta": {"max_running_jobs": 1}}
    )
    store = Store(
        Store.open(settings, "worker").redis,
        settings.model_copy(update={"tenants_file": None}),
        quotas=quotas,
    )
    consumer = store.consumer("w1")
    try:
        assert consumer._running_limits == (3, json.dumps({"beta": 1}))
    finally:
        await consumer.close()


def test_a_store_needs_a_redis_url(settings: Settings) -> None:
    with pytest.raises(InvalidArgument, match="redis_url"):
        Store.open(settings.model_copy(update={"redis_url": ""}), "worker")
