"""Score prototypes against a reference set: the one call the CLI and the workers make.

    scores = score_prototypes(handle, prototypes, Path("refs/"), layers=None)
    scores[0].path_similarity      # mean normalised Spearman over layers
    prototypes[0].scores is scores[0]

Loads (or reuses) the reference set and its cached statistics, then runs the
engine's pure scoring (``engine.score``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from protolens_server.engine import _scores
from protolens_server.engine._scores import PrototypeScores
from protolens_server.engine.types import Prototype
from protolens_server.references import ReferenceSet, reference_statistics


def open_reference(handle: object, reference: ReferenceSet | str | Path) -> ReferenceSet:
    """A ``ReferenceSet`` as is, or one read from a folder for ``handle``'s classes."""
    if isinstance(reference, ReferenceSet):
        return reference
    return ReferenceSet.from_folder(
        reference,
        getattr(handle, "class_names", ()),
        getattr(handle, "class_aliases", ()),
    )


def score_prototypes(
    handle: object,
    prototypes: Sequence[Prototype],
    reference: ReferenceSet | str | Path,
    *,
    layers: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
    robustness_samples: int = 16,
    robustness_transforms: str = "medium",
    seed: int = 0,
    cache_dir: str | Path | None = None,
) -> list[PrototypeScores]:
    """Scores for each prototype (also stored on ``prototype.scores``), in order."""
    refset = open_reference(handle, reference)
    needed = sorted({c for p in prototypes for c in p.target.classes})
    refset.require(needed, getattr(handle, "class_names", ()))
    stats = reference_statistics(handle, refset, layers, device=device, cache_dir=cache_dir)
    results = _scores.score(
        handle,
        prototypes,
        stats,
        device=device,
        robustness_samples=robustness_samples,
        robustness_transforms=robustness_transforms,
        seed=seed,
    )
    for prototype, result in zip(prototypes, results, strict=True):
        prototype.scores = result
    return results
