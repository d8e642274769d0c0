"""Check policy: thresholds from a YAML file, giving pass/fail per rule.

```yaml
min_confidence: 0.8          # every class's new prototype: target probability >= this
min_path_similarity: 0.3     # needs a reference set; skipped without one
max_drift: 0.5               # needs a baseline; 1 - mean layer similarity in the new model
min_cross_confidence: 0.5    # needs a baseline; each version's prototype classified by the
                             # other version's model (the weaker of the two)
forbidden_entanglements:     # must not be entangled in the new version
  - [cat, dog]               # a pair: no edge between them, either way
  - truck                    # a class: no entanglement the baseline did not have
entanglement: {threshold: 0.1, top_k: 3}
```

A shipped policy is used by name: ``default`` (``DEFAULT_POLICY_YAML``, what
``protolens check --policy default`` applies; ``Policy.load("default")``).

Every key is optional; an unknown key is an error naming it. Classes are
indices or names (resolved like ``--classes``). Rules that cannot apply (no
baseline, no reference) are ``skipped``, never ``fail``. Results list failed
rules first.

Path similarity and drift are estimates with bootstrap intervals (docs/scores.md):
their rules fail, and their flags are raised, only when the whole interval is on
the wrong side of the threshold (``min_path_similarity``: the interval's upper end
below it; ``max_drift``: its lower end above it). A class whose path similarity
the reference set cannot determine is not measured for that rule.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from protolens_server.checks.entanglement import DEFAULT_THRESHOLD, DEFAULT_TOP_K
from protolens_server.checks.result import ClassCheck, RuleResult
from protolens_server.errors import InvalidArgument

# The shipped policy: what a CI gate should fail without anyone having tuned it to a model.
# Each rule fails on something a person must look at: a class whose own prototype the
# model is unsure of (nothing to show), a class whose prototype now takes a different
# path through the model, and a class whose prototype the other version does not
# recognise (what a planted shortcut does: bench/shortcut_suite.py, docs/checks.md).
DEFAULT_POLICY_YAML = """\
# protolens check --policy default
min_confidence: 0.5        # the new version's prototype of every class: target probability
max_drift: 0.5             # needs a baseline: the prototype's path through the new model
min_cross_confidence: 0.5  # needs a baseline: each version's prototype in the other's model
"""
NAMED_POLICIES = {"default": DEFAULT_POLICY_YAML}

# Flags (not rules) use these when the policy sets no threshold of its own.
FLAG_DRIFT = 0.5
FLAG_CROSS = 0.5
_ORDER = {"fail": 0, "pass": 1, "skipped": 2}


@dataclass(frozen=True)
class Policy:
    min_confidence: float | None = None
    min_path_similarity: float | None = None
    max_drift: float | None = None
    min_cross_confidence: float | None = None
    forbidden_entanglements: tuple[tuple[str, ...], ...] = ()
    entanglement_threshold: float = DEFAULT_THRESHOLD
    entanglement_top_k: int = DEFAULT_TOP_K
    source: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None, source: str = "policy") -> Policy:
        d = dict(d or {})
        known = {
            "min_confidence",
            "min_path_similarity",
            "max_drift",
            "min_cross_confidence",
            "forbidden_entanglements",
            "entanglement",
        }
        unknown = sorted(set(d) - known)
        if unknown:
            raise InvalidArgument(
                f"{source}.{unknown[0]}", f"is not a policy key (known: {', '.join(sorted(known))})"
            )
        numbers = {}
        for key in ("min_confidence", "min_path_similarity", "max_drift", "min_cross_confidence"):
            value = d.get(key)
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise InvalidArgument(f"{source}.{key}", f"must be a number (got {value!r})")
                numbers[key] = float(value)
        forbidden = []
        for i, item in enumerate(d.get("forbidden_entanglements") or []):
            entry = tuple(str(v) for v in item) if isinstance(item, list) else (str(item),)
            if len(entry) not in (1, 2):
                raise InvalidArgument(
                    f"{source}.forbidden_entanglements[{i}]",
                    "must be a class or a pair of classes [a, b]",
                )
            forbidden.append(entry)
        ent = d.get("entanglement") or {}
        if not isinstance(ent, dict) or set(ent) - {"threshold", "top_k"}:
            raise InvalidArgument(f"{source}.entanglement", "takes only threshold and top_k")
        threshold = float(ent.get("threshold", DEFAULT_THRESHOLD))
        top_k = int(ent.get("top_k", DEFAULT_TOP_K))
        if not 0 < threshold <= 1 or top_k < 1:
            raise InvalidArgument(f"{source}.entanglement", "threshold in (0, 1], top_k >= 1")
        return cls(
            **numbers,
            forbidden_entanglements=tuple(forbidden),
            entanglement_threshold=threshold,
            entanglement_top_k=top_k,
            source=source,
        )

    @classmethod
    def from_yaml(cls, path: str | Path) -> Policy:
        p = Path(path)
        try:
            data = yaml.safe_load(p.read_text())
        except OSError as exc:
            raise InvalidArgument("policy", f"cannot read {p}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise InvalidArgument("policy", f"{p} is not valid YAML: {exc}") from exc
        if data is not None and not isinstance(data, dict):
            raise InvalidArgument("policy", f"{p} must hold a mapping of policy keys")
        return cls.from_dict(data, source=str(p))

    @classmethod
    def load(cls, value: str | Path) -> Policy:
        """A shipped policy by name (``default``) or a YAML file (``./default`` for a file
        of that name)."""
        text = named_policy_yaml(value)
        if text is not None:
            return cls.from_dict(yaml.safe_load(text), source=str(value))
        return cls.from_yaml(value)

    def to_dict(self) -> dict[str, Any]:
        return {
            "min_confidence": self.min_confidence,
            "min_path_similarity": self.min_path_similarity,
            "max_drift": self.max_drift,
            "min_cross_confidence": self.min_cross_confidence,
            "forbidden_entanglements": [list(e) for e in self.forbidden_entanglements],
            "entanglement": {
                "threshold": self.entanglement_threshold,
                "top_k": self.entanglement_top_k,
            },
        }


def named_policy_yaml(value: str | Path) -> str | None:
    """The YAML of the shipped policy called ``value``, or None if it names none."""
    return NAMED_POLICIES.get(value) if isinstance(value, str) else None


def policy_yaml(value: str | Path) -> str:
    """The YAML text of a shipped policy's name or of a policy file (for the service)."""
    text = named_policy_yaml(value)
    if text is not None:
        return text
    try:
        return Path(value).read_text()
    except OSError as exc:
        raise InvalidArgument("policy", f"cannot read {value}: {exc.strerror}") from exc


