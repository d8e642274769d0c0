"""What a check generates per class, and the job specs that key it.

A check generates through the same ``JobSpec`` the queue uses, one spec per
chunk of classes, so the content cache key (``queue.cache.cache_key``: model
digest, targets, config, seed, reference digest, engine version) is the same
whether the prototypes come from the service's queue or from the local cache
directory of ``protolens check``. Analysis always runs on the decoded PNGs, so
a cached and a fresh run give identical numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from protolens_server import ENGINE_VERSION
from protolens_server.engine import Target
from protolens_server.engine.types import GenerationConfig
from protolens_server.queue.checks import GenerationStats  # noqa: F401 (re-exported)
from protolens_server.queue.records import JobSpec

DEFAULT_CHUNK = 4  # classes per job: small enough that a subset re-check mostly hits the cache


@dataclass
class ClassPrototypes:
    """One model version's prototypes for one class (decoded from PNG, in [0, 1]; an
    alpha prototype's composited over mid-grey, its RGBA PNG in ``pngs``)."""

    class_index: int
    images: torch.Tensor  # (P, C, H, W)
    pngs: list[bytes]
    probabilities: list[float]
    scores: list[dict[str, Any] | None]
    cache_hit: bool = False
    job_id: str = ""

    @property
    def probability(self) -> float:
        return float(sum(self.probabilities) / max(1, len(self.probabilities)))

    @property
    def path_similarity(self) -> float | None:
        """Mean path similarity over the prototypes that have one."""
        values = [float(s["path_similarity"]) for s in self._determinate()]
        return sum(values) / len(values) if values else None

    @property
    def path_similarity_interval(self) -> tuple[float, float] | None:
        """The mean of those prototypes' interval ends (their errors share one reference
        set, so they are not averaged away): None when a prototype has no interval."""
        scored = self._determinate()
        ends = [(s.get("path_similarity_low"), s.get("path_similarity_high")) for s in scored]
        if not ends or any(low is None or high is None for low, high in ends):
            return None
        return (
            sum(float(low) for low, _ in ends) / len(ends),
            sum(float(high) for _, high in ends) / len(ends),
        )

    def _determinate(self) -> list[dict[str, Any]]:
        return [s for s in self.scores if s and s.get("path_similarity") is not None]


def chunks(classes: Sequence[int], size: int = DEFAULT_CHUNK) -> list[tuple[int, ...]]:
    size = max(1, size)
    return [tuple(classes[i : i + size]) for i in range(0, len(classes), size)]


def check_spec(
    model: str,
    digest: str,
    classes: Sequence[int],
    config: GenerationConfig,
    seed: int,
    *,
    reference_set: str = "",
    reference_digest: str = "",
    tenant: str = "default",
) -> JobSpec:
    """The job spec for one chunk of a check (the queue's cache key covers it)."""
    return JobSpec(
        model=model,
        model_digest=digest,
        targets=tuple(Target((int(c),)) for c in classes),
        config=config,
        seed=int(seed),
        reference_set=reference_set,
        reference_digest=reference_digest,
        engine_version=ENGINE_VERSION,
        tenant=tenant,
    )
