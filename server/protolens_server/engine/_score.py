"""Path-similarity scores: does an image follow the activation path of natural images?

For each layer the image's activation vector (spatially averaged per channel)
is compared with the mean natural activation of its class by Spearman rank
correlation, cosine similarity and L1 distance, and with the other classes'
means. Each is normalised as Geirhos et al. (2023) do:
``(s - s_other) / (s_same - s_other)``, 1 = as similar as a natural image of the
class, 0 = as similar as an image of another class, but **only where the
reference set separates the class at that layer**: the gap ``s_same - s_other``
(oriented so that positive means closer, which for L1 means lower) must be
positive and at least ``MIN_SPAN_Z`` bootstrap standard errors wide. Elsewhere
the normalised value is ``None`` with a reason, never a ratio of two nearly
equal numbers.

Each normalised value carries a percentile interval from the reference
statistics' stratified bootstrap (the class mean and both natural levels
recomputed in every resample). The summary, ``path_similarity``, is the median
of the determinate layers' normalised Spearman similarity, with its interval
(the median in every resample) and the number of layers it rests on: one wild
layer cannot dominate it. Pure torch: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from protolens_server.errors import InvalidArgument

from . import _activations
from ._bootstrap import MIN_SPAN_Z, median, percentile_interval
from ._measures import MEASURES, METRICS
from ._refstats import LayerReplicates, ReferenceStats
from ._robustness import robustness
from ._score_types import Estimate, LayerScores, MetricScores, PrototypeScores, Statistics
from ._seeds import derive_seed
from .types import Prototype, Target


def _mean_or_none(values: Sequence[float | None]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


def _num(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def _metric(
    a: torch.Tensor,
    classes: Sequence[int],
    stats: ReferenceStats,
    layer: str,
    metric: str,
    bootstraps: dict[tuple[int, str], LayerReplicates],
) -> tuple[MetricScores, torch.Tensor | None]:
    """One metric at one layer for one image's vector ``a`` (C,), and its replicates (B,).

    ``bootstraps`` keeps the classes' bootstraps for the images of one call.
    """
    rows = [stats.row(c) for c in classes]
    others = [i for i, c in enumerate(stats.classes) if c not in classes]
    means = stats.means[layer].to(torch.float64)
    sims = MEASURES[metric](a[None, :].expand_as(means), means)  # (K,)
    normalised: list[float] = []
    replicates: list[torch.Tensor] = []
    reasons: list[str] = []
    z_values: list[float] = []
    for c, r in zip(classes, rows, strict=True):
        if (c, layer) not in bootstraps:
            bootstraps[(c, layer)] = stats.class_replicates(c, layer)
        rep = bootstraps[(c, layer)]
        m = rep.metrics[metric]
        z_values.append(m.span_z)
        value = float(sims[r])
        if not math.isfinite(value):
            reasons.append("UNDEFINED")
            continue
        if not m.separated:
            reasons.append(m.reason)
            continue
        same, other = (stats.level(k, metric, layer, r) for k in ("same", "other"))
        normalised.append((value - other) / (same - other))
        mine = rep.similarity(a, metric)  # (B,): against the class mean of each resample
        replicates.append((mine - m.other) / (m.same - m.other))

    def level(kind: str) -> float | None:
        return _mean_or_none([stats.level(kind, metric, layer, r) for r in rows])

    determinate = not reasons
    theta = sum(normalised) / len(normalised) if determinate else None
    reps = torch.stack(replicates).mean(dim=0) if determinate else None
    interval = percentile_interval(reps, stats.confidence) if reps is not None else None
    finite_z = [z for z in z_values if not math.isnan(z)]
    other_values = sims[others]
    other_values = other_values[torch.isfinite(other_values)]
    scores = MetricScores(
        value=_mean_or_none([float(sims[r]) for r in rows]),
        other=float(other_values.mean()) if other_values.numel() else None,
        normalised=theta,
        normalised_low=interval[0] if interval else None,
        normalised_high=interval[1] if interval else None,
        reason="" if determinate else reasons[0],
        span_z=_num(min(finite_z)) if finite_z else None,
        natural_same=level("same"),
        natural_other=level("other"),
        natural_same_sd=level("same_sd"),
        natural_other_sd=level("other_sd"),
    )
    return scores, reps


def _summary(
    layers: Sequence[LayerScores], replicates: Sequence[torch.Tensor | None], confidence: float
) -> Estimate:
    """The median normalised Spearman similarity over the determinate layers, with its interval."""
    kept = [
        (layer.spearman.normalised, reps)
        for layer, reps in zip(layers, replicates, strict=True)
        if layer.spearman.normalised is not None and reps is not None
    ]
    if not kept:
        return Estimate(None, reason="NO_DETERMINATE_LAYER")
    value = float(median(torch.tensor([v for v, _ in kept], dtype=torch.float64)))
    per_resample = torch.nanquantile(torch.stack([r for _, r in kept]), 0.5, dim=0)
    interval = percentile_interval(per_resample, confidence)
    low, high = interval if interval else (None, None)
    return Estimate(value, low, high, layers=len(kept))


def _classes_of(target: Target | Sequence[int] | int) -> tuple[tuple[int, ...], str]:
    t = Target.of(target)
    return tuple(t.classes), t.kind


def score_activations(
    activations: Mapping[str, torch.Tensor],
    targets: Sequence[Target | Sequence[int] | int],
    stats: ReferenceStats,
) -> list[PrototypeScores]:
    """Path-similarity scores of images from their activations (layer -> (B, C)), no model.

    ``targets[i]`` is image i's class (or classes: a hybrid is scored against each
    and the numbers averaged; "other" classes are then the reference classes
    outside it). Layers are ``stats.layers`` that ``activations`` has, in that order.
    """
    layer_names = [n for n in stats.layers if n in activations]
    if not layer_names:
        raise InvalidArgument("activations", "share no layer with the reference statistics")
    statistics = Statistics(int(stats.resamples.shape[0]), stats.confidence, stats.seed, MIN_SPAN_Z)
    results = []
    bootstraps: dict[tuple[int, str], LayerReplicates] = {}
    for i, target in enumerate(targets):
        classes, kind = _classes_of(target)
        layers, replicates = [], []
        for name in layer_names:
            a = activations[name][i].reshape(-1).to(torch.float64)
            per_metric = {}
            for metric in METRICS:
                per_metric[metric], reps = _metric(a, classes, stats, name, metric, bootstraps)
                if metric == "spearman":
                    replicates.append(reps)
            layers.append(LayerScores(name, **per_metric))
        results.append(
            PrototypeScores(
                target=classes,
                target_kind=kind,
                layers=layers,
                summary=_summary(layers, replicates, stats.confidence),
                robustness=None,
                statistics=statistics,
                reference_digest=stats.digest,
                reference_classes=len(stats.classes),
                reference_images=stats.images,
                caveats=[c for c in stats.caveats if c.concerns(classes)],
            )
        )
    return results


def score(
    model: Any,
    prototypes: Sequence[Prototype],
    stats: ReferenceStats,
    *,
    device: str | torch.device = "cpu",
    robustness_samples: int = 16,
    robustness_transforms: str = "medium",
    seed: int = 0,
) -> list[PrototypeScores]:
    """Path-similarity and robustness scores for ``prototypes`` (their ``image``) against ``stats``.

    ``stats`` fixes the layer set (``stats.layers``, computed for this model). For
    a model whose inner layers cannot be reached, only ``"logits"`` is scored and
    the result says so. Does not modify the prototypes.
    """
    if not prototypes:
        return []
    if _activations.LOGITS not in stats.layers:
        raise InvalidArgument("stats", "reference statistics must include the logits layer")
    layer_set = _activations.layers_of(
        model, [n for n in stats.layers if n != _activations.LOGITS] or None, device=device
    )
    wanted = stats.layers if layer_set.available else (_activations.LOGITS,)
    capture_set = _activations.LayerSet(wanted, layer_set.available, layer_set.reason)
    images = torch.stack([p.image.detach().float().cpu() for p in prototypes])
    acts = _activations.capture(model, images, capture_set, device=device)
    targets = [p.target for p in prototypes]
    results = score_activations(acts, targets, stats)
    robust = robustness(
        model,
        images,
        [t.classes for t in targets],
        acts[_activations.LOGITS],
        samples=robustness_samples,
        transforms=robustness_transforms,
        seeds=[
            derive_seed("robustness", seed, p.seed, p.target.label(), p.index) for p in prototypes
        ],
        device=device,
    )
    for result, r in zip(results, robust, strict=True):
        result.robustness = r
        result.layers_available = capture_set.available
        result.reason = capture_set.reason
    return results
