"""Drift: how far a class's prototypes moved between two model versions, seen by one model.

The old and new prototypes of every class are run through the same model (the
new version) and compared layer by layer with Spearman similarity, on the same
scale and under the same rules as path similarity:

- ``v``: each old prototype against the new prototype of the same index (mean);
- ``o``: the new prototypes of *other* classes against this class's new
  prototypes (mean); ``1`` (a prototype against itself) is the same-class level;
- normalised similarity ``(v - o) / (1 - o)``, defined only where the gap
  ``1 - o`` is positive and at least ``MIN_SPAN_Z`` bootstrap standard errors
  wide (layers where every class's prototype looks alike say nothing);
- per-layer drift ``clamp(1 - normalised, 0, 1)``: 0 = unchanged, 1 = at least as
  different as another class's prototype. Bounded, so no layer can run away;
- ``drift``: the median over the determinate layers, with a percentile interval
  from a seeded bootstrap that redraws this class's prototype pairs and the other
  classes (whole classes when there are two or more, else that class's prototypes).

With one class checked there is no other class: the per-layer drift is then
``clamp(1 - v, 0, 1)``. With nothing to redraw (one prototype, one other class)
the interval is the point itself.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from . import _activations
from ._bootstrap import CONFIDENCE, RESAMPLES, percentile_interval, separated
from ._measures import pairwise, similarity
from ._seeds import derive_seed


@dataclass(frozen=True)
class Drift:
    drift: float | None  # median per-layer drift over the determinate layers, in [0, 1]
    low: float | None  # its bootstrap interval
    high: float | None
    layers: dict[str, float | None] = field(default_factory=dict)  # per-layer drift in [0, 1]
    reasons: dict[str, str] = field(default_factory=dict)  # layer -> why it is None
    determinate_layers: int = 0
    reason: str = ""  # why drift is None


def _draw_counts(units: int, resamples: int, g: torch.Generator) -> torch.Tensor:
    """(B, units) float64 multiplicities of a bootstrap over ``units`` items."""
    picks = torch.randint(0, units, (resamples, units), generator=g)
    out = torch.zeros((resamples, units), dtype=torch.float64)
    out.scatter_add_(1, picks, torch.ones_like(picks, dtype=torch.float64))
    return out


def _weighted(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted means of ``values`` (n,) under each row of ``weights`` (B, n), NaN left out."""
    ok = torch.isfinite(values)
    v = torch.where(ok, values, torch.zeros_like(values))
    w = weights * ok
    mass = w.sum(dim=1)
    return torch.where(mass > 0, (w @ v) / mass.clamp_min(1e-300), torch.full_like(mass, math.nan))


def _nanmean(v: torch.Tensor) -> float:
    finite = v[torch.isfinite(v)]
    return float(finite.mean()) if finite.numel() else math.nan


class _Class:
    """One class's resampling plan: its pairs, and the other classes (or one class's images)."""

    def __init__(
        self, pairs: int, others: list[int], sizes: dict[int, int], b: int, g: torch.Generator
    ) -> None:
        self.pairs = _draw_counts(pairs, b, g)  # (B, P)
        self.others = others
        if len(others) >= 2:
            self.classes = _draw_counts(len(others), b, g)  # (B, K-1): whole classes
            self.within = None
        else:
            self.classes = torch.ones((b, len(others)), dtype=torch.float64)
            self.within = _draw_counts(sizes[others[0]], b, g) if others else None


