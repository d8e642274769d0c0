"""Registered reference sets: folders under ``Settings.reference_root``, named by callers.

A request's ``reference_set`` is a folder name ``<reference_root>/<name>/``
(``scores.naming``: one rule for the API and the worker); callers never give
paths. Checked at submit time (exists, readable, large enough for the statistics,
has images of every target class) so a job never fails late for a bad reference;
its digest joins the cache key. Digests are memoised by (folder, newest mtime, model digest).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protolens_server.errors import ReferenceSetError
from protolens_server.scores.naming import FIELD, registered_path

if TYPE_CHECKING:
    from protolens_server.models.info import ModelInfo


class ReferenceSets:
    """Resolve a registered name to its digest, for one model's classes and some targets."""

    def __init__(self, root: Path | None) -> None:
        self.root = Path(root) if root else None
        self._digests: dict[tuple[Any, ...], tuple[str, frozenset[int]]] = {}
        self._lock = threading.Lock()

    def digest(self, name: str, model: ModelInfo, classes: Iterable[int]) -> str:
        from protolens_server.scores.references import ReferenceSet  # torch/PIL: imported late

        folder = registered_path(self.root, name)
        newest = max((p.stat().st_mtime_ns for p in folder.rglob("*")), default=0)
        key = (str(folder), newest, model.digest)
        with self._lock:
            hit = self._digests.get(key)
        if hit is None:
            try:
                refset = ReferenceSet.from_folder(folder, model.class_names, model.class_aliases)
                refset.check_usable()  # enough classes and images: the job must not fail late
            except ReferenceSetError as exc:  # name the set, not the server's folder
                detail = exc.message.split(": ", 1)[-1].replace(str(folder), name)
                raise ReferenceSetError(
                    FIELD, f"reference set {name!r} is unusable: {detail}"
                ) from None
            hit = (refset.digest, frozenset(refset.classes))
            with self._lock:
                self._digests[key] = hit
        digest, have = hit
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
