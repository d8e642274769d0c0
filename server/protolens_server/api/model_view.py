"""The API's view of the model catalog: cached, and never blocking the event loop.

``catalog.describe`` scans the model store (and loads a model the first time),
so the API keeps each name's ``ModelInfo`` for ``ttl_s`` seconds (a model
replaced in the store is seen within that time) and runs misses in a thread.
Class names for a stored job are keyed by (name, digest): a digest's names never
change, so a cache-hit GetJob touches neither the disk nor a thread. A model seen
for the first time is long-lived heap: it is frozen out of the garbage
collector's full passes (``heap.py``), as the start-up heap is.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from protolens_server.heap import freeze_heap

MAX_ENTRIES = 1024


class ModelView:
    def __init__(self, catalog: Any, ttl_s: float = 2.0) -> None:
        self.catalog = catalog
        self.ttl_s = ttl_s
        self._infos: dict[str, tuple[float, Any]] = {}
        self._names: dict[tuple[str, str], tuple[str, ...]] = {}
        self._seen: set[tuple[str, str]] = set()

    async def describe(self, name: str) -> Any:
        """``catalog.describe(name)``; errors (ModelNotFound, InvalidModel) are not cached."""
        hit = self._infos.get(name)
        if hit is not None and time.monotonic() - hit[0] < self.ttl_s:
            return hit[1]
        info = await asyncio.to_thread(self.catalog.describe, name)
        if (name, info.digest) not in self._seen:
            if len(self._seen) >= MAX_ENTRIES:
                self._seen.clear()
            self._seen.add((name, info.digest))
            freeze_heap()  # a loaded model is long-lived heap (heap.py)
        if len(self._infos) >= MAX_ENTRIES:
            self._infos.clear()
        self._infos[name] = (time.monotonic(), info)
        return info

    async def names(self) -> list[str]:
        return await asyncio.to_thread(self.catalog.names)

    async def class_names(self, model: str, digest: str) -> tuple[str, ...]:
        """Class names of the model a job ran on; () if that model is gone or changed."""
        key = (model, digest)
        names = self._names.get(key)
        if names is None:
            try:
                info = await self.describe(model)
            except Exception:  # removed from the store since: callers see class indices only
                return ()
            if info.digest != digest:
                return ()
            names = tuple(info.class_names)
            if len(self._names) >= MAX_ENTRIES:
                self._names.clear()
            self._names[key] = names
        return names