@dataclass
class _Threshold:
    rule: str
    limit: float | None
    value: Callable[[ClassCheck], float | None]
    below_fails: bool  # True: value < limit fails (minimums)
    needs: str
    # the interval of the value, when it is an estimate: only a cleared interval fails
    interval: Callable[[ClassCheck], tuple[float, float] | None] = lambda _c: None
    skipped_classes: list[str] = field(default_factory=list)


def _path_similarity_interval(c: ClassCheck) -> tuple[float, float] | None:
    return c.new.path_similarity_interval


def _drift_interval(c: ClassCheck) -> tuple[float, float] | None:
    return c.drift_interval


def _clears(
    value: float, interval: tuple[float, float] | None, limit: float, below_fails: bool
) -> bool:
    """Is the estimate on the failing side of ``limit`` beyond its interval?

    Without an interval (an exact value) the value itself decides.
    """
    if below_fails:
        return (interval[1] if interval else value) < limit
    return (interval[0] if interval else value) > limit


def _shown(value: float, interval: tuple[float, float] | None) -> str:
    return f"{value:.3f}" + ("" if interval is None else f" [{interval[0]:.3f}, {interval[1]:.3f}]")


def evaluate(
    policy: Policy,
    classes: Sequence[ClassCheck],
    *,
    has_baseline: bool,
    resolve: Callable[[str], int],
    names: Sequence[str],
) -> list[RuleResult]:
    """One ``RuleResult`` per rule the policy sets, failed rules first."""
    thresholds = [
        _Threshold("min_confidence", policy.min_confidence, lambda c: c.new.probability, True, ""),
        _Threshold(
            "min_path_similarity",
            policy.min_path_similarity,
            lambda c: c.new.path_similarity,
            True,
            "a reference set (--reference)",
            _path_similarity_interval,
        ),
        _Threshold(
            "max_drift", policy.max_drift, lambda c: c.drift, False, "a baseline", _drift_interval
        ),
        _Threshold(
            "min_cross_confidence",
            policy.min_cross_confidence,
            _cross,
            True,
            "a baseline",
        ),
    ]
    results = [_threshold_rule(t, classes, has_baseline) for t in thresholds if t.limit is not None]
    if policy.forbidden_entanglements:
        results.append(_forbidden_rule(policy, classes, resolve, names))
    return sorted(results, key=lambda r: _ORDER[r.status])


