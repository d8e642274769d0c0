"""Reference statistics: what natural images of each class look like to the model, layer by layer.

Built once per (model, layer set, reference set) from the reference images'
spatially averaged activations, then reused for every prototype:

- per class, the mean activation vector (what a prototype is compared with);
- per class and metric, the *natural levels*: ``same``, each image of the class
  against the mean of the class's *other* images (leave-one-out, so an image is
  never compared with a mean it is part of), and ``other``, the other classes'
  images against the class mean; with their spreads ``same_sd``, ``other_sd``;
- the activations themselves and a seeded, stratified bootstrap (``resamples``,
  row b redrawing every class's images from that class), from which each
  class's replicate means and levels are computed on first use and kept
  (``class_replicates``): the intervals and the significance test come from them.

A reference set needs at least ``MIN_CLASSES`` classes (another class sets the
"different class" level) and ``MIN_IMAGES`` images per class (leave-one-out
and the bootstrap need several); fewer is a ``ReferenceSetError``, never a score.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from protolens_server import SCORES_VERSION
from protolens_server.errors import InvalidArgument, ReferenceSetError

from ._bootstrap import CONFIDENCE, RESAMPLES, counts, separated, stratified_resamples
from ._caveats import Caveat
from ._measures import CLOSER_IS_HIGHER, MEASURES, METRICS, average_ranks, pairwise, pearson

LEVELS = ("same", "other", "same_sd", "other_sd")
MIN_CLASSES = 2
MIN_IMAGES = 3
RECOMMENDED_CLASSES = 5
RECOMMENDED_IMAGES = 20
_CHUNK_ELEMENTS = 1 << 21  # bounds the leave-one-out tensor of one bootstrap chunk


@dataclass(frozen=True)
class MetricReplicates:
    """One class, one layer, one metric: the bootstrap replicates of its natural levels."""

    same: torch.Tensor  # (B,) float64, NaN where a resample leaves no leave-one-out pair
    other: torch.Tensor  # (B,)
    separated: bool  # the class's gap at this layer is positive and resolved
    reason: str  # why not ("" when separated)
    span_z: float  # gap / its bootstrap standard error


@dataclass(frozen=True)
class LayerReplicates:
    """One class at one layer: its mean in every resample, and each metric's replicates."""

    means: torch.Tensor  # (B, C) float64: the class mean in each resample
    metrics: dict[str, MetricReplicates]
    _units: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict, repr=False)

    def similarity(self, a: torch.Tensor, metric: str) -> torch.Tensor:
        """``metric`` between vector ``a`` (C,) and the class mean of every resample: (B,)."""
        if metric == "l1":
            return (self.means - a.to(torch.float64)).abs().mean(dim=-1)
        if metric not in self._units:  # the means' (centred) ranks or directions, once
            self._units[metric] = _unit_rows(self.means, metric)
        unit, ok = self._units[metric]
        mine, mine_ok = _unit_rows(a[None], metric)
        out = unit @ mine[0]
        return torch.where(ok & mine_ok[0], out, torch.full_like(out, math.nan))


