"""An independent reference implementation of path-similarity scores: numpy only.

Written from docs/scores.md, not from the engine's code, and imports nothing of
protolens: the test compares the product with it on random activations. The only
thing it takes from the product is the bootstrap's resample indices (they come
from torch's generator), so that both compute the same replicates.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-12
MIN_Z = 3.0
CONFIDENCE = 0.95


def ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks 1..C along the last axis (ties share the mean of their positions)."""
    x = np.asarray(x, dtype=np.float64)
    flat = x.reshape(-1, x.shape[-1])
    out = np.empty_like(flat)
    for r, row in enumerate(flat):
        order = np.argsort(row, kind="mergesort")
        sorted_row = row[order]
        rank = np.empty(len(row))
        i = 0
        while i < len(row):
            j = i
            while j + 1 < len(row) and sorted_row[j + 1] == sorted_row[i]:
                j += 1
            rank[order[i : j + 1]] = (i + j) / 2 + 1
            i = j + 1
        out[r] = rank
    return out.reshape(x.shape)


def _pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=-1, keepdims=True)
    y = y - y.mean(axis=-1, keepdims=True)
    den = np.linalg.norm(x, axis=-1) * np.linalg.norm(y, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > EPS, (x * y).sum(axis=-1) / den, np.nan)


def measure(metric: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x, y = np.broadcast_arrays(np.asarray(x, np.float64), np.asarray(y, np.float64))
    if metric == "spearman":
        return _pearson(ranks(x), ranks(y))
    if metric == "cosine":
        den = np.linalg.norm(x, axis=-1) * np.linalg.norm(y, axis=-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > EPS, (x * y).sum(axis=-1) / den, np.nan)
    return np.abs(x - y).mean(axis=-1)


def _finite_mean(v: np.ndarray) -> float:
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else np.nan


def _weighted_nanmean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    ok = np.isfinite(values) & (weights > 0)
    w = np.where(ok, weights, 0.0)
    mass = w.sum(axis=1)
    total = np.where(ok, values * w, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(mass > 0, total / np.where(mass > 0, mass, 1), np.nan)


def _enough(rep: np.ndarray) -> bool:
    return np.isfinite(rep).sum() >= max(2, 0.5 * rep.size)


def _interval(rep: np.ndarray) -> tuple[float, float] | None:
    if not _enough(rep):
        return None
    tail = (1 - CONFIDENCE) / 2
    lo, hi = np.quantile(rep[np.isfinite(rep)], [tail, 1 - tail])
    return float(lo), float(hi)


class Reference:
    """One layer's reference statistics for class ``c`` and one metric, with replicates."""

    def __init__(
        self, x: np.ndarray, labels: np.ndarray, c: int, metric: str, resamples: np.ndarray
    ) -> None:
        x = np.asarray(x, dtype=np.float64)
        mine = labels == c
        xs, xo = x[mine], x[~mine]
        n = len(xs)
        self.metric = metric
        self.mean32 = xs.mean(axis=0).astype(np.float32).astype(np.float64)
        loo = (xs.sum(axis=0)[None] - xs) / (n - 1)
        self.same = _finite_mean(measure(metric, xs, loo))
        self.other = _finite_mean(measure(metric, xo, xs.mean(axis=0)))
        # the bootstrap: each row of ``resamples`` redraws every class within itself
        counts = np.stack([np.bincount(r, minlength=len(x)) for r in resamples]).astype(float)
        ws, wo = counts[:, mine], counts[:, ~mine]
        sums = ws @ xs
        self.means = sums / n
        same_reps = []
        for b in range(len(resamples)):
            rest = n - ws[b]
            loo_b = (sums[b][None] - ws[b][:, None] * xs) / np.maximum(rest, 1)[:, None]
            sims = np.where(rest > 0, measure(metric, xs, loo_b), np.nan)
            same_reps.append(_weighted_nanmean(sims[None], ws[b][None])[0])
        self.same_reps = np.array(same_reps)
        other_sims = np.stack([measure(metric, xo, m[None]) for m in self.means])  # (B, No)
        self.other_reps = _weighted_nanmean(other_sims, wo)
        sign = 1.0 if metric != "l1" else -1.0
        gap = sign * (self.same - self.other)
        if abs(gap) <= 1e-9 * max(abs(self.same), abs(self.other)):
            gap = 0.0  # rounding, not separation
        gap_reps = sign * (self.same_reps - self.other_reps)
        se = float(np.std(gap_reps[np.isfinite(gap_reps)], ddof=1)) if _enough(gap_reps) else np.nan
        self.z = gap / se if se != 0 else np.inf if gap > 0 else -np.inf if gap < 0 else np.nan
        if not np.isfinite(gap):
            self.reason = "UNDEFINED"
        elif gap <= 0:
            self.reason = "SPAN_NOT_POSITIVE"
        elif not np.isfinite(se) or self.z < MIN_Z:
            self.reason = "SPAN_UNRESOLVED"
        else:
            self.reason = ""

    def score(self, a: np.ndarray) -> dict:
        """The normalised score of vector ``a``, its interval and replicates (or the reason)."""
        value = float(measure(self.metric, a, self.mean32))
        if not np.isfinite(value):
            return {"value": None, "normalised": None, "reason": "UNDEFINED", "reps": None}
        if self.reason:
            return {"value": value, "normalised": None, "reason": self.reason, "reps": None}
        normalised = (value - self.other) / (self.same - self.other)
        mine = measure(self.metric, a[None], self.means)
        reps = (mine - self.other_reps) / (self.same_reps - self.other_reps)
        return {
            "value": value,
            "normalised": normalised,
            "interval": _interval(reps),
            "reason": "",
            "reps": reps,
        }


def summary(per_layer: list[dict]) -> dict:
    """Median of the determinate layers' normalised Spearman, its interval, the layer count."""
    kept = [d for d in per_layer if d["normalised"] is not None]
    if not kept:
        return {"value": None, "interval": None, "layers": 0}
    value = float(np.median([d["normalised"] for d in kept]))
    with np.errstate(all="ignore"):
        reps = np.nanmedian(np.stack([d["reps"] for d in kept]), axis=0)
    return {"value": value, "interval": _interval(reps), "layers": len(kept)}