def _cross(c: ClassCheck) -> float | None:
    """The weaker cross-score: old prototype in the new model, or new prototype in the old."""
    values = [v for v in (c.baseline_by_new_model, c.new_by_baseline_model) if v is not None]
    return min(values) if values else None


def _threshold_rule(t: _Threshold, classes: Sequence[ClassCheck], has_baseline: bool) -> RuleResult:
    if t.needs == "a baseline" and not has_baseline:
        return RuleResult(t.rule, "skipped", t.limit, message=f"needs {t.needs}")
    failing, measured = [], 0
    for c in classes:
        v = t.value(c)
        if v is None:
            continue
        measured += 1
        interval = t.interval(c)
        if _clears(v, interval, t.limit, t.below_fails):
            failing.append((c.name, _shown(v, interval)))
    if measured == 0:
        return RuleResult(t.rule, "skipped", t.limit, message=f"needs {t.needs}")
    if not failing:
        return RuleResult(t.rule, "pass", t.limit, message=f"{measured} classes within the limit")
    shown = ", ".join(f"{n} ({v})" for n, v in failing)
    word = "below" if t.below_fails else "above"
    return RuleResult(
        t.rule, "fail", t.limit, [n for n, _ in failing], f"{word} {t.limit:g}: {shown}"
    )


def _forbidden_rule(
    policy: Policy,
    classes: Sequence[ClassCheck],
    resolve: Callable[[str], int],
    names: Sequence[str],
) -> RuleResult:
    checked = {c.class_index: c for c in classes}
    broken: list[str] = []
    problems: list[str] = []
    for entry in policy.forbidden_entanglements:
        ids = [resolve(v) for v in entry]
        if len(ids) == 2:
            a, b = ids
            hits = [
                (s, t)
                for s, t in ((a, b), (b, a))
                if s in checked and t in {e.target for e in checked[s].entangled}
            ]
            if hits:
                broken += [names[s] for s, _ in hits]
                problems.append(f"{names[a]} and {names[b]} are entangled")
            continue
        (x,) = ids
        for c in classes:
            before = {e.target for e in c.baseline_entangled}
            new = [e.target for e in c.entangled if e.target not in before]
            if c.class_index == x and new:
                broken.append(c.name)
                problems.append(f"{c.name} became entangled with {_names(new, names)}")
            elif c.class_index != x and x in new:
                broken.append(c.name)
                problems.append(f"{c.name} became entangled with {names[x]}")
    threshold = [list(e) for e in policy.forbidden_entanglements]
    if not problems:
        return RuleResult("forbidden_entanglements", "pass", threshold, message="none found")
    return RuleResult(
        "forbidden_entanglements",
        "fail",
        threshold,
        sorted(set(broken)),
        "; ".join(problems),
    )


def _names(ids: Sequence[int], names: Sequence[str]) -> str:
    return ", ".join(names[i] for i in ids)


def flags_for(c: ClassCheck, policy: Policy) -> list[str]:
    """Why a person should look at this class (independent of pass/fail)."""
    flags = []
    if policy.min_confidence is not None and c.new.probability < policy.min_confidence:
        flags.append("low_confidence")
    ps, min_ps = c.new.path_similarity, policy.min_path_similarity
    if (
        min_ps is not None
        and ps is not None
        and _clears(ps, c.new.path_similarity_interval, min_ps, True)
    ):
        flags.append("low_path_similarity")
    max_drift = policy.max_drift if policy.max_drift is not None else FLAG_DRIFT
    if c.drift is not None and _clears(c.drift, c.drift_interval, max_drift, False):
        flags.append("drift")
    cross = policy.min_cross_confidence if policy.min_cross_confidence is not None else FLAG_CROSS
    value = _cross(c)
    if value is not None and value < cross:
        flags.append("cross_score")
    if c.gained or c.lost:
        flags.append("entanglement_changed")
    return flags
