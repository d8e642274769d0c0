"""What a check found: per-class facts, policy rule outcomes, and the whole result.

Plain dataclasses with ``to_dict``: the JSON report, the RPC and the CLI all
read these.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from protolens_server.checks.confirmation import Confirmation
from protolens_server.checks.entanglement import Edge
from protolens_server.checks.prototypes import ClassPrototypes, GenerationStats


def _r(v: float | None, digits: int = 4) -> float | None:
    return None if v is None else round(float(v), digits)


def _interval(v: tuple[float, float] | None) -> list[float | None] | None:
    return None if v is None else [_r(v[0]), _r(v[1])]


@dataclass
class ClassCheck:
    class_index: int
    name: str
    new: ClassPrototypes
    baseline: ClassPrototypes | None = None
    # the baseline's index of this class (another index when the classes were paired by
    # name and the labels moved: checks/matching.py); None without a baseline class
    baseline_class_index: int | None = None
    drift: float | None = None  # in [0, 1]: median per-layer drift (comparison.py)
    drift_interval: tuple[float, float] | None = None  # its bootstrap interval
    # its robust z-score among the check's classes (policy.drift_spread): None, fewer than 3
    drift_z: float | None = None
    layer_drift: dict[str, float | None] = field(default_factory=dict)  # None: not separated
    new_by_baseline_model: float | None = None  # new prototype, target prob in the old model
    baseline_by_new_model: float | None = None  # old prototype, target prob in the new model
    baseline_top_in_new_model: int | None = None  # the class the new model gives it most
    # that class, when its own prototype changed: the low score is charged to it, not to
    # this class (policy.attribute_claims)
    baseline_claimed_by: int | None = None
    entangled: list[Edge] = field(default_factory=list)
    baseline_entangled: list[Edge] = field(default_factory=list)
    gained: list[int] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    # the new prototypes' target probability as the check reads probabilities (from the
    # decoded PNGs, a version spreading under a unit at the other's spread: comparison.py);
    # None until analysed
    confidence: float | None = None

    @property
    def target_confidence(self) -> float:
        """What ``min_confidence`` reads: ``confidence``, or before analysis the new
        prototypes' probability as generation reported it."""
        return self.new.probability if self.confidence is None else self.confidence

    @property
    def confidence_change(self) -> float | None:
        if self.baseline is None:
            return None
        return self.new.probability - self.baseline.probability

    @property
    def path_similarity_change(self) -> float | None:
        if self.baseline is None:
            return None
        a, b = self.new.path_similarity, self.baseline.path_similarity
        return None if a is None or b is None else a - b

    @property
    def path_similarity_change_interval(self) -> tuple[float, float] | None:
        """A conservative interval of the change: each side's distances to its interval ends
        added in quadrature (independent errors; shared reference images only narrow it)."""
        change = self.path_similarity_change
        if change is None or self.baseline is None:
            return None
        a, b = self.new.path_similarity_interval, self.baseline.path_similarity_interval
        va, vb = self.new.path_similarity, self.baseline.path_similarity
        if a is None or b is None or va is None or vb is None:
            return None
        down = math.hypot(va - a[0], b[1] - vb)
        up = math.hypot(a[1] - va, vb - b[0])
        return change - down, change + up

    def to_dict(self) -> dict[str, Any]:
        def side(p: ClassPrototypes | None) -> dict[str, Any] | None:
            if p is None:
                return None
            return {
                "probability": _r(p.probability),
                "probabilities": [_r(v) for v in p.probabilities],
                "path_similarity": _r(p.path_similarity),
                "path_similarity_interval": _interval(p.path_similarity_interval),
                "cache_hit": p.cache_hit,
                "job": p.job_id,
            }

        return {
            "class": self.class_index,
            "name": self.name,
            "flags": list(self.flags),
            "confidence": _r(self.target_confidence),
            "new": side(self.new),
            "baseline": side(self.baseline),
            "baseline_class": self.baseline_class_index,
            "drift": _r(self.drift),
            "drift_interval": _interval(self.drift_interval),
            "drift_z": _r(self.drift_z, 2),
            "layer_drift": {k: _r(v) for k, v in self.layer_drift.items()},
            "cross_scores": {
                "new_prototype_in_baseline_model": _r(self.new_by_baseline_model),
                "baseline_prototype_in_new_model": _r(self.baseline_by_new_model),
                "baseline_prototype_top_class_in_new_model": self.baseline_top_in_new_model,
                "baseline_prototype_claimed_by": self.baseline_claimed_by,
            },
            "confidence_change": _r(self.confidence_change),
            "path_similarity_change": _r(self.path_similarity_change),
            "path_similarity_change_interval": _interval(self.path_similarity_change_interval),
            "entanglement": {
                "new": [e.to_dict() for e in self.entangled],
                "baseline": [e.to_dict() for e in self.baseline_entangled],
                "gained": list(self.gained),
                "lost": list(self.lost),
            },
        }


