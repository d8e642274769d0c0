"""The one place Redis clients are made: retries with backoff, and Sentinel URLs.

- ``redis://`` / ``rediss://`` / ``unix://``: a plain client.
- ``redis+sentinel://[:password@]host1:26379,host2:26379/<service>[/<db>]``
  (``rediss+sentinel://`` for TLS to the master): the master named ``service``
  found through the Sentinels (``redis.asyncio.sentinel``); after a failover
  the next command reconnects to the new master.

Every client retries a command after a connection error or timeout a few times
with exponential backoff (50 ms doubling, capped at 1 s), so a blip is
invisible; a longer outage surfaces as ``redis.ConnectionError`` (the API answers
UNAVAILABLE; the worker loop backs off and carries on).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, TimeoutError

from protolens_server.errors import InvalidArgument

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
RETRIES = 3


def _client_options() -> dict[str, Any]:
    return {
        "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), RETRIES),
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
    hosts: list[tuple[str, int]] = []
    for item in netloc[-1].split(","):
        host, _, port = item.rpartition(":") if ":" in item else (item, "", "26379")
        if not host:
            raise InvalidArgument("redis_url", f"bad sentinel address {item!r} in {url!r}")
        hosts.append((host.strip("[]"), int(port or 26379)))
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise InvalidArgument(
            "redis_url", "a sentinel URL names the service: redis+sentinel://host:26379/mymaster/0"
        )
    db = int(path[1]) if len(path) > 1 else 0
    return hosts, path[0], db, password, parts.scheme.startswith("rediss")


def redis_from_url(url: str, **overrides: Any) -> aioredis.Redis:
    """An asyncio Redis client for ``url`` with retries and backoff (see module docstring)."""
    options = {**_client_options(), **overrides}
    scheme = url.split("://", 1)[0]
    if scheme in SENTINEL_SCHEMES:
        hosts, service, db, password, tls = parse_sentinel_url(url)
        sentinel = Sentinel(hosts, socket_connect_timeout=options["socket_connect_timeout"])
        return sentinel.master_for(service, db=db, password=password, ssl=tls, **options)
    return aioredis.Redis.from_url(url, **options)
