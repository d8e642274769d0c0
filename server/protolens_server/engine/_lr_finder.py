"""The learning-rate finder: short probe runs over a log grid pick the rate for a model
and config.

A rate that suits EfficientNet-Lite0 at 224 px is too slow for a 32-px CNN and too
fast for a ViT: the scale of the gradient reaching the image differs by orders of
magnitude between models, and Adam only partly hides it (the regularisers' pull
is in the same units as the rate). So ``config.lr = 0`` (the default) asks the
finder: every rate of ``GRID`` runs ``PROBE_STEPS`` steps of the real optimisation
(same start, transforms, objective and regularisers) for each of ``PROBE_CLASSES``
classes spread over the model's classes, batched together (the optimiser's rate is
per image).

Probes: every rate runs each probe class once per seed of ``PROBE_SEEDS`` (two: each
its own perturbation of the start and its own transform draws), so a rate is judged on
eight probes. A probe's end loss at the faster rates is chaotic: another seed, or only
another float summation order (torch's thread count), moves it by several units
(``bench/finder_probe.py --probe-seeds``, results in ``bench/results/finder_robustness``),
and four probes per rate were too few: on EfficientNet-Lite0 the rule of
``FINDER_VERSION`` 2 picked 0.05, 0.1 or 0.2 depending on the seed and the thread count.

Scoring: for each probe, a rate's loss at the end (smoothed over the last steps) is
placed between that probe's worst (0) and best (1) loss over the grid, and a rate's
score is the mean of these fractions over the probes. Every probe counts alike
whatever the scale of its loss (one class's margin can be ten times another's; the
first loss is no scale either: on EfficientNet-Lite0 every rate removes most of it, so
shares of it all look alike), and one class whose probe is noise cannot decide alone:
on the shortcut suite's background ViT the single middle class's losses were noise
across the grid, and the old one-class rule chose 0.025 where the model needs 0.1 or
more.

Rule: the rates scoring at least ``1 - TOLERANCE`` of the best are the good ones; their
``centre`` is their geometric mean weighted by how far each scores above that floor (a
rate just at the floor weighs nothing), a continuous function of the scores: on a
peaked curve it lies near the best, on a flat one (a small ViT from 0.05 to 0.2) in
the middle of the flat part. The finder takes the nearest of the grid's rates and
their geometric midpoints (0.025, 0.0354, 0.05, 0.0707, 0.1, 0.141, 0.2). The rule of
``FINDER_VERSION`` 2 (one grid step below the end of the good range) hung on single
scores crossing the floor, which noise decides, and moved by 2x or 4x; the centre moves
little with them, and the choice moves by one half-octave step (1.41x) when the centre
crosses a midpoint between two steps. A fixed set of rates rather than the centre
itself: two machines whose centres differ by a hair then pick the same rate (so the
same prototypes where their arithmetic agrees), and the rate in a prototype's
provenance stays readable. The choice is at most ``MAX_LR`` (0.2, one grid step below
the top): where the loss still falls at the top (small CNNs, whose margin has no
ceiling) nothing faster was probed to show where it turns, and there rates of 0.8 made
prototypes that differ between retrained twins, and 0.4 lost a planted shortcut
(``docs/engine.md``). The grid stops at 0.4 (``FINDER_VERSION`` 4; 3 probed 0.8 too):
0.8 could not be chosen and only set each probe's worst loss; without it the rule
picks the same rate on 42 of the 48 saved seed pairs and a half-octave lower on the
other 6; resampled, two draws' choices lie within 1.5x as often or more often on seven of
the eight saved models (EfficientNet-Lite0: 98 % -> 100 %), a little less often on one
(``patch-vit-model``: 100 % -> 99 %); and the probes cost a sixth less
(``bench/finder_rules.py``). A rate whose probe diverged (NaN) scores 0.

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

from ._stopping import EMA_WEIGHT  # a probe's end loss: the stopping rule's moving average
from .types import GenerationConfig, InputSpec

GRID: tuple[float, ...] = tuple(0.025 * 2**k for k in range(5))  # 0.025 .. 0.4
MAX_LR = 0.2  # the fastest rate the finder picks (one grid step below the top)
PROBE_STEPS = 24
PROBE_CLASSES = 4
PROBE_SEEDS: tuple[int, ...] = (0, 1)  # each probe class starts from each of these seeds
TOLERANCE = 0.3  # a rate scoring at least (1 - TOLERANCE) x the best counts as good
STEPS_PER_OCTAVE = 2  # the chosen rate is a grid rate or a geometric midpoint of two
FINDER_VERSION = 4  # bump when GRID, PROBE_STEPS, the probes or the rule change

# Config fields that do not change what a probe measures.
_IGNORED = ("lr", "steps", "max_steps", "prototypes", "max_batch", "progress_every")


@dataclass(frozen=True)
class LrProbe:
    """One run of the finder's probes (``engine.probe_lr``): per rate, the mean end loss
    of the probes (``losses``), each probe's end loss (``ends[rate][probe]``, probe
    ``c * len(seeds) + s`` for class ``classes[c]`` from seed ``seeds[s]``), every step's
    loss (``traces[rate][probe][step]``), the rate's score (``scores``: 1 is every
    probe's best loss, 0 its worst), the good rates' ``centre`` and the grid rate the
    finder's rule picks (``chosen``, the nearest to it)."""

    classes: tuple[int, ...]
    seeds: tuple[int, ...]
    rates: tuple[float, ...]
    losses: tuple[float, ...]
    ends: tuple[tuple[float, ...], ...]
    traces: tuple[tuple[tuple[float, ...], ...], ...]
    scores: tuple[float, ...]
    centre: float
    chosen: float

    def chosen_at(self, tolerance: float) -> float:
        """The rate the rule would pick from these scores with another ``tolerance``."""
        return choose(self.scores, self.rates, tolerance)


