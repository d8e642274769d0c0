"""Check policy: thresholds from a YAML file, giving pass/fail per rule.

```yaml
min_confidence: 0.8          # every class's new prototype: target probability >= this
                             # (a tempered version read at its baseline's temperature:
                             # checks/comparison.py)
min_path_similarity: 0.3     # needs a reference set; skipped without one
max_drift: 0.5               # needs a baseline; 1 - mean layer similarity in the new model
max_drift_z: 3.5             # needs a baseline: drift far above the check's other classes'
min_cross_confidence: 0.5    # needs a baseline; each version's prototype classified by the
                             # other version's model (the weaker of the two); or
                             # "chance": 1 / the number of classes
same_class_names: true       # needs a baseline; class i has the same name in both versions
match_classes: auto          # pair the versions' classes by name (both carry names) or index:
                             # auto (the default), name, index (checks/matching.py)
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

``max_drift_z`` judges drift against the check's own classes instead of an absolute
value: two versions trained apart differ somewhat on every class, by an amount that
depends on the model. A class breaks it when its drift interval's lower end lies more
than ``max_drift_z`` robust standard deviations above the median drift of the
check's classes (the modified z-score of Iglewicz and Hoaglin: the scale is
1.4826 x the median absolute deviation, or 1.2533 x the mean absolute deviation
when more than half the classes drifted alike). It needs at least three classes with
a drift; a version in which every class moved alike passes it (``max_drift`` bounds
that).

``min_cross_confidence`` (rule and flag) reads the weaker of a class's two
cross-scores, except that an old prototype the new model gives to another class whose
own prototype changed is charged to that class (``attribute_claims``).

``same_class_names`` compares the two versions' label lists index by index, all of them,
not only the checked classes: the weights decide what a logit means, the names what a
caller is told, and a labels file that was reordered or regenerated changes the second
with no change in the first, which no prototype can show. It needs both versions to
carry class names. Indices the model adds after the baseline's are new classes and pass;
an index the baseline had and the model lacks fails (a caller's class is gone).

``match_classes`` is not a rule: it says which baseline class each class is compared with
(``checks/matching.py``). By name, a retrain whose labels moved compares each class with
itself, and ``same_class_names`` alone says that the indices moved.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from protolens_server.checks import matching
from protolens_server.checks.entanglement import DEFAULT_THRESHOLD, DEFAULT_TOP_K
from protolens_server.checks.result import ClassCheck, RuleResult
from protolens_server.errors import InvalidArgument

# The shipped policy: what a CI gate should fail without anyone having tuned it to a model.
# Each rule fails on something a person must look at: a class whose own prototype the
# model is unsure of (nothing to show), a class whose prototype now takes a path through
# the model that moved far more than the other classes' did, and a class whose prototype
# the other version gives no more than a guess would (what a planted shortcut does:
# bench/shortcut_suite.py, docs/checks.md). No absolute drift, and cross-scores judged
# against chance rather than 0.5: a retrained twin with nothing planted moves every class
# somewhat and gave one class's prototype 0.29 (docs/checks.md). 3.5 is the usual cut for
# the modified z-score (Iglewicz and Hoaglin). And a class index whose name changed: the
# same logit now reaches callers under another label (a reordered labels file).
DEFAULT_POLICY_YAML = """\
# protolens check --policy default
min_confidence: 0.5           # the new version's prototype of every class: target probability
max_drift_z: 3.5              # needs a baseline: a class whose prototype's path moved far
                              # more than the other classes' (robust z-score of drift)
min_cross_confidence: chance  # needs a baseline: each version's prototype in the other's
                              # model, at least what a guess gives (1 / the classes)
