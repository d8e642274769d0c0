"""One page of a tenant's records, newest first, from a lexically sorted Redis index.

Jobs and checks are both listed this way: the index is a sorted set of ids (all
score 0, ids sort by creation time), a page token is the last id of the previous
page, and each record is one hash. Records that expired since they were indexed
are dropped from the index as they are met. Both kinds of id are made by
``new_record_id`` (24 lowercase hex digits, ``RECORD_ID``); a token that is not such an
id is refused with INVALID_ARGUMENT rather than read as a position in the index.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis

from protolens_server.errors import InvalidArgument, JobNotFound

T = TypeVar("T")
Offload = Callable[..., Awaitable[Any]]
"""``await offload(fn, *args)`` runs ``fn(*args)`` elsewhere (e.g. ``RequestPool.run``)."""
MAX_PAGE_SIZE = 1000
RECORD_ID = re.compile(r"[0-9a-f]{24}")  # what new_record_id makes


def new_record_id() -> str:
    """A job's or a check's id, time-ordered (so the index sorts by creation): 12 hex
    digits of milliseconds, then 12 random hex digits."""
    return f"{int(time.time() * 1000):012x}{secrets.token_hex(6)}"


def bad_page_token() -> InvalidArgument:
    """The error for a page token this server did not issue (every List* RPC)."""
    return InvalidArgument(
        "page_token",
        "not a page token this server issued: start without a token, then pass each "
        "reply's next_page_token as it is",
    )


async def newest_first(
    redis: aioredis.Redis,
    index_key: str,
    record_key: Callable[[str], str],
    view: Callable[[str, dict[Any, Any]], T],
    *,
    page_size: int,
    page_token: str,
    offload: Offload | None = None,
) -> tuple[list[T], str]:
    """(records, next page token or ""). ``view(id, fields)`` raises JobNotFound for a
    record that is gone or not the caller's. ``offload(fn, *args)``: where to parse the
    page (a thread pool, so a page of large records never blocks the event loop)."""
    if page_size < 1 or page_size > MAX_PAGE_SIZE:
        raise InvalidArgument("page_size", f"must be 1..{MAX_PAGE_SIZE}")
    if page_token and not RECORD_ID.fullmatch(page_token):
        raise bad_page_token()
    start = f"({page_token}" if page_token else "+"
    raw = await redis.zrange(index_key, start, "-", desc=True, bylex=True, offset=0, num=page_size)
    ids = [i.decode() if isinstance(i, bytes) else str(i) for i in raw]
    pipe = redis.pipeline(transaction=False)
    for record_id in ids:
        pipe.hgetall(record_key(record_id))
    rows = list(zip(ids, await pipe.execute(), strict=True))
    if offload is None:
        records, gone = _views(view, rows)
    else:
        records, gone = await offload(_views, view, rows)
    if gone:
        await redis.zrem(index_key, *gone)
    return records, (ids[-1] if len(ids) == page_size else "")


def _views(
    view: Callable[[str, dict[Any, Any]], T], rows: list[tuple[str, dict[Any, Any]]]
) -> tuple[list[T], list[str]]:
    records, gone = [], []
    for record_id, fields in rows:
        try:
            records.append(view(record_id, fields))
        except JobNotFound:
            gone.append(record_id)
    return records, gone
