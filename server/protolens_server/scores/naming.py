"""Registered reference sets: folders under ``Settings.reference_root``, named by callers.

A request's ``reference_set`` is a folder name ``<reference_root>/<name>/`` (laid out
as ``references.ReferenceSet.from_folder`` expects); callers never give paths. The
API resolves the name at submit time and the worker again when it scores: both go
through ``registered_path``, so a name means the same folder everywhere. No torch here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from protolens_server.errors import ReferenceSetError
from protolens_server.registered_names import NAME, is_name  # noqa: F401 (re-exported)

if TYPE_CHECKING:
    from protolens_server.models.info import ModelInfo

FIELD = "reference_set"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")  # what a class folder's images may be

ReferenceResolver = Callable[[str, "ModelInfo", tuple[int, ...]], str]
"""(registered reference-set name, ModelInfo, target classes) -> the set's digest.

Raises ReferenceSetError when the set is unknown or lacks a target class."""


def registered_path(root: str | Path | None, name: str) -> Path:
    """The folder of reference set ``name`` (ReferenceSetError if not registered)."""
    if not is_name(name):
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
        available = ", ".join(available_sets(root)) or (
            "none yet: a set is a folder NAME in the server's reference root, holding one "
            "folder of natural images per class; docs/scores.md"
        )
        raise ReferenceSetError(FIELD, f"unknown reference set {name!r} (available: {available})")
    return folder


def class_folders(root: Path) -> list[Path]:
    """A reference set's class folders (sub-folders, hidden ones left out), sorted: the
    one listing ``ReferenceSet.from_folder`` reads and a check's folder rule sees."""
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def available_sets(root: str | Path | None) -> list[str]:
    """The registered names under ``root``, sorted."""
    if root is None or not Path(root).is_dir():
        return []
    return sorted(p.name for p in Path(root).iterdir() if p.is_dir() and is_name(p.name))


def misplaced_set(root: str | Path | None) -> str:
    """The first folder under ``root`` that holds images itself ("" if none): a sign that
    ``root`` is one reference set given where a folder of sets belongs."""
    if root is None or not Path(root).is_dir():
        return ""
    for sub in sorted(Path(root).iterdir()):
        if sub.is_dir() and any(f.suffix.lower() in IMAGE_SUFFIXES for f in sub.iterdir()):
            return sub.name
    return ""


def check_file_count(folder: Path, name: str, limit: int) -> None:
    """ReferenceSetError once the class folders hold more than ``limit`` entries (counted
    with scandir, no stat, stopping at the limit): ``max_reference_files``, applied by the
    API when a job is created and by the worker before it reads the set to score (an
    admin may have filled the folder since)."""
    seen = 0
    try:
        with os.scandir(folder) as classes:
            subfolders = [e.path for e in classes if e.is_dir(follow_symlinks=True)]
        for sub in subfolders:
            with os.scandir(sub) as entries:
                for _ in entries:
                    seen += 1
                    if seen > limit:
                        raise ReferenceSetError(
                            FIELD,
                            f"reference set {name!r} has more than {limit:,} files (the "
                            "server's max_reference_files limit); ask an admin to trim it "
                            f"(a few dozen images per class is plenty) or raise the limit",
                        )
    except OSError as exc:
        raise ReferenceSetError(
            FIELD, f"reference set {name!r} cannot be read: {exc.strerror or exc}"
        ) from None
