"""The API's view of the model catalog: cached, and never blocking the event loop.

The API process never loads a model: the catalog's ``Inspector`` loads each file
once in a child process under time and memory limits (models/inspection.py) and
caches the result by content. Here each name's ``ModelInfo`` is kept for ``ttl_s``
seconds (a model replaced in the store is seen within that time) and misses run
in a thread; a request waiting for a pending inspection polls it (holding no
thread):

- ``show``: READY, UNUSABLE (with the reason) or INSPECTING after ``wait_s``; what
  ListModels and GetModel answer, so one broken or hostile file never fails them;
- ``describe``: a READY model (waiting up to ``use_wait_s``), else ``InvalidModel`` /
  ``FailedPrecondition`` naming the fix (CreatePrototypeJob).

Class names for a stored job are keyed by (name, digest): a digest's names never
change, so a cache-hit GetJob touches neither the disk nor a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any

from protolens_server.errors import NotFound
from protolens_server.models.info import ModelInfo, ModelState

MAX_ENTRIES = 1024
POLL_S = 0.05  # how often a waiting request looks at a pending inspection


class ModelView:
    """``wait_s``: how long ListModels/GetModel wait for pending inspections (in all, per
    call); ``use_wait_s``: how long CreatePrototypeJob waits for the model it names."""

    def __init__(
        self, catalog: Any, ttl_s: float = 2.0, wait_s: float = 2.0, use_wait_s: float = 60.0
    ) -> None:
        self.catalog = catalog
        self.ttl_s = ttl_s
        self.wait_s = wait_s
        self.use_wait_s = use_wait_s
        self._infos: dict[str, tuple[float, ModelInfo]] = {}
        self._names: dict[tuple[str, str], tuple[str, ...]] = {}
        self._prefetch: asyncio.Task[None] | None = None
        with contextlib.suppress(RuntimeError):  # in the server's loop: inspect the store now
            asyncio.get_running_loop()
            self._prefetch = asyncio.ensure_future(self._start_store())

    async def show(self, name: str, wait_s: float | None = None) -> ModelInfo:
        """The model in whatever state it is (ModelNotFound/InvalidArgument for bad names)."""
        return (await self._settle([name], self.wait_s if wait_s is None else wait_s, True))[0]

    async def show_all(self, names: Sequence[str]) -> list[ModelInfo]:
        """``show`` for a page of names, waiting at most ``wait_s`` in all; a name removed
        from the store meanwhile is left out."""
        return await self._settle(list(names), self.wait_s, False)

    async def describe(self, name: str) -> ModelInfo:
        """A READY model; InvalidModel (UNUSABLE) or FailedPrecondition (INSPECTING) else."""
        info = await self.show(name, self.use_wait_s)
        if info.state is not ModelState.READY:
            raise info.refusal()
        return info

    async def _settle(self, names: list[str], wait_s: float, strict: bool) -> list[ModelInfo]:
        """Infos of ``names``, polling (no thread held) those still INSPECTING until
        ``wait_s`` has passed; ``strict``: a name not found raises, else it is left out."""
        deadline = time.monotonic() + wait_s
        infos: dict[str, ModelInfo] = {}
        todo = names
        while todo:
            found = await asyncio.to_thread(self._show_now, todo, strict)
            infos |= found
            todo = [n for n, i in found.items() if i.state is ModelState.INSPECTING]
            if not todo or time.monotonic() >= deadline:
                break
            await asyncio.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))
        return [infos[n] for n in names if n in infos]

    def _show_now(self, names: list[str], strict: bool) -> dict[str, ModelInfo]:
        out: dict[str, ModelInfo] = {}
        for name in names:
            hit = self._infos.get(name)
            if hit is not None and time.monotonic() - hit[0] < self.ttl_s:
                out[name] = hit[1]
                continue
            try:
                info = self.catalog.show(name, wait_s=0)
            except NotFound:
                if strict:
                    raise
                continue
            if info.state is not ModelState.INSPECTING:
                if len(self._infos) >= MAX_ENTRIES:
                    self._infos.clear()
                self._infos[name] = (time.monotonic(), info)
            out[name] = info
        return out

    async def names(self) -> list[str]:
        """Every name; models not yet inspected start their inspection in the background
        (so the pages that follow find them ready)."""
        names: list[str] = await asyncio.to_thread(self.catalog.names)
        unseen = [n for n in names if n not in self._infos]
        if unseen and (self._prefetch is None or self._prefetch.done()):
            self._prefetch = asyncio.create_task(asyncio.to_thread(self._start_all, unseen))
        return names

    async def _start_store(self) -> None:
        with contextlib.suppress(Exception):  # a store that cannot be listed: seen on demand
            names = await asyncio.to_thread(self.catalog.names)
            await asyncio.to_thread(self._start_all, names)

    def _start_all(self, names: list[str]) -> None:
        for name in names:
            with contextlib.suppress(Exception):  # a name removed meanwhile; seen on demand
                self.catalog.show(name, wait_s=0)

    async def class_names(self, model: str, digest: str) -> tuple[str, ...]:
        """Class names of the model a job ran on; () if that model is gone or changed."""
        key = (model, digest)
        names = self._names.get(key)
        if names is None:
            try:
                info = await self.show(model)
            except Exception:  # removed from the store since: callers see class indices only
                return ()
            if info.digest != digest or not info.usable:
                return ()
            names = tuple(info.class_names)
            if len(self._names) >= MAX_ENTRIES:
                self._names.clear()
            self._names[key] = names
        return names
