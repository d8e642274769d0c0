"""The one place Redis clients are made: retries with backoff, Sentinel and Cluster URLs.

- ``redis://`` / ``rediss://`` / ``unix://``: a plain client.
- ``redis+sentinel://[:password@]host1:26379,host2:26379/<service>[/<db>]``
  (``rediss+sentinel://`` for TLS to the master): the master named ``service``
  found through the Sentinels (``redis.asyncio.sentinel``); after a failover
  the next command reconnects to the new master.
- ``redis+cluster://[[user]:password@]host1:7000,host2:7001[/]`` (``rediss+cluster://``
  for TLS): a Redis Cluster client (``redis.asyncio.cluster.RedisCluster``); the
  hosts are startup nodes, the rest of the cluster is discovered. Database 0 only.
  ``Settings`` refuses a cluster URL unless ``key_prefix`` is a hash tag such as
  ``{protolens}`` (the queue's scripts need every key in one slot; docs/queue.md).

Every client retries a command after a connection error or timeout a few times
with exponential backoff (50 ms doubling, capped at 1 s), so a blip is
invisible; a longer outage surfaces as ``redis.ConnectionError`` (the API answers
UNAVAILABLE; the worker loop backs off and carries on). On a Cluster, redis-py
itself retries a command once after re-reading the slot map (without waiting),
and ``ClusterClient`` adds the backoff rounds around that.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import (
    ClusterDownError,
    ConnectionError,
    MaxConnectionsError,
    RedisError,
    ResponseError,
    SlotNotCoveredError,
    TimeoutError,
)

from protolens_server.errors import InvalidArgument, ServerBusy

# What callers above the queue may catch, without importing redis themselves:
UNREACHABLE: tuple[type[Exception], ...] = (ConnectionError, TimeoutError)
"""Redis did not answer (after the client's retries): try again later (API: UNAVAILABLE)."""
StoreError = RedisError
"""Any error from Redis (UNREACHABLE ones included)."""


def is_missing_group(exc: BaseException) -> bool:
    """Whether ``exc`` is Redis's NOGROUP: a job stream or its consumer group is gone, so
    Redis lost its data (it restarted without persistence, failed over to an empty replica,
    or was flushed). Recreating the groups (``ensure_groups``) lets work go on."""
    return isinstance(exc, ResponseError) and "NOGROUP" in str(exc)


TOO_MANY_CONNECTIONS = MaxConnectionsError
"""A Sentinel or Cluster client's pool is at ``max_connections`` (it fails at once; a plain
URL's pool waits, then raises ``PoolExhausted``). A ConnectionError: UNREACHABLE catches it."""

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
RETRIES = 3
# Errors after which a cluster command is tried again (after the backoff).
_CLUSTER_RETRY_ON = (ConnectionError, TimeoutError, ClusterDownError, SlotNotCoveredError)


def _backoff() -> ExponentialBackoff:
    return ExponentialBackoff(cap=1.0, base=0.05)


def client_name(role: str) -> str:
    """The name this process's connections give Redis (``CLIENT SETNAME``) for ``role``:
    ``protolens-<role>@<host>:<pid>``, so ``CLIENT LIST`` tells which pod holds which
    connections (and a test can count its own among others')."""
    return f"protolens-{role}@{socket.gethostname()}:{os.getpid()}"


def _client_options() -> dict[str, Any]:
    return {
        "retry": Retry(_backoff(), RETRIES),
        "retry_on_error": [ConnectionError, TimeoutError],
        "health_check_interval": 30,
        "socket_connect_timeout": 5,
        "socket_keepalive": True,
    }


def parse_sentinel_url(url: str) -> tuple[list[tuple[str, int]], str, int, str | None, bool]:
    """(sentinel addresses, service name, db, password, tls) of a ``redis+sentinel://`` URL."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    password = None
    if len(netloc) == 2:
        password = unquote(netloc[0].partition(":")[2]) or None
    hosts = _hosts(netloc[-1], 26379, url, "sentinel")
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise InvalidArgument(
            "redis_url", "a sentinel URL names the service: redis+sentinel://host:26379/mymaster/0"
        )
    db = int(path[1]) if len(path) > 1 else 0
    return hosts, path[0], db, password, parts.scheme.startswith("rediss")


def parse_cluster_url(url: str) -> tuple[list[tuple[str, int]], str | None, str | None, bool]:
    """(startup node addresses, username, password, tls) of a ``redis+cluster://`` URL."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    username = password = None
    if len(netloc) == 2:
        user, _, secret = netloc[0].partition(":")
        username, password = unquote(user) or None, unquote(secret) or None
    if not netloc[-1]:
        raise InvalidArgument(
            "redis_url",
            f"a cluster URL names its nodes: redis+cluster://host1:7000,host2:7001/ (got {url!r})",
        )
    hosts = _hosts(netloc[-1], 6379, url, "cluster node")
    path = [p for p in parts.path.split("/") if p]
    if path and path != ["0"]:
        raise InvalidArgument(
            "redis_url", f"a Redis Cluster has only database 0: drop /{'/'.join(path)} from {url!r}"
        )
    if parts.query:
        raise InvalidArgument(
            "redis_url", f"cluster URLs take no ?options (got {parts.query!r} in {url!r})"
        )
    return hosts, username, password, parts.scheme.startswith("rediss")


def _hosts(netloc: str, default_port: int, url: str, what: str) -> list[tuple[str, int]]:
    hosts: list[tuple[str, int]] = []
    for item in netloc.split(","):
        if item.startswith("[") and "]" in item:  # [ipv6]:port
            host, _, port = item[1:].partition("]")
            port = port.removeprefix(":")
        elif ":" in item:
            host, _, port = item.rpartition(":")
        else:
            host, port = item, ""
        if not host or not (port or str(default_port)).isdigit():
            raise InvalidArgument("redis_url", f"bad {what} address {item!r} in {url!r}")
        hosts.append((host.strip("[]"), int(port or default_port)))
    return hosts


class ClusterClient(RedisCluster):
    """``RedisCluster`` whose commands are retried with backoff, like the plain client's.

    redis-py (8.x) retries a cluster command ``retry.get_retries()`` times at once,
    re-reading the slot map before each try, but never waits in between; a master
    that is back in half a second would fail every try. Each round here is one such
    redis-py call; failed rounds are followed by a backoff sleep, ``RETRIES`` times.
    A cluster still down after that surfaces as ``redis.ConnectionError`` (what the
    API maps to UNAVAILABLE and the worker waits out), not as a cluster-specific error.
    Pipelines keep redis-py's own retry (0.25 s apart).
    """

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        backoff = _backoff()
        failures = 0
        while True:
            try:
                return await super().execute_command(*args, **kwargs)
            except _CLUSTER_RETRY_ON as e:
                failures += 1
                if failures > RETRIES:
                    if isinstance(e, ConnectionError | TimeoutError):
                        raise
                    raise ConnectionError(f"Redis Cluster unavailable: {e}") from e
                await asyncio.sleep(backoff.compute(failures))


def is_cluster(client: object) -> bool:
    """Whether ``client`` talks to a Redis Cluster (its pipelines cannot run scripts)."""
    return isinstance(client, RedisCluster)


def cluster_from_url(url: str, **overrides: Any) -> ClusterClient:
    """A Redis Cluster client for a ``redis+cluster://`` URL (see module docstring)."""
    hosts, username, password, tls = parse_cluster_url(url)
    options = {
        **_client_options(),
        # one immediate retry inside redis-py (after re-reading the slot map); the
        # backoff rounds are ClusterClient's
        "retry": Retry(_backoff(), 1),
        **overrides,
    }
    return ClusterClient(
        startup_nodes=[ClusterNode(host, port) for host, port in hosts],
        username=username,
        password=password,
        ssl=tls,
        **options,
    )


class PoolExhausted(ServerBusy, ConnectionError):
    """No connection of a bounded pool came free within its timeout: this process is
    overloaded (Redis itself may be fine). A ``ConnectionError`` too, so loops that wait out
    an unreachable Redis wait this out as well; the API answers RESOURCE_EXHAUSTED
    ``SERVER_BUSY`` with the limits, not "Redis is unreachable"."""

    def __init__(self, limit: int, timeout_s: float | None) -> None:
        waited = f"{timeout_s:g} s" if timeout_s is not None else "its timeout"
        super().__init__(
            f"this API server is overloaded: none of its {limit} Redis connections"
            f" (redis_max_connections) came free within {waited} (redis_pool_timeout_s);"
            " retry shortly, with backoff",
            limit=str(limit),
            setting="redis_max_connections",
        )


class _BoundedPool(aioredis.BlockingConnectionPool):
    """redis-py's waiting pool, whose timeout raises ``PoolExhausted`` (redis-py raises a
    plain ConnectionError, which reads as "Redis is unreachable")."""

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().get_connection(*args, **kwargs)
        except ConnectionError as exc:
            # the pool's own wait timed out (connecting to Redis fails with other causes)
            if isinstance(exc.__cause__, asyncio.TimeoutError):
                raise PoolExhausted(self.max_connections, self.timeout) from exc
            raise


def redis_from_url(
    url: str,
    *,
    max_connections: int | None = None,
    pool_timeout_s: float | None = None,
    **overrides: Any,
) -> aioredis.Redis:
    """An asyncio Redis client for ``url`` with retries and backoff (see module docstring).

    ``max_connections`` bounds the client's connections. On a plain URL the pool
    then *waits* for a free connection (up to ``pool_timeout_s``, then ``PoolExhausted``,
    which the API answers RESOURCE_EXHAUSTED ``SERVER_BUSY``) instead of failing
    at once as redis-py's default pool of 100 does; on Sentinel and Cluster URLs it
    caps connections per server (at the cap a command fails at once: ``TOO_MANY_CONNECTIONS``).
    A cluster URL gives a ``ClusterClient``: not an
    ``aioredis.Redis`` subclass, but the same command methods, scripts and pipelines.
    """
    options = {**_client_options(), **overrides}
    scheme = url.split("://", 1)[0]
    if scheme in SENTINEL_SCHEMES:
        hosts, service, db, password, tls = parse_sentinel_url(url)
        sentinel = Sentinel(hosts, socket_connect_timeout=options["socket_connect_timeout"])
        if max_connections:
            options["max_connections"] = max_connections
        return sentinel.master_for(service, db=db, password=password, ssl=tls, **options)
    if scheme in CLUSTER_SCHEMES:
        if max_connections:
            overrides["max_connections"] = max_connections
        return cast(aioredis.Redis, cluster_from_url(url, **overrides))
    if max_connections:
        pool = _BoundedPool.from_url(
            url, max_connections=max_connections, timeout=pool_timeout_s, **options
        )
        return aioredis.Redis.from_pool(pool)
    return aioredis.Redis.from_url(url, **options)


def raise_if_cancelled() -> None:
    """Raise ``CancelledError`` if the running task was asked to stop.

    redis-py (8.x on Python 3.11) can lose a cancellation that lands while a command
    reconnects: the command returns, the task runs on, and only ``cancelling()`` still
    counts the request. Code about to wait for something that may never come (a watch
    joining the event reader) calls this after its commands, so a caller's cancel ends
    it rather than leaving it waiting.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def pool_usage(client: object) -> tuple[int, int]:
    """(connections in use, idle connections) of a plain or Sentinel client's pool.

    (0, 0) for a cluster client, whose connections live in one pool per node.
    """
    pool = getattr(client, "connection_pool", None)
    in_use = getattr(pool, "_in_use_connections", ())
    idle = getattr(pool, "_available_connections", ())
    return len(in_use), len(idle)


def probe_client(redis_url: str, timeout_s: float, *, role: str) -> aioredis.Redis:
    """A client for health PINGs: one connection, no retries, short timeouts (so an outage
    shows at once, and a busy main pool never looks like one)."""
    return redis_from_url(
        redis_url,
        max_connections=1,
        pool_timeout_s=timeout_s,
        retry=Retry(NoBackoff(), 0),
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        health_check_interval=0,
        client_name=client_name(role),
    )