@dataclass(frozen=True, eq=False)
class ReferenceStats:
    """Per layer and class: mean natural activation, natural levels, and their bootstrap.

    ``means[layer]`` is ``(K, C)`` for the K classes in ``classes`` (sorted class
    indices); ``levels[kind][metric][layer]`` is ``(K,)`` for each kind in
    ``LEVELS``; ``activations[layer]`` is ``(N, C)`` with ``labels`` ``(N,)``;
    ``resamples`` is ``(B, N)`` row indices (a stratified bootstrap, seeded by ``seed``).
    """

    layers: tuple[str, ...]
    classes: tuple[int, ...]
    counts: tuple[int, ...]
    means: dict[str, torch.Tensor]
    levels: dict[str, dict[str, dict[str, torch.Tensor]]]
    activations: dict[str, torch.Tensor]
    labels: torch.Tensor
    resamples: torch.Tensor
    seed: int = 0
    confidence: float = CONFIDENCE
    digest: str = ""  # the reference set's content digest
    # what makes the set weak for some classes (engine/_caveats.py), found from its images
    caveats: tuple[Caveat, ...] = ()
    # (class, layer) -> metric -> (2, B): the same/other level replicates, computed on first
    # use and saved with the statistics (to_state). The resampled means are not kept (a
    # matrix product recomputes them; kept, they would weigh 200 x channels per class).
    replicated: dict[tuple[int, str], dict[str, torch.Tensor]] = field(
        default_factory=dict, compare=False, repr=False
    )
    _lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)

    def row(self, cls: int) -> int:
        try:
            return self.classes.index(cls)
        except ValueError:
            raise ReferenceSetError(
                "reference", f"has no images of class {cls}; add natural images of that class"
            ) from None

    def level(self, kind: str, metric: str, layer: str, row: int) -> float:
        return float(self.levels[kind][metric][layer][row])

    @property
    def images(self) -> int:
        return int(self.labels.numel())

    def class_replicates(self, cls: int, layer: str) -> LayerReplicates:
        """The bootstrap of class ``cls`` at ``layer``: its levels computed on first use and
        kept (``replicated``), its resampled means recomputed on every call."""
        key = (int(cls), layer)
        with self._lock:
            levels = self.replicated.get(key)
        out = _class_replicates(self, int(cls), layer, levels)
        if levels is None:
            with self._lock:
                self.replicated[key] = {
                    m: torch.stack([r.same, r.other]) for m, r in out.metrics.items()
                }
        return out

    def to_state(self) -> dict[str, Any]:
        """Tensors and plain values only (safe for ``torch.load(weights_only=True)``)."""
        with self._lock:
            replicated = sorted(self.replicated.items())
        return {
            "version": SCORES_VERSION,
            "layers": list(self.layers),
            "classes": list(self.classes),
            "counts": list(self.counts),
            "means": dict(self.means),
            "levels": self.levels,
            "activations": dict(self.activations),
            "labels": self.labels,
            "resamples": self.resamples,
            "seed": self.seed,
            "confidence": self.confidence,
            "digest": self.digest,
            "caveats": [c.to_dict() for c in self.caveats],
            "replicated": [
                [cls, layer, dict(per_metric)] for (cls, layer), per_metric in replicated
            ],
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> ReferenceStats:
        return cls(
            layers=tuple(state["layers"]),
            classes=tuple(int(c) for c in state["classes"]),
            counts=tuple(int(c) for c in state["counts"]),
            means=dict(state["means"]),
            levels={k: {m: dict(v) for m, v in state["levels"][k].items()} for k in LEVELS},
            activations=dict(state["activations"]),
            labels=state["labels"],
            resamples=state["resamples"],
            seed=int(state["seed"]),
            confidence=float(state["confidence"]),
            digest=str(state.get("digest", "")),
            caveats=tuple(Caveat.from_dict(c) for c in state.get("caveats", ())),
            replicated={
                (int(cls), str(layer)): dict(per_metric)
                for cls, layer, per_metric in state.get("replicated", [])
            },
        )


SIZE_ADVICE = (
    f"at least {MIN_CLASSES} classes with {MIN_IMAGES} images each are needed; "
    f"{RECOMMENDED_CLASSES}+ classes with {RECOMMENDED_IMAGES}+ images each are recommended"
)


def check_reference_counts(
    class_counts: Mapping[int, int], where: str = "the reference set"
) -> None:
    """ReferenceSetError unless there are MIN_CLASSES classes with MIN_IMAGES images each."""
    if len(class_counts) < MIN_CLASSES:
        raise ReferenceSetError(
            "reference",
            f"{where} has images of {len(class_counts)} class(es); add another class (natural "
            f"images of other classes set the 'different class' level): {SIZE_ADVICE}",
        )
    for c, n in sorted(class_counts.items()):
        if n < MIN_IMAGES:
            raise ReferenceSetError(
                "reference",
                f"{where}: class {c} has only {n} image(s); add more: {SIZE_ADVICE}",
                missing_class=str(c),
            )


def _mean_sd(v: torch.Tensor) -> tuple[float, float]:
    finite = v[torch.isfinite(v)]
    if not finite.numel():
        return math.nan, math.nan
    sd = float(finite.std(unbiased=False)) if finite.numel() > 1 else 0.0
    return float(finite.mean()), sd


def reference_stats(
    activations: Mapping[str, torch.Tensor],
    labels: torch.Tensor | Sequence[int],
    *,
    digest: str = "",
    resamples: int = RESAMPLES,
    seed: int = 0,
    confidence: float = CONFIDENCE,
    caveats: Sequence[Caveat] = (),
) -> ReferenceStats:
    """Class means, natural levels and a stratified bootstrap from natural images' activations.

    ``activations``: layer -> ``(N, C)`` (``capture``'s output); ``labels``: ``(N,)``
    class indices. ``resamples`` bootstrap draws (seeded by ``seed``) back the
    intervals at ``confidence``. ``caveats``: the set's, from its images
    (``reference_caveats``), kept with the statistics for every score they concern.
    """
    labels = torch.as_tensor(labels, dtype=torch.long)
    classes = sorted(int(c) for c in labels.unique())
    class_counts = [int((labels == c).sum()) for c in classes]
    check_reference_counts(dict(zip(classes, class_counts, strict=True)))
    if resamples < 20:
        raise InvalidArgument("resamples", f"must be at least 20 (got {resamples})")
    if not 0.5 <= confidence < 1:
        raise InvalidArgument("confidence", f"must be in [0.5, 1) (got {confidence})")
    means: dict[str, torch.Tensor] = {}
    kept: dict[str, torch.Tensor] = {}
    levels: dict[str, dict[str, dict[str, torch.Tensor]]] = {
        k: {m: {} for m in METRICS} for k in LEVELS
    }
    for layer, x in activations.items():
        if x.ndim != 2 or x.shape[0] != labels.shape[0]:
            raise InvalidArgument(
                "activations", f"layer {layer!r} has shape {tuple(x.shape)}, not (N, C)"
            )
        kept[layer] = x.detach().to("cpu", torch.float32)
        x = x.to(torch.float64)
        class_means = []
        rows: dict[str, dict[str, list[float]]] = {k: {m: [] for m in METRICS} for k in LEVELS}
        for c in classes:
            mine = labels == c
            xs, n = x[mine], int(mine.sum())
            total = xs.sum(dim=0)
            class_mean = total / n
            leave_one_out = (total[None, :] - xs) / (n - 1)
            class_means.append(class_mean)
            for metric, fn in MEASURES.items():
                same, same_sd = _mean_sd(fn(xs, leave_one_out))
                other, other_sd = _mean_sd(fn(x[~mine], class_mean))
                for kind, value in zip(LEVELS, (same, other, same_sd, other_sd), strict=True):
                    rows[kind][metric].append(value)
        means[layer] = torch.stack(class_means).to(torch.float32)
        for kind in LEVELS:
            for metric in METRICS:
                levels[kind][metric][layer] = torch.tensor(rows[kind][metric], dtype=torch.float64)
    return ReferenceStats(
        layers=tuple(activations),
        classes=tuple(classes),
        counts=tuple(class_counts),
        means=means,
        levels=levels,
        activations=kept,
        labels=labels.clone(),
        resamples=stratified_resamples(labels, resamples, seed),
        seed=int(seed),
        confidence=float(confidence),
        digest=digest,
        caveats=tuple(caveats),
    )


def _weighted_nanmean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Row-wise mean of ``values`` (B, n) with ``weights`` (B, n), NaN values left out."""
    ok = torch.isfinite(values) & (weights > 0)
    w = torch.where(ok, weights, torch.zeros_like(weights))
    total = torch.where(ok, values * w, torch.zeros_like(values)).sum(dim=1)
    mass = w.sum(dim=1)
    return torch.where(mass > 0, total / mass.clamp_min(1e-300), torch.full_like(total, math.nan))


def _unit_rows(z: torch.Tensor, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows as unit vectors (Spearman: centred average ranks; cosine: the rows), so that a
    matrix product gives the similarity; and which rows have a direction at all."""
    z = z.to(torch.float64)
    if metric == "spearman":
        z = average_ranks(z)
        z = z - z.mean(dim=-1, keepdim=True)
    norm = z.norm(dim=-1)
    return z / norm.clamp_min(1e-300)[:, None], norm > 1e-12


def _class_replicates(
    stats: ReferenceStats,
    cls: int,
    layer: str,
    levels: Mapping[str, torch.Tensor] | None = None,
) -> LayerReplicates:
    """The class mean in every resample and, unless ``levels`` has them, both natural levels."""
    x = stats.activations[layer].to(torch.float64)
    weights = counts(stats.resamples, x.shape[0])  # (B, N)
    mine = stats.labels == cls
    xs, ws = x[mine], weights[:, mine]  # (n, C), (B, n)
    xo, wo = x[~mine], weights[:, ~mine]
    sums = ws @ xs  # (B, C)
    means = sums / xs.shape[0]
    row = stats.row(cls)
    out = {}
    for metric in METRICS:
        if levels is not None and metric in levels:
            same, other = levels[metric][0], levels[metric][1]
        else:
            same = _same_replicates(xs, ws, sums, metric)
            other = _weighted_nanmean(pairwise(means, xo, metric), wo)
        sign = 1.0 if CLOSER_IS_HIGHER[metric] else -1.0
        natural = [stats.level(k, metric, layer, row) for k in ("same", "other")]
        scale = max(abs(natural[0]), abs(natural[1])) if all(map(math.isfinite, natural)) else 1
        ok, reason, z = separated(sign * (natural[0] - natural[1]), sign * (same - other), scale)
        out[metric] = MetricReplicates(same, other, ok, reason, z)
    return LayerReplicates(means, out)


def _same_replicates(
    xs: torch.Tensor, ws: torch.Tensor, sums: torch.Tensor, metric: str
) -> torch.Tensor:
    """Each resample's same-class level: every drawn image against the mean of the resample's
    *other* images of the class (all its copies left out), weighted by its count."""
    n, c = xs.shape
    b_total = ws.shape[0]
    step = max(1, _CHUNK_ELEMENTS // max(1, n * c))
    ranked = average_ranks(xs) if metric == "spearman" else None  # the images' ranks, once
    parts = []
    for start in range(0, b_total, step):
        w = ws[start : start + step]  # (b, n)
        rest = n - w
        loo = sums[start : start + step, None, :] - w[..., None] * xs[None]
        loo = loo / rest.clamp_min(1)[..., None]
        if ranked is not None:
            sims = pearson(ranked[None].expand_as(loo), average_ranks(loo))
        else:
            sims = MEASURES[metric](xs[None].expand_as(loo), loo)  # (b, n)
        sims = torch.where(rest > 0, sims, torch.full_like(sims, math.nan))
        parts.append(_weighted_nanmean(sims, w))
    return torch.cat(parts)
