"""Path-similarity scores: does a prototype follow the activation path of natural images?

For each layer the prototype's activation vector (spatially averaged per
channel) is compared with the mean natural activation of its class by Spearman
rank correlation, cosine similarity and L1 distance (mean absolute difference),
and with the other classes' means (averaged over those classes).

Raw numbers mean little across layers, so each is normalised as Geirhos et al.
(2023) do: ``(s - s_other) / (s_same - s_other)``, where ``s_same`` is the level
of natural images of the class against their class mean (leave-one-out: each
image against the mean of the *other* images of its class, so an image is never
compared with a mean it is part of) and ``s_other`` the level of natural images
of other classes against this class's mean. 1 means "as similar as a natural
image of the class", 0 "as similar as an image of another class". The same
formula serves L1, where lower is closer: the ratio keeps its meaning.

Where a number cannot be computed (a constant activation vector has no rank
correlation; a layer whose same and other levels coincide cannot be normalised)
it is ``None``, never a made-up value. Pure torch: no I/O.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from protolens_server.errors import InvalidArgument, ReferenceSetError

from . import _activations, _transforms
from ._seeds import derive_seed
from .types import Prototype, Target

METRICS = ("spearman", "cosine", "l1")
SCORES_VERSION = 1
_EPS = 1e-12


# ---------------------------------------------------------------------------------------------
# Row-wise similarity measures. x: (N, C); y: (N, C) or (C,). Returns (N,) float64.


def average_ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks 1..C along the last axis, ties sharing their average rank (as scipy's rankdata)."""
    x = x.to(torch.float64)
    s = x.sort(dim=-1).values.contiguous()
    less = torch.searchsorted(s, x.contiguous(), right=False)
    less_or_equal = torch.searchsorted(s, x.contiguous(), right=True)
    return (less + less_or_equal + 1).to(torch.float64) / 2


