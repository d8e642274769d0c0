"""Collecting blobs that no stored result names (mark and sweep).

Mark: SCAN every result hash and read its ``blobs`` field (the keys it names), and read
the input images jobs may still read (``Keys.input_blobs``: an isolation's photo, named
until its job's record can have expired; older entries are dropped here). Sweep:
list the blob store and delete each blob that is not marked and was last written more
than ``grace_s`` before the sweep began. The grace covers a worker between writing its
blobs and the script that stores the result naming them (``put`` rewrites a blob that
already exists, so a reused old blob is young again). A result that expires while the
sweep runs keeps its blobs until the next sweep.

The API runs one sweep every ``Settings.blob_gc_interval_s`` on one replica at a time
(a lock key, ``Keys.blob_gc_lock``): ``JobQueue.collect_blobs_if_due``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import redis.asyncio as aioredis

from protolens_server.blobs import BlobStore
from protolens_server.queue.codec import text
from protolens_server.queue.keys import BLOBS_FIELD, Keys


@dataclass(frozen=True)
class BlobSweep:
    results: int  # result hashes read
    referenced: int  # distinct blob keys they name
    deleted: int  # blobs deleted
    kept_young: int  # unreferenced blobs spared (written within the grace)


async def referenced_blobs(redis: aioredis.Redis, keys: Keys) -> tuple[set[str], int]:
    """Every blob key a stored result or a job's input names, and how many result hashes
    were read."""
    now = time.time()
    await redis.zremrangebyscore(keys.input_blobs, "-inf", now)
    marked: set[str] = {text(k) for k in await redis.zrangebyscore(keys.input_blobs, now, "+inf")}
    results = 0
    batch: list[bytes | str] = []

    async def read(batch: list[bytes | str]) -> None:
        pipe = redis.pipeline(transaction=False)
        for key in batch:
            pipe.hget(key, BLOBS_FIELD)
        for value in await pipe.execute():
            if value:
                marked.update(text(value).split())

    async for key in redis.scan_iter(match=keys.results_pattern, count=1000):
        results += 1
        batch.append(key)
        if len(batch) >= 500:
            await read(batch)
            batch = []
    if batch:
        await read(batch)
    return marked, results


async def collect_blobs(
    redis: aioredis.Redis, keys: Keys, store: BlobStore, *, grace_s: float
) -> BlobSweep:
    """Delete the blobs no result names that are older than ``grace_s``."""
    began = time.time()
    marked, results = await referenced_blobs(redis, keys)
    return await asyncio.to_thread(_sweep, store, marked, results, began - grace_s)


def _sweep(store: BlobStore, marked: set[str], results: int, before: float) -> BlobSweep:
    deleted = young = 0
    for blob in store.list():
        if blob.key in marked:
            continue
        if blob.modified >= before:
            young += 1
            continue
        store.delete(blob.key)
        deleted += 1
    return BlobSweep(results, len(marked), deleted, young)