same_class_names: true        # needs a baseline: every class index keeps its name
"""
NAMED_POLICIES = {"default": DEFAULT_POLICY_YAML}

# Flags (not rules) use these when the policy sets no threshold of its own.
FLAG_DRIFT = 0.5
FLAG_CROSS = 0.5
NUMBER_KEYS = (
    "min_confidence",
    "min_path_similarity",
    "max_drift",
    "max_drift_z",
    "min_cross_confidence",
)
CHANCE = "chance"  # min_cross_confidence: what a uniform guess gives any class
MIN_CLASSES_FOR_Z = 3
# the modified z-score's scales: MAD and mean absolute deviation to a normal's sigma
_MAD_TO_SIGMA = 1.4826
_MEAN_AD_TO_SIGMA = 1.2533
_ORDER = {"fail": 0, "pass": 1, "skipped": 2}


@dataclass(frozen=True)
class Policy:
    min_confidence: float | None = None
    min_path_similarity: float | None = None
    max_drift: float | None = None
    max_drift_z: float | None = None
    # a number, or "chance": 1 / the number of classes (CHANCE)
    min_cross_confidence: float | str | None = None
    same_class_names: bool = False
    match_classes: str = "auto"  # checks/matching.py: auto | name | index
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
            "max_drift_z",
            "min_cross_confidence",
            "same_class_names",
            "match_classes",
            "forbidden_entanglements",
            "entanglement",
        }
        unknown = sorted(set(d) - known)
        if unknown:
            raise InvalidArgument(
                f"{source}.{unknown[0]}", f"is not a policy key (known: {', '.join(sorted(known))})"
            )
        numbers = {}
        for key in NUMBER_KEYS:
            value = d.get(key)
            if key == "min_cross_confidence" and value == CHANCE:
                numbers[key] = CHANCE
            elif value is not None:
                if isinstance(value, bool) or not isinstance(value, int | float):
                    what = "a number or chance" if key == "min_cross_confidence" else "a number"
                    raise InvalidArgument(f"{source}.{key}", f"must be {what} (got {value!r})")
                numbers[key] = float(value)
        if numbers.get("max_drift_z", 1.0) <= 0:
            raise InvalidArgument(f"{source}.max_drift_z", "must be above 0")
        same_names = d.get("same_class_names", False)
        if not isinstance(same_names, bool):
            raise InvalidArgument(
                f"{source}.same_class_names", f"must be true or false (got {same_names!r})"
            )
        match_by = d.get("match_classes", "auto")
        if match_by not in matching.MODES:
            raise InvalidArgument(
                f"{source}.match_classes",
                f"must be one of {', '.join(matching.MODES)} (got {match_by!r})",
            )
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
            same_class_names=same_names,
            match_classes=match_by,
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
            raise InvalidArgument("policy", _unreadable(p, exc)) from exc
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

    def cross_limit(self, num_classes: int | None) -> float | None:
        """``min_cross_confidence`` as a number (``chance``: 1 / ``num_classes``)."""
        if self.min_cross_confidence != CHANCE:
            return self.min_cross_confidence  # type: ignore[return-value]
        if not num_classes:
            raise ValueError("min_cross_confidence: chance needs the number of classes")
        return 1.0 / num_classes

    def to_dict(self) -> dict[str, Any]:
        return {
            "min_confidence": self.min_confidence,
            "min_path_similarity": self.min_path_similarity,
            "max_drift": self.max_drift,
            "max_drift_z": self.max_drift_z,
            "min_cross_confidence": self.min_cross_confidence,
            "same_class_names": self.same_class_names,
            "match_classes": self.match_classes,
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
        raise InvalidArgument("policy", _unreadable(value, exc)) from exc


def _unreadable(path: str | Path, exc: OSError) -> str:
    names = " or ".join(repr(n) for n in NAMED_POLICIES)
    return (
        f"cannot read {path}: {exc.strerror}; give a policy file (its keys: docs/checks.md) "
        f"or {names} for the shipped policy"
    )


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
    class_names: tuple[Sequence[str], Sequence[str]] = ((), ()),
    match: matching.ClassMatch | None = None,
) -> list[RuleResult]:
    """One ``RuleResult`` per rule the policy sets, failed rules first. ``class_names``:
    the model's and the baseline's own label lists (empty where a version has none);
    ``match``: how the check paired them (named in ``same_class_names``' message)."""
    thresholds = [
        _Threshold(
            "min_confidence", policy.min_confidence, lambda c: c.target_confidence, True, ""
        ),
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
            policy.cross_limit(len(names)),
            _cross,
            True,
            "a baseline",
        ),
    ]
    results = [_threshold_rule(t, classes, has_baseline) for t in thresholds if t.limit is not None]
    if policy.max_drift_z is not None:
        results.append(_drift_z_rule(policy.max_drift_z, classes, has_baseline))
    if policy.same_class_names:
        results.append(_class_names_rule(*class_names, has_baseline=has_baseline, match=match))
    if policy.forbidden_entanglements:
        results.append(_forbidden_rule(policy, classes, resolve, names))
    return sorted(results, key=lambda r: _ORDER[r.status])