@dataclass
class RuleResult:
    rule: str
    status: str  # "fail" | "pass" | "skipped"
    threshold: Any = None
    classes: list[str] = field(default_factory=list)  # the classes that broke the rule
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "status": self.status,
            "threshold": self.threshold,
            "classes": list(self.classes),
            "message": self.message,
        }


@dataclass
class ModelRef:
    ref: str
    digest: str
    source: str

    def to_dict(self) -> dict[str, str]:
        return {"ref": self.ref, "digest": self.digest, "source": self.source}


@dataclass
class CheckResult:
    model: ModelRef
    baseline: ModelRef | None
    classes: list[ClassCheck]
    rules: list[RuleResult]
    config: dict[str, Any]
    seed: int
    class_names: tuple[str, ...]
    entanglement_threshold: float
    entanglement_top_k: int
    generation: GenerationStats = field(default_factory=GenerationStats)
    reference_digest: str = ""
    # the flagged classes generated again with more prototypes (checks/confirmation.py)
    confirmation: Confirmation | None = None
    # how the model's classes were paired with the baseline's (checks/matching.py):
    # ClassMatch.to_dict, None without a baseline
    class_match: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        return all(r.status != "fail" for r in self.rules)

    @property
    def failed_rules(self) -> list[RuleResult]:
        return [r for r in self.rules if r.status == "fail"]

    @property
    def flagged(self) -> list[ClassCheck]:
        return [c for c in self.classes if c.flags]

    @property
    def caveats(self) -> list[dict[str, Any]]:
        """The reference set's caveats behind any of the check's scores, each once
        (``{code, message, classes, files}``, engine/_caveats.py): words beside the path
        similarities they concern, never a flag or a failed rule."""
        out: list[dict[str, Any]] = []
        for c in self.classes:
            for side in (c.new, c.baseline):
                for scores in side.scores if side is not None else ():
                    for caveat in (scores or {}).get("caveats") or ():
                        if caveat not in out:
                            out.append(dict(caveat))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "model": self.model.to_dict(),
            "baseline": self.baseline.to_dict() if self.baseline else None,
            "failed_rules": [r.rule for r in self.failed_rules],
            "rules": [r.to_dict() for r in self.rules],
            "flagged_classes": [c.name for c in self.flagged],
            "caveats": self.caveats,
            "classes": [c.to_dict() for c in self.classes],
            "entanglement": {
                "threshold": self.entanglement_threshold,
                "top_k": self.entanglement_top_k,
                "new": [e.to_dict() for c in self.classes for e in c.entangled],
                "baseline": [e.to_dict() for c in self.classes for e in c.baseline_entangled],
            },
            "config": self.config,
            "seed": self.seed,
            "reference_digest": self.reference_digest,
            "generation": self.generation.to_dict(),
            "confirmation": (
                self.confirmation.to_dict(self.classes) if self.confirmation else None
            ),
            "class_match": self.class_match,
        }