def _pearson(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x - x.mean(dim=-1, keepdim=True)
    y = y - y.mean(dim=-1, keepdim=True)
    den = x.norm(dim=-1) * y.norm(dim=-1)
    out = (x * y).sum(dim=-1) / den
    return torch.where(den > _EPS, out, torch.full_like(out, math.nan))


def spearman(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x, y = torch.broadcast_tensors(x.to(torch.float64), y.to(torch.float64))
    return _pearson(average_ranks(x), average_ranks(y))


def cosine(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x, y = torch.broadcast_tensors(x.to(torch.float64), y.to(torch.float64))
    den = x.norm(dim=-1) * y.norm(dim=-1)
    out = (x * y).sum(dim=-1) / den
    return torch.where(den > _EPS, out, torch.full_like(out, math.nan))


def l1(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x, y = torch.broadcast_tensors(x.to(torch.float64), y.to(torch.float64))
    return (x - y).abs().mean(dim=-1)


MEASURES = {"spearman": spearman, "cosine": cosine, "l1": l1}


def _nanmean(v: torch.Tensor) -> float:
    finite = v[torch.isfinite(v)]
    return float(finite.mean()) if finite.numel() else math.nan


# ---------------------------------------------------------------------------------------------
# Natural reference statistics.


LEVELS = ("same", "other", "same_sd", "other_sd")


@dataclass(frozen=True)
class ReferenceStats:
    """Per layer and class: mean natural activation and the natural same/other levels.

    ``means[layer]`` is ``(K, C)`` for the K classes in ``classes`` (sorted class
    indices). ``levels[kind][metric][layer]`` is ``(K,)`` for each kind in
    ``LEVELS``: the mean similarity of the class's own images to their class mean
    (leave-one-out), of other classes' images to it, and the standard deviations
    of those two (the width of the natural bands).
    """

    layers: tuple[str, ...]
    classes: tuple[int, ...]
    counts: tuple[int, ...]
    means: dict[str, torch.Tensor]
    levels: dict[str, dict[str, dict[str, torch.Tensor]]]
    digest: str = ""  # the reference set's content digest

    def row(self, cls: int) -> int:
        try:
            return self.classes.index(cls)
        except ValueError:
            raise ReferenceSetError(
                "reference", f"has no images of class {cls}; add natural images of that class"
            ) from None

    def level(self, kind: str, metric: str, layer: str, row: int) -> float:
        return float(self.levels[kind][metric][layer][row])

    def select(self, layers: Sequence[str]) -> ReferenceStats:
        """The same statistics restricted to ``layers`` (in that order)."""
        return dataclasses.replace(
            self,
            layers=tuple(layers),
            means={n: self.means[n] for n in layers},
            levels={
                k: {m: {n: v[n] for n in layers} for m, v in per.items()}
                for k, per in self.levels.items()
            },
        )

    def to_state(self) -> dict[str, Any]:
        """Tensors and plain values only (safe for ``torch.load(weights_only=True)``)."""
        return {
            "version": SCORES_VERSION,
            "layers": list(self.layers),
            "classes": list(self.classes),
            "counts": list(self.counts),
            "means": dict(self.means),
            "levels": self.levels,
            "digest": self.digest,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> ReferenceStats:
        return cls(
            layers=tuple(state["layers"]),
            classes=tuple(int(c) for c in state["classes"]),
            counts=tuple(int(c) for c in state["counts"]),
            means=dict(state["means"]),
            levels={k: {m: dict(v) for m, v in state["levels"][k].items()} for k in LEVELS},
            digest=str(state.get("digest", "")),
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
) -> ReferenceStats:
    """Class means and natural levels from natural images' activations (layer -> (N, C))."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    classes = sorted(int(c) for c in labels.unique())
    counts = [int((labels == c).sum()) for c in classes]
    if len(classes) < 2:
        raise ReferenceSetError(
            "reference", "needs images of at least two classes (the 'other class' level)"
        )
    few = [c for c, n in zip(classes, counts, strict=True) if n < 2]
    if few:
        raise ReferenceSetError(
            "reference", f"class {few[0]} has fewer than 2 images; add at least 2 per class"
        )
    means: dict[str, torch.Tensor] = {}
    levels: dict[str, dict[str, dict[str, torch.Tensor]]] = {
        k: {m: {} for m in METRICS} for k in LEVELS
    }
    for layer, x in activations.items():
        x = x.to(torch.float64)
        if x.shape[0] != labels.shape[0]:
            raise InvalidArgument("activations", f"layer {layer!r} has {x.shape[0]} rows")
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
        counts=tuple(counts),
        means=means,
        levels=levels,
        digest=digest,
    )


# ---------------------------------------------------------------------------------------------
# Result types: flat, JSON-able, stable (the queue stores to_dict(), the API returns it).


def _num(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


@dataclass(frozen=True)
class MetricScores:
    """One metric at one layer."""

    value: float | None  # prototype vs its class mean
    other: float | None  # prototype vs other classes' means (mean over those classes)
    normalised: float | None  # (value - natural_other) / (natural_same - natural_other)
    natural_same: float | None  # natural images of the class vs the class mean (leave-one-out)
    natural_other: float | None  # natural images of other classes vs the class mean
    natural_same_sd: float | None  # spread of natural_same over the class's images
    natural_other_sd: float | None  # spread of natural_other over other classes' images


METRIC_PARTS = tuple(f.name for f in dataclasses.fields(MetricScores))


@dataclass(frozen=True)
class LayerScores:
    name: str
    spearman: MetricScores
    cosine: MetricScores
    l1: MetricScores

    def metric(self, name: str) -> MetricScores:
        return {"spearman": self.spearman, "cosine": self.cosine, "l1": self.l1}[name]


@dataclass(frozen=True)
class Robustness:
    """Target probability under random transforms of the prototype, and its logit margin."""

    samples: int
    transforms: str  # the engine transform preset used
    probability: float  # untransformed
    probability_mean: float | None
    probability_min: float | None
    logit_margin: float  # target logit minus the best non-target logit (untransformed)
    runner_up: int  # that best non-target class


@dataclass
class PrototypeScores:
    target: tuple[int, ...]
    target_kind: str
    layers: list[LayerScores]
    path_similarity: float | None  # mean normalised Spearman over layers
    robustness: Robustness | None
    layers_available: bool = True
    reason: str = ""
    reference_digest: str = ""
    reference_classes: int = 0
    reference_images: int = 0
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    def curve(self, metric: str = "spearman") -> list[float | None]:
        """The per-layer normalised similarity for ``metric``."""
        return [layer.metric(metric).normalised for layer in self.layers]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "version": SCORES_VERSION,
            "target": list(self.target),
            "target_kind": self.target_kind,
            "layers_available": self.layers_available,
            "reason": self.reason,
            "layers": self.layer_names,
            "path_similarity": _num(self.path_similarity),
        }
        for metric in METRICS:
            for part in METRIC_PARTS:
                key = metric if part == "value" else f"{metric}_{part}"
                d[key] = [_num(getattr(layer.metric(metric), part)) for layer in self.layers]
        r = self.robustness
        d["robustness"] = (
            None
            if r is None
            else {
                "samples": r.samples,
                "transforms": r.transforms,
                "probability": _num(r.probability),
                "probability_mean": _num(r.probability_mean),
                "probability_min": _num(r.probability_min),
                "logit_margin": _num(r.logit_margin),
                "runner_up": r.runner_up,
            }
        )
        d["reference"] = {
            "digest": self.reference_digest,
            "classes": self.reference_classes,
            "images": self.reference_images,
        }
        if self.extras:
            d["extras"] = dict(self.extras)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PrototypeScores:
        names = list(d["layers"])

        def metric(m: str, i: int) -> MetricScores:
            def get(part: str) -> float | None:
                return d[m if part == "value" else f"{m}_{part}"][i]

            return MetricScores(*(get(p) for p in METRIC_PARTS))

        layers = [
            LayerScores(name, metric("spearman", i), metric("cosine", i), metric("l1", i))
            for i, name in enumerate(names)
        ]
        r = d.get("robustness")
        robustness = (
            None
            if r is None
            else Robustness(
                samples=int(r["samples"]),
                transforms=str(r["transforms"]),
                probability=r["probability"],
                probability_mean=r["probability_mean"],
                probability_min=r["probability_min"],
                logit_margin=r["logit_margin"],
                runner_up=int(r["runner_up"]),
            )
        )
        ref = d.get("reference") or {}
        return cls(
            target=tuple(int(c) for c in d["target"]),
            target_kind=str(d["target_kind"]),
            layers=layers,
            path_similarity=d.get("path_similarity"),
            robustness=robustness,
            layers_available=bool(d.get("layers_available", True)),
            reason=str(d.get("reason", "")),
            reference_digest=str(ref.get("digest", "")),
            reference_classes=int(ref.get("classes", 0)),
            reference_images=int(ref.get("images", 0)),
            extras=dict(d.get("extras") or {}),
        )


# ---------------------------------------------------------------------------------------------
# Scoring.


def _normalise(value: float, same: float, other: float) -> float | None:
    span = same - other
    if not all(math.isfinite(v) for v in (value, same, other)) or abs(span) < _EPS:
        return None
    return (value - other) / span


def _mean_or_none(values: Sequence[float | None]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


def layer_scores(
    activations: Mapping[str, torch.Tensor], classes: Sequence[int], stats: ReferenceStats
) -> list[LayerScores]:
    """Scores of ONE image's activations (layer -> (C,) or (1, C)) for its class(es).

    With several classes (a hybrid target) every number is averaged over them;
    "other" classes are the reference classes outside ``classes``.
    """
    rows = [stats.row(c) for c in classes]
    others = [i for i, c in enumerate(stats.classes) if c not in classes]
    out = []
    for layer in stats.layers:
        a = activations[layer].reshape(-1).to(torch.float64)
        means = stats.means[layer].to(torch.float64)
        per_metric = {}
        for metric, fn in MEASURES.items():
            sims = fn(a[None, :].expand_as(means), means)  # (K,)

            def level(kind: str, metric: str = metric, layer: str = layer) -> float | None:
                return _mean_or_none([stats.level(kind, metric, layer, r) for r in rows])

            per_metric[metric] = MetricScores(
                value=_mean_or_none([float(sims[r]) for r in rows]),
                other=_num(_nanmean(sims[others])) if others else None,
                normalised=_mean_or_none(
                    [
                        _normalise(
                            float(sims[r]),
                            stats.level("same", metric, layer, r),
                            stats.level("other", metric, layer, r),
                        )
                        for r in rows
                    ]
                ),
                natural_same=level("same"),
                natural_other=level("other"),
                natural_same_sd=level("same_sd"),
                natural_other_sd=level("other_sd"),
            )
        out.append(LayerScores(layer, **per_metric))
    return out


def path_similarity(layers: Sequence[LayerScores], metric: str = "spearman") -> float | None:
    """The summary number: mean normalised similarity over layers (None where none is defined)."""
    return _mean_or_none([layer.metric(metric).normalised for layer in layers])


def _target_probability(logits: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    return torch.softmax(logits.float(), dim=-1)[:, list(classes)].mean(dim=-1)


def robustness(
    model: Any,
    images: torch.Tensor,
    targets: Sequence[Target],
    logits: torch.Tensor,
    *,
    samples: int = 16,
    transforms: str = "medium",
    seeds: Sequence[int] | None = None,
    device: str | torch.device = "cpu",
    max_batch: int = 64,
) -> list[Robustness]:
    """Target probability of each image under ``samples`` random draws of a transform preset.

    ``logits`` are the untransformed images' logits (for the probability and margin).
    Image ``i``'s draws come from its own generator seeded by ``seeds[i]`` (default:
    its position), so its score does not depend on what else is in the list.
    """
    if transforms not in _transforms.PRESETS:
        raise InvalidArgument("robustness_transforms", f"unknown preset {transforms!r}")
    transform = _transforms.preset(transforms)
    dev = torch.device(device)
    results = []
    for i, (image, target) in enumerate(zip(images, targets, strict=True)):
        classes = list(target.classes)
        row = logits[i].float()
        masked = row.clone()
        masked[classes] = -math.inf
        runner_up = int(masked.argmax())
        margin = float(row[classes].mean() - row[runner_up])
        probability = float(_target_probability(row[None], classes)[0])
        mean = low = None
        if samples > 0:
            g = torch.Generator().manual_seed(seeds[i] if seeds is not None else i)
            draws = torch.rand((samples, transform.n_draws), generator=g)
            # the engine's transforms act on normalised images (their fill = the mean colour)
            normalised = model.input_spec.normalise(image[None].to(dev))
            batch = transform(normalised.expand(samples, *image.shape), draws.to(dev))
            probs = []
            with torch.no_grad():
                for start in range(0, samples, max_batch):
                    x = batch[start : start + max_batch]
                    out = _activations.run_model(model, x, device=dev)
                    probs.append(_target_probability(out, classes).cpu())
            p = torch.cat(probs)
            mean, low = float(p.mean()), float(p.min())
        results.append(Robustness(samples, transforms, probability, mean, low, margin, runner_up))
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
    """Path-similarity and robustness scores for ``prototypes`` against ``stats``.

    ``stats`` fixes the layer set (``stats.layers``, computed for this model). For
    a model whose inner layers cannot be reached, only ``"logits"`` is scored and
    the result says so. Does not modify the prototypes.
    """
    if not prototypes:
        return []
    layer_set = _activations.resolve_layers(
        model, [n for n in stats.layers if n != _activations.LOGITS] or None, device=device
    )
    wanted = (_activations.LOGITS,) if not layer_set.available else stats.layers
    if _activations.LOGITS not in stats.layers:
        raise InvalidArgument("stats", "reference statistics must include the logits layer")
    capture_set = _activations.LayerSet(wanted, layer_set.available, layer_set.reason)
    images = torch.stack([p.image.detach().float().cpu() for p in prototypes])
    acts = _activations.capture(model, images, capture_set, device=device)
    sub = stats.select(wanted)
    targets = [p.target for p in prototypes]
    robust = robustness(
        model,
        images,
        targets,
        acts[_activations.LOGITS],
        samples=robustness_samples,
        transforms=robustness_transforms,
        seeds=[
            derive_seed("robustness", seed, p.seed, p.target.label(), p.index) for p in prototypes
        ],
        device=device,
    )
    results = []
    for i, p in enumerate(prototypes):
        layers = layer_scores({n: acts[n][i] for n in wanted}, p.target.classes, sub)
        results.append(
            PrototypeScores(
                target=tuple(p.target.classes),
                target_kind=p.target.kind,
                layers=layers,
                path_similarity=path_similarity(layers),
                robustness=robust[i],
                layers_available=capture_set.available,
                reason=capture_set.reason,
                reference_digest=stats.digest,
                reference_classes=len(stats.classes),
                reference_images=sum(stats.counts),
            )
        )
    return results
