"""Keep the garbage collector's full passes short in long-running processes.

The API server and the workers hold a large, long-lived heap once started
(torch, loaded models, protobuf descriptors, the gRPC stack). CPython's full
(generation-2) collection walks all of it: 50-100 ms each on this project's
2-core benchmark machine, a pause that every RPC in flight waits out. It set
the cache-hit GetPrototype p99 to about 100 ms under 50 clients
(bench/service_bench.py) while the median was 2 ms.

``gc.freeze()`` moves everything alive at that point into a permanent
generation that the collector no longer scans, so later full passes walk only
objects made since. Frozen objects are still freed by reference counting; only
reference cycles among them are never collected, which suits a start-up heap
and loaded models. ``protolens_gc_pause_seconds`` shows the pauses that remain.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from protolens_server import metrics

_started = [0.0]


def _observe(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
    else:
        elapsed = time.perf_counter() - _started[0]
        metrics.GC_PAUSE_SECONDS.labels(str(info["generation"])).observe(elapsed)


def observe_gc_pauses() -> None:
    """Time every collection into ``protolens_gc_pause_seconds`` (idempotent)."""
    if _observe not in gc.callbacks:
        gc.callbacks.append(_observe)


def freeze_heap(*, collect: bool = False) -> int:
    """Exclude every object alive now from future collections; returns the frozen count.

    ``collect=True`` runs one full collection first, so garbage is not frozen
    with the live heap: right at start-up, before serving. Later (after a model
    loads, while serving) freeze without it, since that collection is the very
    pause this avoids.
    """
    if collect:
        gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    metrics.GC_FROZEN_OBJECTS.set(frozen)
    return frozen


def freeze_startup_heap() -> int:
    """At the end of start-up: freeze the heap, then time every GC pause from here on."""
    frozen = freeze_heap(collect=True)
    observe_gc_pauses()
    return frozen
