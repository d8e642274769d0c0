"""The shared event reader (queue/watch.py) on a real Redis: every subscriber gets every
entry after its own cursor once, in order, whenever it joins."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from protolens_server.queue.watch import EventFanout

KEY = "plfanout:events"


async def _take(sub, n: int) -> list[str]:
    return [(await asyncio.wait_for(sub.next(), 10))[0] for _ in range(n)]


async def test_a_subscriber_behind_a_read_in_flight_misses_nothing(redis_url: str) -> None:
    """B joins while the reader is blocked reading after A's (later) cursor: the entries
    between B's cursor and A's must still reach B, before the new one (the API-restart
    fault: resuming watchers rejoin at different cursors)."""
    redis = aioredis.Redis.from_url(redis_url)
    fanout = EventFanout(redis, block_ms=500)
    try:
        ids = [(await redis.xadd(KEY, {"n": i})).decode() for i in range(5)]
        async with fanout.subscribe(KEY, ids[-1]) as a:
            await asyncio.sleep(0.1)  # the reader is now blocked after ids[-1]
            async with fanout.subscribe(KEY, ids[1]) as b:
                new = (await redis.xadd(KEY, {"n": 5})).decode()
                assert await _take(a, 1) == [new]
                assert await _take(b, 4) == [*ids[2:], new]
                later = (await redis.xadd(KEY, {"n": 6})).decode()
                assert await _take(a, 1) == [later] and await _take(b, 1) == [later]
                assert a.inbox.empty() and b.inbox.empty()
    finally:
        await fanout.close()
        await redis.delete(KEY)
        await redis.aclose()


async def test_many_subscribers_at_random_cursors_each_see_their_suffix(redis_url: str) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    fanout = EventFanout(redis, block_ms=50)
    try:
        ids = [(await redis.xadd(KEY, {"n": i})).decode() for i in range(30)]

        async def watcher(start: int) -> list[str]:
            await asyncio.sleep(0.01 * (start % 7))  # join at different moments
            async with fanout.subscribe(KEY, ids[start] if start >= 0 else "0") as sub:
                return await _take(sub, len(ids) - start - 1 + 10)

        tasks = [asyncio.create_task(watcher(s)) for s in (-1, 3, 17, 8, 28, 0, 12)]
        await asyncio.sleep(0.1)
        more = []
        for i in range(10):
            more.append((await redis.xadd(KEY, {"n": 30 + i})).decode())
            await asyncio.sleep(0.005)
        every = ids + more
        for start, task in zip((-1, 3, 17, 8, 28, 0, 12), tasks, strict=True):
            assert await task == every[start + 1 :], start
    finally:
        await fanout.close()
        await redis.delete(KEY)
        await redis.aclose()
