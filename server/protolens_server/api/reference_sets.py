"""Registered reference sets: folders under ``Settings.reference_root``, named by callers.

A request's ``reference_set`` is a folder name ``<reference_root>/<name>/`` (laid
out as ``references.ReferenceSet.from_folder`` expects); callers never give
paths. Checked at submit time (exists, readable, has images of every target
class) so a job never fails late for a bad reference; its digest joins the
cache key. Digests are memoised by (folder, newest mtime, model digest).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from protolens_server.errors import ReferenceSetError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
FIELD = "reference_set"


def registered_path(root: Path | None, name: str) -> Path:
    """The folder of reference set ``name`` (ReferenceSetError if not registered)."""
    if not _NAME.fullmatch(name) or ".." in name:
        raise ReferenceSetError(
            FIELD, f"{name!r} is not a reference-set name: name a registered set, never a path"
        )
    if root is None:
        raise ReferenceSetError(
            FIELD,
            f"unknown reference set {name!r}: this server has no reference sets registered "
            "(an admin sets reference_root)",
        )
    folder = Path(root) / name
    if not folder.is_dir():
        available = ", ".join(available_sets(root)) or "none registered"
        raise ReferenceSetError(FIELD, f"unknown reference set {name!r} (available: {available})")
    return folder


def available_sets(root: Path | None) -> list[str]:
    if root is None or not Path(root).is_dir():
        return []
    return sorted(p.name for p in Path(root).iterdir() if p.is_dir() and _NAME.fullmatch(p.name))


class ReferenceSets:
    """Resolve a registered name to its digest, for one model's classes and some targets."""

    def __init__(self, root: Path | None) -> None:
        self.root = Path(root) if root else None
        self._digests: dict[tuple[Any, ...], tuple[str, frozenset[int]]] = {}
        self._lock = threading.Lock()

    def digest(self, name: str, model: Any, classes: Iterable[int]) -> str:
        from protolens_server.references import ReferenceSet  # torch/PIL: server side only

        folder = registered_path(self.root, name)
        newest = max((p.stat().st_mtime_ns for p in folder.rglob("*")), default=0)
        key = (str(folder), newest, model.digest)
        with self._lock:
            hit = self._digests.get(key)
        if hit is None:
            try:
                refset = ReferenceSet.from_folder(folder, model.class_names, model.class_aliases)
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
