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

A model's temperature says nothing about what it has learned, so a version whose logits
spread less than one unit over noise images (a strongly tempered model, a cosine head
without its scale; ``engine/_logit_scale.py``) is **read at the other version's spread**
(at one unit when that one spreads less too, or there is none): its logits are multiplied
by that spread over its own before any probability is read from them (its prototypes'
confidence, the cross-scores, the entanglement graphs). A ×0.05 copy of a suite model
gave its own prototypes 0.20-0.47 and so failed ``min_confidence`` and changed the
entanglement of every class against the model it was copied from (docs/checks.md); read
at that model's spread it is that model. Versions spreading a unit or more are read as
they are, which is every model the project measures (engine 0.3.8 reads a model the same
way for its convergence gate, and leaves the others alone for the same reason).

A version retrained at another input size, or in grey where the other is in colour, sees
the other version's prototypes as it would see any image (``fitted``): resized to its own
height and width (bilinear, antialiased) and, between one and three channels, made grey
(ITU-R BT.601 luma) or repeated. Any other pair of channel counts has no such reading and
is refused before anything is generated (``fittable``).
"""

from __future__ import annotations

import math
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
    logit_spread,
    penalty_unit,
)

__all__ = [
    "Drift",
    "drifts",
    "fittable",
    "fitted",
    "probabilities",
    "reading_scales",
    "target_probability",
]

_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601: what a grey model saw of a colour photo


def fittable(channels: int, other: int) -> bool:
    """Can an image of ``other`` channels be shown to a model of ``channels`` (``fitted``)?"""
    return channels == other or {channels, other} == {1, 3}


def fitted(images: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """(B, C, H, W) images in [0, 1] as a model of input ``shape`` (C', H', W') takes them
    (module doc); the same tensor when they already fit."""
    channels, height, width = shape
    if images.shape[1] != channels:
        if not fittable(channels, int(images.shape[1])):
            raise ValueError(f"{images.shape[1]}-channel images for a {channels}-channel model")
        if channels == 1:
            luma = images.new_tensor(_LUMA).view(1, 3, 1, 1)
            images = (images * luma).sum(dim=1, keepdim=True)
        else:
            images = images.expand(-1, channels, -1, -1)
    if tuple(images.shape[2:]) != (height, width):
        images = torch.nn.functional.interpolate(
            images.float(), size=(height, width), mode="bilinear", antialias=True,
            align_corners=False,
        ).clamp(0.0, 1.0)  # fmt: skip
    return images


def drifts(
    model: ImageClassifier,
    old: Mapping[int, torch.Tensor],
    new: Mapping[int, torch.Tensor],
    *,
    seed: int = 0,
) -> dict[int, Drift]:
    """Drift per class (classes present in both), measured in ``model`` (the new version);
    ``old`` prototypes are ``fitted`` to its input first."""
    shape = tuple(model.input_spec.shape)
    return drift(model, {c: fitted(v, shape) for c, v in old.items()}, new, seed=seed)


def reading_scales(
    model: ImageClassifier, baseline: ImageClassifier | None = None
) -> tuple[float, float]:
    """The factors on ``model``'s and ``baseline``'s logits before probabilities are read
    from them (module doc): 1 for a version spreading a unit or more; for one spreading
    less, the other version's spread (at least one unit) over its own. The baseline's is 1
    when there is none. Spreads are measured once per model (the engine memoises them)."""
    new = logit_spread(model)
    old = logit_spread(baseline) if baseline is not None else None
    return _scale(new, old), (_scale(old, new) if old is not None else 1.0)


def _scale(spread: float, other: float | None) -> float:
    unit = penalty_unit(spread)  # the engine's own reading: under a unit, or 1
    if not 0.0 < unit < 1.0:
        return 1.0  # a unit or more, or not measurable (such a model fails elsewhere)
    target = other if other is not None and math.isfinite(other) and other > 1.0 else 1.0
    return target / unit


def probabilities(model: ImageClassifier, images: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Class probabilities for a batch in [0, 1] image space (``fitted`` to the model's
    input), the logits multiplied by ``scale`` first (``reading_scales``): (B, K), the
    softmax over classes, or for a multi-label model each label's own sigmoid."""
    images = fitted(images.float(), tuple(model.input_spec.shape))
    logits = capture(model, images, [LOGITS])[LOGITS]
    if scale != 1.0:
        logits = logits * scale
    return class_probabilities(logits, is_multi_label(model))


def target_probability(
    model: ImageClassifier, images: torch.Tensor, cls: int, scale: float = 1.0
) -> float:
    return float(probabilities(model, images, scale)[:, cls].mean())