def _other_level(sims: list[torch.Tensor], plan: _Class) -> tuple[float, torch.Tensor]:
    """The other-class level and its replicates; ``sims[k]`` is (P_d, P) for other class k."""
    per_class = torch.stack([s.nanmean(dim=0) for s in sims])  # (K-1, P): mean over d's images
    point = _nanmean(per_class)
    if plan.within is not None:  # one other class: redraw its images, and this class's pairs
        s = sims[0]
        ok = torch.isfinite(s)
        s0 = torch.where(ok, s, torch.zeros_like(s))
        num = torch.einsum("bj,ji,bi->b", plan.within, s0, plan.pairs)
        den = torch.einsum("bj,ji,bi->b", plan.within, ok.to(torch.float64), plan.pairs)
        return point, torch.where(
            den > 0, num / den.clamp_min(1e-300), torch.full_like(den, math.nan)
        )
    ok = torch.isfinite(per_class)
    m0 = torch.where(ok, per_class, torch.zeros_like(per_class))
    num = torch.einsum("bk,ki,bi->b", plan.classes, m0, plan.pairs)
    den = torch.einsum("bk,ki,bi->b", plan.classes, ok.to(torch.float64), plan.pairs)
    return point, torch.where(den > 0, num / den.clamp_min(1e-300), torch.full_like(den, math.nan))


def drift(
    model: Any,
    old: Mapping[int, torch.Tensor],
    new: Mapping[int, torch.Tensor],
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
    confidence: float = CONFIDENCE,
    device: str | torch.device = "cpu",
) -> dict[int, Drift]:
    """Drift per class (classes present in both), measured in ``model`` (the new version).

    ``old[c]`` and ``new[c]`` are ``(P, C, H, W)`` prototypes in [0, 1]; pairs are
    matched by index (the first ``min`` of the two counts).
    """
    classes = sorted(set(old) & set(new))
    if not classes:
        return {}
    layer_set = _activations.layers_of(model, device=device)
    n = {c: min(old[c].shape[0], new[c].shape[0]) for c in classes}
    batch = torch.cat([old[c][: n[c]] for c in classes] + [new[c][: n[c]] for c in classes])
    acts = _activations.capture(model, batch.float(), layer_set, device=device)
    start, at = {}, 0
    for c in classes:
        start[c] = at
        at += n[c]
    half = at

    def rows(a: torch.Tensor, c: int, which: str) -> torch.Tensor:
        base = start[c] + (half if which == "new" else 0)
        return a[base : base + n[c]].to(torch.float64)

    out = {}
    for c in classes:
        others = [d for d in classes if d != c]
        g = torch.Generator().manual_seed(derive_seed("drift", seed, c))
        plan = _Class(n[c], others, n, resamples, g)
        layers: dict[str, float | None] = {}
        reasons: dict[str, str] = {}
        kept: list[torch.Tensor] = []
        for name in layer_set.names:
            a = acts[name]
            mine_new, mine_old = rows(a, c, "new"), rows(a, c, "old")
            pair = similarity(mine_old, mine_new, "spearman")  # (P,)
            v, v_reps = _nanmean(pair), _weighted(pair, plan.pairs)
            if not math.isfinite(v):
                layers[name], reasons[name] = None, "UNDEFINED"
                continue
            if not others:
                theta, theta_reps = v, v_reps
            else:
                sims = [pairwise(rows(a, d, "new"), mine_new, "spearman") for d in others]
                o, o_reps = _other_level(sims, plan)
                ok, why, _ = separated(1.0 - o, 1.0 - o_reps)
                if not ok:
                    layers[name], reasons[name] = None, why
                    continue
                theta, theta_reps = (v - o) / (1.0 - o), (v_reps - o_reps) / (1.0 - o_reps)
            layers[name] = min(1.0, max(0.0, 1.0 - theta))
            kept.append((1.0 - theta_reps).clamp(0.0, 1.0))
        out[c] = _summary(layers, reasons, kept, confidence)
    return out


def _summary(
    layers: dict[str, float | None],
    reasons: dict[str, str],
    kept: list[torch.Tensor],
    confidence: float,
) -> Drift:
    values = [v for v in layers.values() if v is not None]
    if not values:
        return Drift(None, None, None, layers, reasons, 0, "NO_DETERMINATE_LAYER")
    point = float(torch.quantile(torch.tensor(values, dtype=torch.float64), 0.5))
    per_resample = torch.nanquantile(torch.stack(kept), 0.5, dim=0)
    interval = percentile_interval(per_resample, confidence)
    low, high = interval if interval else (None, None)
    return Drift(point, low, high, layers, reasons, len(values))