SHOWN_RENAMES = 5


def _class_names_rule(
    new: Sequence[str],
    old: Sequence[str],
    *,
    has_baseline: bool,
    match: matching.ClassMatch | None = None,
) -> RuleResult:
    """Fails when a class index has another name in the model than in the baseline, or the
    model lacks an index the baseline had; indices added after the baseline's pass."""
    rule = "same_class_names"
    if not has_baseline:
        return RuleResult(rule, "skipped", True, message="needs a baseline")
    missing = [what for what, names in (("the model", new), ("the baseline", old)) if not names]
    if missing:
        which = f"{missing[0]} has none" if len(missing) == 1 else "neither version has any"
        return RuleResult(
            rule, "skipped", True, message=f"needs class names in both versions ({which})"
        )
    common = min(len(new), len(old))
    renamed = [i for i in range(common) if new[i] != old[i]]
    gone = list(range(len(new), len(old)))  # indices callers had that the model lacks
    added = list(range(len(old), len(new)))
    extra = (
        f"; {len(added)} class{'es' if len(added) > 1 else ''} added after them: "
        + _listed([f"{i} {new[i]!r}" for i in added])
        if added
        else ""
    )
    if not renamed and not gone:
        kept = f"all {len(old)} class names as in the baseline"
        return RuleResult(rule, "pass", True, message=kept + extra)
    parts = []
    if renamed:
        # a permutation: the labels (or the classes) were reordered, nothing renamed
        order = " (the same names in another order)" if sorted(new) == sorted(old) else ""
        parts.append(
            f"{len(renamed)} of {common} class indices have another name than in the baseline"
            f"{order}: " + _listed([f"{i} {new[i]!r} (baseline: {old[i]!r})" for i in renamed])
        )
    if gone:
        parts.append(
            f"the model has {len(new)} classes, the baseline {len(old)}: indices "
            + _listed([f"{i} {old[i]!r}" for i in gone])
            + " are gone"
        )
    paired = (
        "; the check compared each class with its namesake in the baseline (match_classes)"
        if match is not None and match.by == "name" and match.moved
        else ""
    )
    return RuleResult(
        rule,
        "fail",
        True,
        [new[i] for i in renamed] + [old[i] for i in gone],
        "; ".join(parts)
        + extra
        + paired
        + "; if the labels were meant to change, give a policy file with same_class_names: false",
    )


def _listed(items: Sequence[str]) -> str:
    """The first ``SHOWN_RENAMES`` items, and how many more."""
    more = len(items) - SHOWN_RENAMES
    return ", ".join(items[:SHOWN_RENAMES]) + (f", and {more} more" if more > 0 else "")


def _cross(c: ClassCheck) -> float | None:
    """The weaker cross-score: old prototype in the new model, or new prototype in the old
    (the first left out when another class claims it: ``attribute_claims``)."""
    old_in_new = c.baseline_by_new_model if c.baseline_claimed_by is None else None
    values = [v for v in (old_in_new, c.new_by_baseline_model) if v is not None]
    return min(values) if values else None


def attribute_claims(classes: Sequence[ClassCheck], policy: Policy, num_classes: int) -> None:
    """Charge an old prototype's low score in the new model to the class that took it.

    When the new model gives class X's old prototype less than the cross-score limit and
    calls it class Y instead, either X lost its evidence or Y's grew to take X's. If Y's
    own prototype changed (the old model does not recognise Y's new prototype, or Y's
    drift is flagged) the second is the simpler reading: ``X.baseline_claimed_by = Y``,
    and that score no longer counts against X (Y is flagged on its own). A planted
    shortcut does this: the shortcut model calls other classes' old prototypes the
    shortcut class (docs/checks.md). So does a class the baseline did not have (an added
    class, ``checks/matching.py``): it is new, so it took the evidence, and nothing of it
    can be compared. Needs each class's ``drift_z`` set first.
    """
    limit = policy.cross_limit(num_classes)
    limit = FLAG_CROSS if limit is None else limit
    by_index = {c.class_index: c for c in classes}

    def changed(y: ClassCheck) -> bool:
        if y.baseline is None:  # a class the baseline did not have (checks/matching.py)
            return True
        unrecognised = y.new_by_baseline_model is not None and y.new_by_baseline_model < limit
        return unrecognised or _drift_flag(y, policy, y.drift_z)

    for c in classes:
        c.baseline_claimed_by = None
        top = c.baseline_top_in_new_model
        low = c.baseline_by_new_model is not None and c.baseline_by_new_model < limit
        if low and top is not None and top != c.class_index:
            y = by_index.get(top)
            if y is not None and changed(y):
                c.baseline_claimed_by = top


