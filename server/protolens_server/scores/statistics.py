"""A model's reference statistics for a reference set: computed once, then from the cache.

The key (``cache.stats_key``) covers the model's weight digest, the layer set, the
set's content digest, the image policy, the input spec, the scores version and
the bootstrap (resamples, seed): the next prototype of the same model costs no
reference forward pass. The first costs one forward pass per reference image and
finds the set's caveats from the images it loaded (``engine.reference_caveats``, kept
with the statistics, on disk too: a file written before caveats had another scores
version, so it is recomputed, never read as "no caveats"); each class's bootstrap
levels are computed when a prototype of it is first scored
(``engine.ReferenceStats.class_replicates``), kept with the statistics in memory
and written to their disk file (``save_new_bootstraps``).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from protolens_server.engine import (
    RESAMPLES,
    LayerSet,
    ReferenceStats,
    capture,
    layers_of,
    reference_caveats,
    reference_stats,
)
from protolens_server.errors import ReferenceSetError
from protolens_server.scores import cache
from protolens_server.scores.references import POLICY, ReferenceSet, load_images

STATS_DIR = "refstats"
# statistics -> (their disk file, how many class bootstraps it holds)
_ON_DISK: weakref.WeakKeyDictionary[ReferenceStats, tuple[Path, int]] = weakref.WeakKeyDictionary()
_ON_DISK_LOCK = threading.Lock()


def reference_statistics(
    model: Any,
    refset: ReferenceSet,
    layers: Sequence[str] | None = None,
    *,
    device: str | torch.device = "cpu",
    cache_dir: str | Path | None = None,
    batch_size: int = 32,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> ReferenceStats:
    """Per-layer, per-class reference statistics for ``model`` (a ``ModelHandle``), cached.

    ``layers`` are user layer names (None: the default set). The result's
    ``layers`` always end with ``"logits"``; for TorchScript it is only that.
    Disk entries live in ``cache_dir`` if given, else ``cache.cache_dir("refstats")``.
    """
    refset.check_usable()
    layer_set = layers_of(model, layers, device=device)
    model_digest = getattr(model, "digest", "") or ""
    if not model_digest:
        raise ReferenceSetError("model", "needs a content digest to cache reference statistics")
    key = cache.stats_key(
        model_digest,
        layer_set.names,
        refset.digest,
        model.input_spec,
        policy=POLICY,
        resamples=resamples,
        seed=seed,
    )
    cached = cache.MEMORY_CACHE.get(key)
    if cached is not None:
        return cached
    path = cache.cache_dir(STATS_DIR, cache_dir) / f"{key}.pt"
    stats = cache.read_stats(path)
    if stats is None:
        stats = _compute(
            model, refset, layer_set, device=device, batch_size=batch_size,
            resamples=resamples, seed=seed,
        )  # fmt: skip
        cache.write_stats(path, stats)
    cache.MEMORY_CACHE.put(key, stats)
    with _ON_DISK_LOCK:
        _ON_DISK.setdefault(stats, (path, len(stats.replicated)))
    return stats


def save_new_bootstraps(stats: ReferenceStats) -> None:
    """Rewrite the statistics' disk file when classes were bootstrapped since it was written,
    so that the next process finds them (the bootstrap is the costly part of a first score)."""
    with _ON_DISK_LOCK:
        known = _ON_DISK.get(stats)
        if known is None or len(stats.replicated) <= known[1]:
            return
        _ON_DISK[stats] = (known[0], len(stats.replicated))
    cache.write_stats(known[0], stats)


def _compute(
    model: Any,
    refset: ReferenceSet,
    layer_set: LayerSet,
    *,
    device: str | torch.device,
    batch_size: int,
    resamples: int,
    seed: int,
) -> ReferenceStats:
    images, labels = load_images(refset, model.input_spec)
    parts: dict[str, list[torch.Tensor]] = {n: [] for n in layer_set.names}
    for start in range(0, images.shape[0], batch_size):
        acts = capture(model, images[start : start + batch_size], layer_set, device=device)
        for name, value in acts.items():
            parts[name].append(value)
    activations = {n: torch.cat(v) for n, v in parts.items()}
    caveats = reference_caveats(images, labels, [im.relative for im in refset.images])
    return reference_stats(
        activations, labels, digest=refset.digest, resamples=resamples, seed=seed,
        caveats=caveats,
    )  # fmt: skip
