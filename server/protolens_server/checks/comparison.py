"""How far a class's prototypes moved between two model versions.

- *drift*: the old and new prototypes are both run through the NEW model and
  compared layer by layer, on path similarity's scale and under its rules
  (``engine.drift``): a layer counts only where other classes' prototypes are
  clearly less alike than a prototype is to itself (gap at least 3 bootstrap
  standard errors); per layer ``clamp(1 - normalised similarity, 0, 1)``, so 0 =
  unchanged, 1 = at least as different as another class's prototype; ``drift`` is
  the median over those layers, with a bootstrap interval, always in [0, 1].
- *cross-scoring*: each version's prototype classified by the other model
  (target probability): a new model that no longer recognises what the old one
  looked for, or an old model that does not recognise the new prototype, means
  the class now rests on different evidence.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from protolens_server.engine import (
    LOGITS,
    Drift,
    ImageClassifier,
    capture,
    class_probabilities,
    drift,
    is_multi_label,
)

__all__ = ["Drift", "drifts", "probabilities", "target_probability"]


def drifts(
    model: ImageClassifier,
    old: Mapping[int, torch.Tensor],
    new: Mapping[int, torch.Tensor],
    *,
    seed: int = 0,
) -> dict[int, Drift]:
    """Drift per class (classes present in both), measured in ``model`` (the new version)."""
    return drift(model, old, new, seed=seed)


def probabilities(model: ImageClassifier, images: torch.Tensor) -> torch.Tensor:
    """Class probabilities for a batch in [0, 1] image space: (B, K), the softmax over
    classes, or for a multi-label model each label's own sigmoid."""
    logits = capture(model, images.float(), [LOGITS])[LOGITS]
    return class_probabilities(logits, is_multi_label(model))


def target_probability(model: ImageClassifier, images: torch.Tensor, cls: int) -> float:
    return float(probabilities(model, images)[:, cls].mean())
