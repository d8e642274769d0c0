"""The learning-rate finder: short probe runs over a log grid pick the rate for a model
and config.

A rate that suits EfficientNet-Lite0 at 224 px is too slow for a 32-px CNN and too
fast for a ViT: the scale of the gradient reaching the image differs by orders of
magnitude between models, and Adam only partly hides it (the regularisers' pull
is in the same units as the rate). So ``config.lr = 0`` (the default) asks the
finder: every rate of ``GRID`` runs ``PROBE_STEPS`` steps of the real optimisation
(same start, transforms, objective and regularisers) for each of ``PROBE_CLASSES``
classes spread over the model's classes, all as one batch (the optimiser's rate is
per image).

Scoring: for each probe class, a rate's loss at the end (smoothed over the last
steps) is placed between that class's worst (0) and best (1) loss over the grid, and
a rate's score is the mean of these fractions over the classes. Every class counts
alike whatever the scale of its loss (one class's margin can be ten times another's;
the first loss is no scale either: on EfficientNet-Lite0 every rate removes most of
it, so shares of it all look alike), and one class whose probe is noise cannot decide
alone: on the shortcut suite's background ViT the single middle class's losses were
noise across the grid (``bench/finder_probe.py``), and the old one-class rule chose
0.025 where the model needs 0.1 or more.

Rule: from the best-scoring rate, go up while every rate scores at least
``1 - TOLERANCE`` of the best; the last such rate ends the good range, and the finder
takes the grid point **one below** it. On a peaked curve that is one below the best
(the rule of ``FINDER_VERSION`` 1: a probe this short favours rates that are fast early
and unstable later); where the probe cannot tell rates apart (a flat curve, as on a
small ViT from 0.05 to 0.2) it moves up with the range, and the faster rate moves the
image further within the run's budget. The grid's top rate never ends the range:
where the loss still falls there (small CNNs, whose margin has no ceiling) nothing
faster was probed to show where it turns, and there rates of 0.8 made prototypes that
differ between retrained twins (``docs/engine.md``). A rate whose probe diverged
(NaN) scores 0.

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
PROBE_CLASSES = 4
TOLERANCE = 0.3  # a rate scoring at least (1 - TOLERANCE) x the best counts as good
FINDER_VERSION = 2  # bump when GRID, PROBE_STEPS, the classes or the rule change

# Config fields that do not change what a probe measures.
_IGNORED = ("lr", "steps", "max_steps", "prototypes", "max_batch", "progress_every")


@dataclass(frozen=True)
class LrProbe:
    """One run of the finder's probes (``engine.probe_lr``): per rate, the mean smoothed
    loss the probes ended at over ``classes`` and the rate's score (``scores``: 1 is
    every class's best loss, 0 its worst), and the rate the finder's rule picks."""

    classes: tuple[int, ...]
    rates: tuple[float, ...]
    losses: tuple[float, ...]
    scores: tuple[float, ...]
    chosen: float

    def chosen_at(self, tolerance: float) -> float:
        """The rate the rule would pick from these scores with another ``tolerance``."""
        return choose(self.scores, self.rates, tolerance)


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


def scores(losses: Sequence[Sequence[float]]) -> list[float]:
    """Per rate, the mean over probe classes of where the rate's loss (``losses[rate][class]``)
    lies between that class's worst (0) and best (1) loss over the grid. A class whose
    losses are all equal tells nothing and is left out; a non-finite loss scores 0."""
    rates = range(len(losses))
    fractions: list[list[float]] = [[] for _ in rates]
    for column in zip(*losses, strict=True):
        finite = [v for v in column if math.isfinite(v)]
        if not finite or max(finite) == min(finite):
            continue
        worst, best = max(finite), min(finite)
        for r, v in zip(rates, column, strict=True):
            fractions[r].append((worst - v) / (worst - best) if math.isfinite(v) else 0.0)
    return [sum(f) / len(f) if f else 0.0 for f in fractions]


def choose(
    rate_scores: Sequence[float], grid: Sequence[float] = GRID, tolerance: float = TOLERANCE
) -> float:
    """One grid step below the end of the good range: from the best-scoring rate, up
    while every rate scores at least ``1 - tolerance`` of the best (a good rate beyond a
    bad one is noise), never up to the grid's top. The lowest rate when none scored
    above 0."""
    best = max(rate_scores)
    if not best > 0:
        return grid[0]
    last = max(0, len(grid) - 2)
    k = min(list(rate_scores).index(best), last)
    while k < last and rate_scores[k + 1] >= (1 - tolerance) * best:
        k += 1
    return grid[max(0, k - 1)]


def find_lr(probe: Callable[[Sequence[float]], list[list[float]]]) -> float:
    """Run ``probe(GRID)`` (the smoothed loss per rate and class) and choose a rate."""
    return choose(scores(probe(GRID)))
