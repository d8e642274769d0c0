"""Registered reference sets: folders under ``Settings.reference_root``, named by callers.

A request's ``reference_set`` is a folder name ``<reference_root>/<name>/``
(``scores.naming``: one rule for the API and the worker); callers never give
paths. Checked at submit time (exists, readable, large enough for the statistics,
has images of every target class) so a job never fails late for a bad reference;
its digest joins the cache key.

Resolving a set walks its folder (lists and stats every file; the first time, or
after a file changed, reads every byte for the content digest). One large folder
must not slow every caller (docs/tenancy.md, "Reference-set walks"):

- walks run in their own threads (``WALK_THREADS``), never in the request pool:
  ``prepare`` awaits one without holding a request thread (and hands validation a
  resolver answered from it), so requests without a reference set are never queued
  behind a walk;
- single flight: one walk per (folder, model) at a time; concurrent requests for
  it wait for that walk's result (or error);
- a finished walk's answer is reused for ``ttl_s`` seconds (``reference_walk_ttl_s``)
  without touching the disk; the first request after that walks again, stat-ing
  every file (a file rewritten in place changes its own mtime, not its folder's, so
  directory mtimes alone would miss it and serve a stale digest);
- a folder with more than ``max_files`` files (``max_reference_files``) is refused
  at once, counted without stat-ing them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from protolens_server.errors import ReferenceSetError
from protolens_server.scores.naming import (
    FIELD,
    ReferenceResolver,
    check_file_count,
    registered_path,
)

if TYPE_CHECKING:
    from protolens_server.config import Settings
    from protolens_server.models.info import ModelInfo

WALK_THREADS = 2  # walks of different folders may run at once; never more than this
MAX_REMEMBERED = 256  # finished walks kept, by (folder, model digest)
Resolved = tuple[str, frozenset[int]]  # (digest, classes with images)


@dataclass
class _Flight:
    future: Future[Resolved]
    done_at: float | None = None  # time.monotonic() when the walk ended


class ReferenceSets:
    """Resolve a registered name to its digest, for one model's classes and some targets.

    ``on_walk(folder)`` (tests) is called in the walking thread as each walk starts;
    ``walks`` counts them."""

    def __init__(self, root: Path | None, *, ttl_s: float = 30.0, max_files: int = 20_000) -> None:
        self.root = Path(root) if root else None
        self.ttl_s = ttl_s
        self.max_files = max_files
        self.walks = 0
        self.on_walk: Callable[[Path], None] | None = None
        self._flights: OrderedDict[tuple[str, str], _Flight] = OrderedDict()
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(WALK_THREADS, thread_name_prefix="protolens-refwalk")

    @classmethod
    def from_settings(cls, settings: Settings) -> ReferenceSets:
        return cls(
            settings.reference_root,
            ttl_s=settings.reference_walk_ttl_s,
            max_files=settings.max_reference_files,
        )

    def digest(self, name: str, model: ModelInfo, classes: Iterable[int]) -> str:
        """The set's digest (ReferenceSetError if it is unknown, unusable or lacks a class
        of ``classes``). Blocks the calling thread while a walk runs."""
        return self._answer(self._flight(name, model), name, model, classes)

    async def prepare(self, name: str, model: ModelInfo) -> ReferenceResolver:
        """Walk the set now (or join the walk under way) without holding a thread; returns
        the resolver for this request's validation, answered from that walk (however short
        ``ttl_s``). Errors are left for the resolver to raise, in the order the request's
        validation checks things."""
        try:
            flight = self._flight(name, model)
        except Exception:
            return self.digest
        with contextlib.suppress(Exception):
            await asyncio.wrap_future(flight.future)
        return functools.partial(self._answer, flight)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- internals ---------------------------------------------------------------
    @staticmethod
    def _answer(flight: _Flight, name: str, model: ModelInfo, classes: Iterable[int]) -> str:
        digest, have = flight.future.result()
        for c in classes:
            if c not in have:
                label = model.class_names[c] if 0 <= c < len(model.class_names) else str(c)
                raise ReferenceSetError(
                    FIELD,
                    f"reference set {name!r} has no images of class {c} ({label}); "
                    "pick another set or ask an admin to add that class",
                    missing_class=str(c),
                )
        return digest

    def _flight(self, name: str, model: ModelInfo) -> _Flight:
        folder = registered_path(self.root, name)  # cheap: is_dir; raises for unknown names
        key = (str(folder), model.digest)
        now = time.monotonic()
        with self._lock:
            flight = self._flights.get(key)
            if flight is not None and (flight.done_at is None or now - flight.done_at < self.ttl_s):
                self._flights.move_to_end(key)
                return flight
            flight = _Flight(Future())
            self._flights[key] = flight
            while len(self._flights) > MAX_REMEMBERED:
                self._flights.popitem(last=False)
        try:
            self._executor.submit(self._walk, flight, folder, name, model)
        except RuntimeError as exc:  # closed (the server is stopping): no waiter hangs
            flight.done_at = now
            flight.future.set_exception(exc)
        return flight

    def _walk(self, flight: _Flight, folder: Path, name: str, model: ModelInfo) -> None:
        try:
            result: Resolved | None = self._resolve(folder, name, model)
            error: BaseException | None = None
        except BaseException as exc:  # handed to every waiter
            result, error = None, exc
        flight.done_at = time.monotonic()
        if error is not None:
            flight.future.set_exception(error)
        else:
            assert result is not None
            flight.future.set_result(result)

    def _resolve(self, folder: Path, name: str, model: ModelInfo) -> Resolved:
        from protolens_server.scores.references import ReferenceSet  # torch/PIL: imported late

        with self._lock:
            self.walks += 1
        if self.on_walk is not None:
            self.on_walk(folder)
        check_file_count(folder, name, self.max_files)
        try:
            refset = ReferenceSet.from_folder(folder, model.class_names, model.class_aliases)
            refset.check_usable()  # enough classes and images: the job must not fail late
            digest = refset.digest  # memoised by every file's (path, size, mtime)
        except ReferenceSetError as exc:  # name the set, not the server's folder
            detail = exc.message.split(": ", 1)[-1].replace(str(folder), name)
            raise ReferenceSetError(
                FIELD, f"reference set {name!r} is unusable: {detail}"
            ) from None
        return digest, frozenset(refset.classes)


__all__ = ["ReferenceSets", "Resolved"]
