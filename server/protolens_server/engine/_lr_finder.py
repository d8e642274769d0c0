"""The learning-rate finder: short probe runs over a log grid pick the rate for a model
and config, conservatively.

A rate that suits EfficientNet-Lite0 at 224 px is too slow for a 32-px CNN and too
fast for a ViT: the scale of the gradient reaching the image differs by orders of
magnitude between models, and Adam only partly hides it (the regularisers' pull
is in the same units as the rate). So ``config.lr = 0`` (the default) asks the
finder: every rate of ``GRID`` runs ``PROBE_STEPS`` steps of the real optimisation
(same start, transforms, objective and regularisers) for ``PROBE_CLASSES`` class(es)
spread over the model's classes, all as one batch (the optimiser's rate is per
image). Each rate is scored by the loss it reached (smoothed over the last
steps), and the finder takes the grid point **one below** the best: near the best
rate the loss curve is flat, and a probe this short favours rates that are fast
early and unstable later.

The choice depends only on the model, its input spec, the device type and the
config fields that shape the optimisation (not steps, seeds or targets), so it is
memoised per model under ``lr_key``: a second call pays nothing. A given ``lr``
skips the finder.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .types import GenerationConfig, InputSpec

GRID: tuple[float, ...] = tuple(0.025 * 2**k for k in range(6))  # 0.025 .. 0.8
PROBE_STEPS = 24
PROBE_CLASSES = 1
FINDER_VERSION = 1  # bump when GRID, PROBE_STEPS, the classes or the rule change

# Config fields that do not change what a probe measures.
_IGNORED = ("lr", "steps", "max_steps", "prototypes", "max_batch", "progress_every")


@dataclass(frozen=True)
class LrProbe:
    """One run of the finder's probes (``engine.probe_lr``): the loss each rate reached
    on ``classes``, and the rate the finder's rule picks from them."""

    classes: tuple[int, ...]
    rates: tuple[float, ...]
    losses: tuple[float, ...]
    chosen: float


def probe_classes(num_classes: int, count: int = 0) -> list[int]:
    """The classes probed (``count`` of them, default ``PROBE_CLASSES``): spread evenly
    over the model's classes."""
    n = min(count or PROBE_CLASSES, num_classes)
    return sorted({(2 * k + 1) * num_classes // (2 * n) for k in range(n)})


def lr_key(spec: InputSpec, num_classes: int, device_type: str, config: GenerationConfig) -> str:
    """What the finder's choice depends on besides the model's weights, as a string
    (the caller scopes it per model: by digest, or per module in process)."""
    fields = {k: v for k, v in config.to_dict().items() if k not in _IGNORED}
    material = {
        "finder": FINDER_VERSION,
        "spec": spec.to_dict(),
        "classes": num_classes,
        "device": device_type,
        "config": fields,
    }
    return json.dumps(material, sort_keys=True, separators=(",", ":"))


def choose(losses: Sequence[float]) -> float:
    """The rate one grid step below the one whose probes ended lowest (NaN counts as worst)."""
    finite = [v if math.isfinite(v) else math.inf for v in losses]
    best = min(range(len(finite)), key=finite.__getitem__)
    return GRID[max(0, best - 1)]


def find_lr(probe: Callable[[Sequence[float]], list[float]]) -> float:
    """Run ``probe(GRID)`` (mean final loss per rate) and choose a rate from it."""
    return choose(probe(GRID))