def inspect(
    classes: Sequence[int],
    seeds: Sequence[int],
    traces: Sequence[Sequence[Sequence[float]]],
    grid: Sequence[float] = GRID,
) -> LrProbe:
    """The ``LrProbe`` of probe ``traces`` (``[rate][probe][step]``) on ``grid``."""
    ends = end_losses(traces)
    rate_scores = scores(ends)
    return LrProbe(
        tuple(classes),
        tuple(seeds),
        tuple(grid),
        tuple(sum(v) / len(v) for v in ends),
        tuple(tuple(v) for v in ends),
        tuple(tuple(tuple(t) for t in rate) for rate in traces),
        tuple(rate_scores),
        centre(rate_scores, grid),
        choose(rate_scores, grid),
    )


def end_losses(traces: Sequence[Sequence[Sequence[float]]]) -> list[list[float]]:
    """Each probe's end loss (``[rate][probe]``): the moving average of its step losses."""
    out: list[list[float]] = []
    for rate in traces:
        row = []
        for trace in rate:
            ema = trace[0]
            for v in trace[1:]:
                ema += EMA_WEIGHT * (v - ema)
            row.append(ema)
        out.append(row)
    return out


def probe_classes(num_classes: int, count: int = 0) -> list[int]:
    """The classes probed (``count`` of them, default ``PROBE_CLASSES``): spread evenly
    over the model's classes."""
    n = min(count or PROBE_CLASSES, num_classes)
    return sorted({(2 * k + 1) * num_classes // (2 * n) for k in range(n)})


def lr_key(
    spec: InputSpec,
    num_classes: int,
    device_type: str,
    config: GenerationConfig,
    *,
    multi_label: bool = False,
) -> str:
    """What the finder's choice depends on besides the model's weights, as a string
    (the caller scopes it per model: by digest, or per module in process). A
    multi-label model's probes run its own objective (``_readout``), so it says so; a
    single-label model's key is as it always was."""
    fields = {k: v for k, v in config.to_dict().items() if k not in _IGNORED}
    material: dict[str, object] = {
        "finder": FINDER_VERSION,
        "spec": spec.to_dict(),
        "classes": num_classes,
        "device": device_type,
        "config": fields,
    }
    if multi_label:
        material["multi_label"] = True
    return json.dumps(material, sort_keys=True, separators=(",", ":"))


def scores(losses: Sequence[Sequence[float]]) -> list[float]:
    """Per rate, the mean over probes of where the rate's loss (``losses[rate][probe]``)
    lies between that probe's worst (0) and best (1) loss over the grid. A probe whose
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


def centre(
    rate_scores: Sequence[float], grid: Sequence[float] = GRID, tolerance: float = TOLERANCE
) -> float:
    """The geometric mean of the rates scoring at least ``1 - tolerance`` of the best,
    each weighted by its score's excess over that floor (tolerance 0: the best rates
    alone): a continuous function of the scores. The lowest rate when none scored
    above 0."""
    best = max(rate_scores)
    if not best > 0:
        return grid[0]
    floor = (1 - tolerance) * best
    weights = [max(0.0, s - floor) for s in rate_scores]
    if not sum(weights) > 0:
        weights = [1.0 if s == best else 0.0 for s in rate_scores]
    logs = sum(w * math.log(r) for w, r in zip(weights, grid, strict=True))
    return math.exp(logs / sum(weights))


def choose(
    rate_scores: Sequence[float],
    grid: Sequence[float] = GRID,
    tolerance: float = TOLERANCE,
    top: float = MAX_LR,
) -> float:
    """The rate nearest (on the log scale) to the good rates' ``centre`` among ``grid[0]``
    times whole powers of ``2 ** (1 / STEPS_PER_OCTAVE)`` (on the default grid: its rates
    and their geometric midpoints), at most ``top``. Assumes a grid that doubles."""
    steps = math.log2(centre(rate_scores, grid, tolerance) / grid[0]) * STEPS_PER_OCTAVE
    cap = round(math.log2(top / grid[0]) * STEPS_PER_OCTAVE)
    k = min(max(0, math.floor(steps + 0.5)), max(0, cap))
    return float(f"{grid[0] * 2 ** (k / STEPS_PER_OCTAVE):.4g}")


def find_lr(probe: Callable[[Sequence[float]], list[list[list[float]]]]) -> float:
    """Run ``probe(GRID)`` (every step's loss per rate and probe: each probe class from
    each of ``PROBE_SEEDS``) and choose a rate."""
    return choose(scores(end_losses(probe(GRID))))
