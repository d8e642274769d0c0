"""Score results: flat, JSON-able, stable (the queue stores ``to_dict()``, the API returns it).

``to_dict()`` (``version``: ``SCORES_VERSION``) holds, per metric in ``spearman,
cosine, l1``, one array per part with one entry per layer (``<m>``, ``<m>_other``,
``<m>_normalised``, ``<m>_normalised_low``, ``<m>_normalised_high``,
``<m>_reason``, ``<m>_span_z``, ``<m>_natural_same``, ...), the headline
``path_similarity`` with its interval and the count of layers it rests on, the
robustness figures, how the statistics were made, and the reference set's ``caveats``
that concern the target's classes (each ``{code, message, classes, files}``; ``[]``
when none; a record without the key was scored before caveats existed). A number that
cannot be determined is ``None`` and its ``reason`` a code from ``REASONS``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from protolens_server import SCORES_VERSION

from ._caveats import Caveat
from ._measures import METRICS

REASONS = {
    "SPAN_NOT_POSITIVE": "reference set does not separate this class at this layer: its own "
    "images are no closer to the class mean than other classes' images are",
    "SPAN_UNRESOLVED": "reference set does not separate this class at this layer: the gap "
    "between its own and other classes' images is within 3 bootstrap standard errors of 0",
    "UNDEFINED": "the similarity is undefined here (a constant activation vector has no rank "
    "correlation or direction)",
    "NO_DETERMINATE_LAYER": "reference set does not separate this class at any layer",
}
SUMMARY = "median of spearman_normalised over the determinate layers"


def _num(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


@dataclass(frozen=True)
class MetricScores:
    """One metric at one layer."""

    value: float | None  # prototype vs its class mean
    other: float | None  # prototype vs other classes' means (mean over those classes)
    normalised: float | None  # (value - natural_other) / (natural_same - natural_other)
    normalised_low: float | None  # its bootstrap interval
    normalised_high: float | None
    reason: str  # why normalised is None ("" when it is a number): a key of REASONS
    span_z: float | None  # the gap natural_same - natural_other over its bootstrap SE
    natural_same: float | None  # natural images of the class vs the class mean (leave-one-out)
    natural_other: float | None  # natural images of other classes vs the class mean
    natural_same_sd: float | None  # spread of natural_same over the class's images
    natural_other_sd: float | None  # spread of natural_other over other classes' images


METRIC_PARTS = tuple(f.name for f in dataclasses.fields(MetricScores))


def metric_key(metric: str, part: str) -> str:
    return metric if part == "value" else f"{metric}_{part}"


@dataclass(frozen=True)
class LayerScores:
    name: str
    spearman: MetricScores
    cosine: MetricScores
    l1: MetricScores

    def metric(self, name: str) -> MetricScores:
        return {"spearman": self.spearman, "cosine": self.cosine, "l1": self.l1}[name]


@dataclass(frozen=True)
class Estimate:
    """A summary number with its bootstrap interval (all None, and a reason, if undetermined)."""

    value: float | None
    low: float | None = None
    high: float | None = None
    layers: int = 0  # determinate layers it rests on
    reason: str = ""


@dataclass(frozen=True)
class Robustness:
    """Target probability of the stored image, and under random transforms of it."""

    transform_samples: int  # random draws of the transform preset (the untransformed view apart)
    transforms: str  # the engine transform preset used
    probability: float  # the untransformed (stored) image
    probability_mean_over_transforms: float | None  # None when transform_samples is 0
    probability_min_over_transforms: float | None
    logit_margin: float  # target logit minus the best non-target logit (untransformed)
    runner_up: int  # that best non-target class

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for key in (
            "probability",
            "probability_mean_over_transforms",
            "probability_min_over_transforms",
            "logit_margin",
        ):
            d[key] = _num(d[key])
        return d

    @classmethod
    def from_dict(cls, r: Mapping[str, Any]) -> Robustness:
        if "transform_samples" not in r:  # version 1 names
            return cls(
                int(r["samples"]),
                str(r["transforms"]),
                r["probability"],
                r.get("probability_mean"),
                r.get("probability_min"),
                r["logit_margin"],
                int(r["runner_up"]),
            )
        return cls(**{f.name: r[f.name] for f in dataclasses.fields(cls)})


@dataclass(frozen=True)
class Statistics:
    """How the intervals and the significance test were made."""

    resamples: int
    confidence: float
    seed: int
    min_span_z: float


@dataclass
class PrototypeScores:
    target: tuple[int, ...]
    target_kind: str
    layers: list[LayerScores]
    summary: Estimate  # path similarity: SUMMARY, with its interval
    robustness: Robustness | None
    statistics: Statistics | None = None
    layers_available: bool = True
    reason: str = ""
    reference_digest: str = ""
    reference_classes: int = 0
    reference_images: int = 0
    # what makes the reference set weak for this target's classes (engine/_caveats.py)
    caveats: list[Caveat] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def path_similarity(self) -> float | None:
        return self.summary.value

    @property
    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    def summary_text(self) -> str:
        """``0.42 [0.31, 0.55] (12/18 layers)``, or ``n/a (NO_DETERMINATE_LAYER, 0/18 layers)``."""
        s, total = self.summary, len(self.layers)
        if s.value is None:
            return f"n/a ({s.reason or 'not scored'}, 0/{total} layers)"
        interval = "" if s.low is None or s.high is None else f" [{s.low:.2f}, {s.high:.2f}]"
        return f"{s.value:.2f}{interval} ({s.layers}/{total} layers)"

    def curve(self, metric: str = "spearman") -> list[float | None]:
        """The per-layer normalised similarity for ``metric``."""
        return [layer.metric(metric).normalised for layer in self.layers]

    def band(self, metric: str = "spearman") -> tuple[list[float | None], list[float | None]]:
        """Lower and upper ends of the per-layer intervals of ``metric``."""
        return (
            [layer.metric(metric).normalised_low for layer in self.layers],
            [layer.metric(metric).normalised_high for layer in self.layers],
        )

    def to_dict(self) -> dict[str, Any]:
        s = self.summary
        d: dict[str, Any] = {
            "version": SCORES_VERSION,
            "target": list(self.target),
            "target_kind": self.target_kind,
            "layers_available": self.layers_available,
            "reason": self.reason,
            "layers": self.layer_names,
            "path_similarity": _num(s.value),
            "path_similarity_low": _num(s.low),
            "path_similarity_high": _num(s.high),
            "path_similarity_layers": s.layers,
            "path_similarity_reason": s.reason,
            "path_similarity_summary": SUMMARY,
        }
        used = {s.reason} if s.reason else set()
        for metric in METRICS:
            for part in METRIC_PARTS:
                values = [getattr(layer.metric(metric), part) for layer in self.layers]
                if part == "reason":
                    used.update(v for v in values if v)
                    d[metric_key(metric, part)] = list(values)
                else:
                    d[metric_key(metric, part)] = [_num(v) for v in values]
        d["reasons"] = {code: REASONS[code] for code in sorted(used) if code in REASONS}
        d["robustness"] = None if self.robustness is None else self.robustness.to_dict()
        d["statistics"] = None if self.statistics is None else dataclasses.asdict(self.statistics)
        d["reference"] = {
            "digest": self.reference_digest,
            "classes": self.reference_classes,
            "images": self.reference_images,
        }
        d["caveats"] = [c.to_dict() for c in self.caveats]
        if self.extras:
            d["extras"] = dict(self.extras)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PrototypeScores:
        """Read ``to_dict()`` output (version 1 records too: their missing parts are None)."""
        names = list(d["layers"])

        def metric(m: str, i: int) -> MetricScores:
            def get(part: str) -> Any:
                values = d.get(metric_key(m, part))
                if values is None:
                    return "" if part == "reason" else None
                return values[i]

            return MetricScores(*(get(p) for p in METRIC_PARTS))

        layers = [
            LayerScores(name, metric("spearman", i), metric("cosine", i), metric("l1", i))
            for i, name in enumerate(names)
        ]
        r = d.get("robustness")
        stats = d.get("statistics")
        ref = d.get("reference") or {}
        summary = Estimate(
            d.get("path_similarity"),
            d.get("path_similarity_low"),
            d.get("path_similarity_high"),
            int(d.get("path_similarity_layers") or 0),
            str(d.get("path_similarity_reason") or ""),
        )
        return cls(
            target=tuple(int(c) for c in d["target"]),
            target_kind=str(d["target_kind"]),
            layers=layers,
            summary=summary,
            robustness=None if r is None else Robustness.from_dict(r),
            statistics=None if not stats else Statistics(**stats),
            layers_available=bool(d.get("layers_available", True)),
            reason=str(d.get("reason", "")),
            reference_digest=str(ref.get("digest", "")),
            reference_classes=int(ref.get("classes", 0)),
            reference_images=int(ref.get("images", 0)),
            caveats=[Caveat.from_dict(c) for c in d.get("caveats") or ()],
            extras=dict(d.get("extras") or {}),
        )
