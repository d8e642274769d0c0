"""The cache directory, and reference statistics kept in memory and on disk.

One folder holds everything protolens caches on a machine: ``$PROTOLENS_CACHE_DIR``
when set, else ``~/.cache/protolens``, with one sub-folder per kind (``refstats``
here, ``checks`` for ``protolens check``). Statistics are keyed by what determines
them (``stats_key``); memory holds the last ``MEMORY_ENTRIES`` (an LRU), disk holds
``<key>.pt`` files written atomically. A torn, foreign or old-version file is
recomputed and overwritten; a read-only cache folder only costs a recomputation.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from protolens_server.engine import SCORES_VERSION, ReferenceStats
from protolens_server.paths import ENV, cache_dir  # noqa: F401 (ENV: re-exported)

MEMORY_ENTRIES = 32


class Lru:
    """A small thread-safe LRU map."""

    def __init__(self, entries: int) -> None:
        self._entries = entries
        self._data: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self._entries:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


MEMORY_CACHE = Lru(MEMORY_ENTRIES)  # stats key -> ReferenceStats


def stats_key(
    model_digest: str,
    layers: Sequence[str],
    reference_digest: str,
    spec: Any,
    *,
    policy: str,
    resamples: int,
    seed: int,
) -> str:
    """sha256 of everything reference statistics depend on."""
    payload = {
        "model": model_digest,
        "layers": list(layers),
        "reference": reference_digest,
        "policy": policy,
        "scores": SCORES_VERSION,
        "resamples": resamples,
        "seed": seed,
        "input_spec": spec.to_dict() if hasattr(spec, "to_dict") else repr(spec),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def read_stats(path: Path) -> ReferenceStats | None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("version") != SCORES_VERSION:
            return None
        return ReferenceStats.from_state(state)
    except FileNotFoundError:
        return None
    except Exception:  # a torn or foreign file: recompute and overwrite it
        return None


def write_stats(path: Path, stats: ReferenceStats) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        torch.save(stats.to_state(), tmp)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache only costs a recomputation next time
