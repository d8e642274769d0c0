"""Learning rates the finder chose, kept on this machine's disk.

A worker shares the finder's choice through Redis (``{prefix}:lr:<digest>``); a local
``protolens generate`` is a new process each time, and an embedded stack's Redis
(``protolens demo``, ``up``) starts empty, so without this every cold run would pay the
finder's probes again. Workers read it under the Redis hash and write it beside it.
One small JSON file per model digest under
``cache_dir("lr")``: the engine's keys (``_lr_finder.lr_key``: input spec, classes,
device type, the config fields that change the choice) map to the rate. The finder is
deterministic given the weights and config, so a stored rate is the one it would find.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, MutableMapping
from pathlib import Path

from protolens_server.paths import cache_dir


class DiskRates(MutableMapping[str, float]):
    """The rates found for one model (by weights digest), read once, written through."""

    def __init__(self, digest: str, root: Path | None = None) -> None:
        self.path = (root or cache_dir("lr")) / f"{digest}.json"
        try:
            loaded = json.loads(self.path.read_text())
            self._rates = {str(k): float(v) for k, v in loaded.items()}
        except (OSError, ValueError, AttributeError):
            self._rates = {}  # none yet, or unreadable: the finder runs and rewrites it

    def __getitem__(self, key: str) -> float:
        return self._rates[key]

    def __setitem__(self, key: str, value: float) -> None:
        self._rates[key] = float(value)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                json.dump(self._rates, f, sort_keys=True)
            os.replace(tmp, self.path)  # atomic: a concurrent reader sees old or new
        except OSError:
            pass  # a read-only cache folder costs a probe next time, nothing else

    def __delitem__(self, key: str) -> None:
        del self._rates[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._rates)

    def __len__(self) -> int:
        return len(self._rates)