@dataclass(frozen=True)
class DriftSpread:
    """The check's drift across classes: its median, robust scale, each class's z-score."""

    median: float
    scale: float
    z: dict[int, float]  # class index -> (drift interval's lower end - median) / scale


def drift_spread(classes: Sequence[ClassCheck]) -> DriftSpread | None:
    """Each class's robust z-score of drift among ``classes`` (None: fewer than three
    classes have a drift). A class's z uses its interval's lower end, so an uncertain
    drift counts at its least; the median and scale use the point values."""
    measured = [c for c in classes if c.drift is not None]
    if len(measured) < MIN_CLASSES_FOR_Z:
        return None
    values = [float(c.drift) for c in measured]  # type: ignore[arg-type]
    median = statistics.median(values)
    deviations = [abs(v - median) for v in values]
    scale = _MAD_TO_SIGMA * statistics.median(deviations)
    if scale == 0:  # more than half the classes drifted alike
        scale = _MEAN_AD_TO_SIGMA * statistics.fmean(deviations)
    z = {}
    for c, v in zip(measured, values, strict=True):
        low = c.drift_interval[0] if c.drift_interval else v
        z[c.class_index] = (low - median) / scale if scale > 0 else 0.0
    return DriftSpread(median, scale, z)


def _drift_z_rule(limit: float, classes: Sequence[ClassCheck], has_baseline: bool) -> RuleResult:
    spread = drift_spread(classes) if has_baseline else None
    if spread is None:
        needs = "a baseline and a drift in at least 3 classes"
        return RuleResult("max_drift_z", "skipped", limit, message=f"needs {needs}")
    failing = [c for c in classes if spread.z.get(c.class_index, 0.0) > limit]
    if not failing:
        return RuleResult(
            "max_drift_z",
            "pass",
            limit,
            message=f"{len(spread.z)} classes within {limit:g} robust SDs of the median drift",
        )
    shown = ", ".join(
        f"{c.name} ({_shown(float(c.drift), c.drift_interval)}, z {spread.z[c.class_index]:.1f})"  # type: ignore[arg-type]
        for c in failing
    )
    return RuleResult(
        "max_drift_z",
        "fail",
        limit,
        [c.name for c in failing],
        f"more than {limit:g} robust SDs ({spread.scale:.3f}) above the median drift "
        f"{spread.median:.3f}: {shown}",
    )


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


def flags_for(
    c: ClassCheck, policy: Policy, drift_z: float | None = None, num_classes: int | None = None
) -> list[str]:
    """Why a person should look at this class (independent of pass/fail). ``drift_z``: the
    class's robust z-score of drift in its check (``drift_spread``), for ``max_drift_z``;
    ``num_classes``: the model's, for ``min_cross_confidence: chance``."""
    flags = []
    if policy.min_confidence is not None and c.target_confidence < policy.min_confidence:
        flags.append("low_confidence")
    ps, min_ps = c.new.path_similarity, policy.min_path_similarity
    if (
        min_ps is not None
        and ps is not None
        and _clears(ps, c.new.path_similarity_interval, min_ps, True)
    ):
        flags.append("low_path_similarity")
    if _drift_flag(c, policy, drift_z):
        flags.append("drift")
    limit = policy.cross_limit(num_classes)
    cross = limit if limit is not None else FLAG_CROSS
    value = _cross(c)
    if value is not None and value < cross:
        flags.append("cross_score")
    if c.gained or c.lost:
        flags.append("entanglement_changed")
    return flags


def _drift_flag(c: ClassCheck, policy: Policy, drift_z: float | None) -> bool:
    """Past the policy's drift thresholds (absolute, relative or both); without either,
    past ``FLAG_DRIFT``."""
    if c.drift is None:
        return False
    relative = policy.max_drift_z is not None and drift_z is not None
    if relative and drift_z > policy.max_drift_z:  # type: ignore[operator]
        return True
    if policy.max_drift is None and policy.max_drift_z is not None:
        return False
    limit = policy.max_drift if policy.max_drift is not None else FLAG_DRIFT
    return _clears(c.drift, c.drift_interval, limit, False)
