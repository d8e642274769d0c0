"""``EventFanout``: one reader of job event streams for every watcher in a process.

A ``WatchJob`` used to hold a Redis connection for its whole life (a blocking
``XREAD`` per watcher), so a hundred watches exhausted the API's connection pool
and every other caller's RPC failed. Here one task reads all watched event
streams with one blocking ``XREAD`` (one connection, whatever the number of
watchers) and hands each entry to every subscriber of that stream.

Each subscription has its own cursor (the last entry id it was given); the
reader reads each stream after the smallest cursor of its subscribers and gives
a subscriber only entries after its own cursor, and only from a read that started at
or before that cursor, so a subscriber that joins late (or behind the others, even
while a read is in flight) misses nothing and sees nothing twice. A stream that
joins waits at most ``block_ms`` for the reader's current read to end. When a
read fails (Redis unreachable after the client's retries), every subscriber gets
the error, so each watch ends the way a direct read would have ended it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError

from protolens_server import metrics
from protolens_server.errors import InvalidArgument
from protolens_server.logging import get_logger
from protolens_server.queue.codec import text
from protolens_server.queue.connection import raise_if_cancelled

log = get_logger(__name__)
Entry = tuple[str, dict[Any, Any]]  # (entry id, fields)
_READ_COUNT = 100  # entries per stream per read
_RETRY_S = 0.5  # pause after a failed read before the next one
_CURSOR = re.compile(r"[0-9]{1,20}(-[0-9]{1,20})?")
_ID_PART = 2**64  # each part of a stream id is an unsigned 64-bit number


def check_cursor(cursor: str) -> str:
    """``cursor`` if it is a stream entry id (``ms-seq`` or ``ms``), else InvalidArgument.

    Redis's special ids (``$``, ``>``, ``-``, ``+``) are refused too: ``$`` would have
    reached the shared reader's ordering and stopped it for every watcher."""
    if _CURSOR.fullmatch(cursor) and all(int(p) < _ID_PART for p in cursor.split("-")):
        return cursor
    raise InvalidArgument(
        "cursor",
        f"{cursor[:64]!r} is not an event cursor: pass the cursor of an event WatchJob"
        " sent, or leave it empty to start at the job's first event",
    )


def entry_order(entry_id: str) -> tuple[int, int]:
    """A stream entry id (``ms-seq``) as a sortable pair; ``"0"`` is (0, 0)."""
    ms, _, seq = entry_id.partition("-")
    return int(ms or 0), int(seq or 0)


@dataclass(eq=False)
class Subscription:
    """One watcher of one stream: entries after ``cursor`` arrive on ``inbox``."""

    key: str
    cursor: str
    inbox: asyncio.Queue[Entry | BaseException] = field(default_factory=asyncio.Queue)

    def offer(self, entry_id: str, fields: dict[Any, Any]) -> None:
        if entry_order(entry_id) > entry_order(self.cursor):
            self.cursor = entry_id
            self.inbox.put_nowait((entry_id, fields))

    async def next(self) -> Entry:
        """The next entry (raises the reader's error if its read failed)."""
        item = await self.inbox.get()
        if isinstance(item, BaseException):
            raise item
        return item


class EventFanout:
    """Shares one blocking reader among all subscribers; ``close()`` stops it."""

    def __init__(self, redis: Any, *, block_ms: int = 250) -> None:
        self.redis = redis
        self.block_ms = block_ms
        self._subs: dict[str, set[Subscription]] = {}
        self._joined = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def watchers(self) -> int:
        return sum(len(s) for s in self._subs.values())

    @property
    def streams(self) -> int:
        return len(self._subs)

    @contextlib.asynccontextmanager
    async def subscribe(self, key: str, after: str) -> AsyncIterator[Subscription]:
        """Entries of stream ``key`` after id ``after`` while the context is open."""
        if self._closed:
            raise RuntimeError("the event reader is closed")
        # A watch whose caller cancelled it during its first reads (a cancellation redis-py
        # swallowed) would otherwise wait here for its job's next event, holding its slot.
        raise_if_cancelled()
        sub = Subscription(key, check_cursor(after or "0"))
        self._subs.setdefault(key, set()).add(sub)
        self._update_gauges()
        self._joined.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._read_loop(), name="protolens-event-fanout")
        try:
            yield sub
        finally:
            subs = self._subs.get(key)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[key]
            self._update_gauges()

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        for subs in self._subs.values():
            for sub in subs:
                sub.inbox.put_nowait(RedisConnectionError("the server is shutting down"))

    def _update_gauges(self) -> None:
        metrics.WATCHERS.set(self.watchers)
        metrics.WATCH_STREAMS_READ.set(self.streams)

    async def _read_loop(self) -> None:
        task = asyncio.current_task()
        # (checks cancelling(): redis-py may swallow a cancellation that lands mid-command)
        while not self._closed and (task is None or not task.cancelling()):
            if not self._subs:
                self._joined.clear()
                await self._joined.wait()
                continue
            wanted = {key: self._oldest_cursor(subs) for key, subs in self._subs.items()}
            try:
                reply = await self.redis.xread(wanted, count=_READ_COUNT, block=self.block_ms)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis unreachable: every current watch ends with it
                log.warning("watch.read_failed", extra={"error": str(exc)})
                self._fail_all(exc)
                await asyncio.sleep(_RETRY_S)
                continue
            metrics.WATCH_READS.inc()
            for key, entries in reply or []:
                key = text(key)
                start = entry_order(wanted[key])
                # A subscriber that joined during the read with a cursor before the read's
                # start would get a gap (entries it never saw are skipped by its cursor):
                # it waits for the next read, which starts at its cursor.
                subs = [s for s in self._subs.get(key, ()) if entry_order(s.cursor) >= start]
                for entry_id, fields in entries:
                    eid = text(entry_id)
                    for sub in subs:
                        sub.offer(eid, fields)

    @staticmethod
    def _oldest_cursor(subs: set[Subscription]) -> str:
        return min((s.cursor for s in subs), key=entry_order)

    def _fail_all(self, exc: BaseException) -> None:
        for key in list(self._subs):
            for sub in self._subs.pop(key):
                sub.inbox.put_nowait(exc)
        self._update_gauges()
