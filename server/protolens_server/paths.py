"""The one folder protolens keeps machine-local files in.

``$PROTOLENS_CACHE_DIR`` when set, else ``~/.cache/protolens``, with one sub-folder per
kind: ``refstats`` (reference statistics), ``checks`` (``protolens check``), ``blobs``
(result images when ``Settings.blob_url`` is empty). No torch here: the API imports it.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "PROTOLENS_CACHE_DIR"


def cache_dir(kind: str, override: str | Path | None = None) -> Path:
    """The folder for cached ``kind`` (``override`` as given, when given)."""
    if override is not None:
        return Path(override)
    root = os.environ.get(ENV)
    base = Path(root) if root else Path.home() / ".cache" / "protolens"
    return base / kind
