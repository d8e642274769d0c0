"""Policy parsing and rules, entanglement edges and the SVG graph, on hand-made numbers."""

from __future__ import annotations

import pytest
import torch
from protolens_server.checks import entanglement
from protolens_server.checks.entanglement import Edge
from protolens_server.checks.policy import (
    Policy,
    attribute_claims,
    drift_spread,
    evaluate,
    flags_for,
)
from protolens_server.checks.prototypes import ClassPrototypes
from protolens_server.checks.result import ClassCheck
from protolens_server.checks.svg import entanglement_svg
from protolens_server.errors import InvalidArgument

NAMES = ("cat", "dog", "truck", "ship", "bird", "frog", "horse", "deer", "car", "plane")


def _item(c: int, prob: float = 0.95, **kw) -> ClassCheck:
    protos = ClassPrototypes(c, torch.zeros(1, 3, 8, 8), [b""], [prob], [None])
    base = ClassPrototypes(c, torch.zeros(1, 3, 8, 8), [b""], [0.9], [None])
    return ClassCheck(c, NAMES[c], protos, baseline=base, **kw)


def _resolve(v: str) -> int:
    return int(v) if v.isdigit() else NAMES.index(v)


def test_policy_yaml_and_errors(tmp_path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "min_confidence: 0.8\nmax_drift: 0.4\nforbidden_entanglements: [[cat, dog], truck]\n"
        "entanglement: {threshold: 0.2, top_k: 2}\n"
    )
    p = Policy.from_yaml(path)
    assert p.min_confidence == 0.8 and p.max_drift == 0.4
    assert p.forbidden_entanglements == (("cat", "dog"), ("truck",))
    assert (p.entanglement_threshold, p.entanglement_top_k) == (0.2, 2)
    for text, field in (
        ("max_drfit: 1", "max_drfit"),
        ("min_confidence: high", "min_confidence"),
        ("forbidden_entanglements: [[a, b, c]]", "forbidden_entanglements[0]"),
        ("entanglement: {threshold: 2}", "entanglement"),
        ("max_drift_z: 0", "max_drift_z"),
        ("max_drift_z: high", "max_drift_z"),
        ("min_cross_confidence: sometimes", "min_cross_confidence"),
        ("same_class_names: 1", "same_class_names"),
        ("same_class_names: sometimes", "same_class_names"),
        ("- a list", "policy"),
    ):
        path.write_text(text)
        with pytest.raises(InvalidArgument, match=field.replace("[", r"\[").replace("]", r"\]")):
            Policy.from_yaml(path)
    with pytest.raises(InvalidArgument, match="cannot read") as missing:
        Policy.from_yaml(tmp_path / "missing.yaml")
    # what to do instead: the README's `--policy policy.yaml` before the user wrote one
    assert "docs/checks.md" in str(missing.value) and "'default'" in str(missing.value)


def test_rules_fail_first_and_name_classes() -> None:
    items = [
        _item(0, 0.5, drift=0.1),
        _item(1, 0.99, drift=0.7),
        _item(2, 0.99, drift=0.2, entangled=[Edge(2, 3, 0.3)]),
        _item(
            3, 0.99, drift=0.0, entangled=[Edge(3, 0, 0.2)], baseline_entangled=[Edge(3, 0, 0.25)]
        ),
    ]
    policy = Policy(
        min_confidence=0.8,
        max_drift=0.5,
        min_path_similarity=0.3,
        forbidden_entanglements=(("cat", "ship"), ("truck",), ("dog", "cat")),
    )
    rules = evaluate(policy, items, has_baseline=True, resolve=_resolve, names=NAMES)
    status = {r.rule: (r.status, r.classes) for r in rules}
    assert [r.status for r in rules] == ["fail", "fail", "fail", "skipped"]
    assert status["min_confidence"] == ("fail", ["cat"])
    assert status["max_drift"] == ("fail", ["dog"])
    assert status["min_path_similarity"][0] == "skipped"  # no reference scores
    assert status["forbidden_entanglements"] == ("fail", ["ship", "truck"])
    message = next(r.message for r in rules if r.rule == "forbidden_entanglements")
    assert "cat and ship are entangled" in message and "truck became entangled with ship" in message
    no_baseline = evaluate(
        Policy(max_drift=0.5), items, has_baseline=False, resolve=_resolve, names=NAMES
    )
    assert [(r.rule, r.status) for r in no_baseline] == [("max_drift", "skipped")]


def test_flags() -> None:
    item = _item(1, 0.99, drift=0.7, new_by_baseline_model=0.02, baseline_by_new_model=0.9)
    item.gained = [2]
    assert flags_for(item, Policy()) == ["drift", "cross_score", "entanglement_changed"]
    assert flags_for(_item(0, drift=0.1, new_by_baseline_model=0.9), Policy()) == []


def test_entanglement_edges_and_graph_svg() -> None:
    probs = torch.tensor([[0.6, 0.25, 0.1, 0.05], [0.5, 0.35, 0.05, 0.1]])
    edges = entanglement.edges_for(0, probs, threshold=0.1, top_k=3)
    assert [(e.target, round(e.probability, 3)) for e in edges] == [(1, 0.3)]
    assert entanglement.edges_for(0, probs, threshold=0.05, top_k=1)[0].target == 1
    gained, lost = entanglement.changed([Edge(0, 1, 0.3)], [Edge(0, 2, 0.3)])
    assert (gained, lost) == ({2}, {1})
    # with each version's softmax: an edge changed only where the other version is
    # clearly below the threshold (under half of it), not where it sits just under
    old_row = torch.tensor([[0.6, 0.3, 0.09, 0.01]])  # 0 -> 1 (0.3); 2 just under
    new_row = torch.tensor([[0.6, 0.02, 0.11, 0.27]])  # 0 -> 2 (0.11), 0 -> 3 (0.27)
    old_edges = entanglement.edges_for(0, old_row, threshold=0.1)
    new_edges = entanglement.edges_for(0, new_row, threshold=0.1)
    assert entanglement.changed(old_edges, new_edges) == ({2, 3}, {1})
    assert entanglement.changed(old_edges, new_edges, old_row, new_row, threshold=0.1) == (
        {3},
        {1},
    )
    items = [_item(0, entangled=[Edge(0, 2, 0.4)], flags=["x"]), _item(2, lost=[0])]
    svg = entanglement_svg(items)
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert svg.count("<line") == 2 and 'stroke-dasharray="5,4"' in svg  # new + lost arrow
    assert "#f8d0d0" in svg  # the flagged class is filled red


def test_default_policy_by_name(tmp_path, monkeypatch) -> None:
    from protolens_server.checks.policy import DEFAULT_POLICY_YAML, policy_yaml

    p = Policy.load("default")
    assert (p.min_confidence, p.max_drift_z, p.min_cross_confidence) == (0.5, 3.5, "chance")
    assert p.max_drift is None and p.cross_limit(10) == 0.1 and p.cross_limit(4) == 0.25
    with pytest.raises(ValueError, match="number of classes"):
        p.cross_limit(None)
    assert p.min_path_similarity is None and p.source == "default" and p.same_class_names
    assert policy_yaml("default") == DEFAULT_POLICY_YAML  # what --address sends
    # a file is still a file, also one called "default" when written as a path
    monkeypatch.chdir(tmp_path)
    (tmp_path / "default").write_text("max_drift: 0.25\n")
    assert Policy.load("./default").max_drift == 0.25
    assert policy_yaml("./default") == "max_drift: 0.25\n"
    with pytest.raises(InvalidArgument, match="cannot read"):
        policy_yaml("missing.yaml")
    # the default fails a shortcut-like class: its prototype moved far more than the others'
    items = [*_versions(RETRAINED), _item(9, drift=0.85, drift_interval=(0.6, 1.0))]
    same = (NAMES, NAMES)
    rules = evaluate(p, items, has_baseline=True, resolve=_resolve, names=NAMES, class_names=same)
    assert [(r.rule, r.status, r.classes) for r in rules] == [
        ("max_drift_z", "fail", ["plane"]),
        ("min_confidence", "pass", []),
        ("min_cross_confidence", "pass", []),
        ("same_class_names", "pass", []),
    ]
    assert "plane (0.850 [0.600, 1.000], z " in rules[0].message
    # ... and one whose prototype the other version gives less than a guess (1/10), even
    # when its drift is ordinary (a fine-tuned version that changed only that class)
    items = _versions(RETRAINED)
    items[2].new_by_baseline_model = 0.02
    rules = evaluate(p, items, has_baseline=True, resolve=_resolve, names=NAMES)
    assert [(r.rule, r.status, r.classes) for r in rules if r.status == "fail"] == [
        ("min_cross_confidence", "fail", ["truck"])
    ]
    # a retrained twin: every class moved a little, the other version gives one class's
    # prototype 0.29 and it moved no more than the others: the default passes it (no
    # flag), where the absolute 0.5 thresholds failed it
    items[2].new_by_baseline_model = 0.29
    rules = evaluate(p, items, has_baseline=True, resolve=_resolve, names=NAMES, class_names=same)
    assert all(r.status == "pass" for r in rules), rules
    spread = drift_spread(items)
    assert spread is not None
    flagged = {c.name: flags_for(c, p, spread.z[c.class_index], len(NAMES)) for c in items}
    assert not any(flagged.values()), flagged
    strict = Policy(max_drift=0.5, min_cross_confidence=0.5)
    failed = evaluate(strict, items, has_baseline=True, resolve=_resolve, names=NAMES)
    assert [(r.rule, r.classes) for r in failed if r.status == "fail"] == [
        ("min_cross_confidence", ["truck"])
    ]
    assert flags_for(items[2], strict) == ["cross_score"]


# drift and interval of 9 classes between two versions trained apart (the shape of the
# shortcut suite's control: bench/results/shortcut_suite.json)
RETRAINED = [
    (0.28, (0.23, 0.34)),
    (0.06, (0.05, 0.08)),
    (0.07, (0.06, 0.09)),
    (0.14, (0.11, 0.18)),
    (0.12, (0.10, 0.15)),
    (0.19, (0.14, 0.27)),
    (0.07, (0.05, 0.09)),
    (0.06, (0.05, 0.08)),
    (0.14, (0.10, 0.19)),
]


def _versions(drifts: list[tuple[float, tuple[float, float]]]) -> list[ClassCheck]:
    return [
        _item(
            i,
            0.99,
            drift=d,
            drift_interval=ci,
            new_by_baseline_model=0.99,
            baseline_by_new_model=0.99,
        )
        for i, (d, ci) in enumerate(drifts)
    ]


def test_max_drift_z_judges_drift_against_the_other_classes() -> None:
    policy = Policy(max_drift_z=3.5)
    # every class moved a lot (a model that differs everywhere): absolute 0.5 fails them
    # all, the relative rule none; one that moved far more than the rest fails both
    alike = _versions([(0.55 + 0.01 * i, (0.5 + 0.01 * i, 0.6 + 0.01 * i)) for i in range(9)])
    rules = evaluate(policy, alike, has_baseline=True, resolve=_resolve, names=NAMES)
    assert [r.status for r in rules] == ["pass"]
    absolute = evaluate(
        Policy(max_drift=0.45), alike, has_baseline=True, resolve=_resolve, names=NAMES
    )
    assert len(absolute[0].classes) == 9
    outlier = [*alike, _item(9, drift=0.95, drift_interval=(0.9, 1.0))]
    rules = evaluate(policy, outlier, has_baseline=True, resolve=_resolve, names=NAMES)
    assert (rules[0].status, rules[0].classes) == ("fail", ["plane"])
    # the interval's lower end decides: the same drift, too uncertain to stand out
    unsure = [*alike, _item(9, drift=0.95, drift_interval=(0.55, 1.0))]
    rules = evaluate(policy, unsure, has_baseline=True, resolve=_resolve, names=NAMES)
    assert rules[0].status == "pass"
    # the flag follows the rule: "drift" only on the outlier, not on 0.55-0.63
    spread = drift_spread(outlier)
    assert spread is not None and spread.z[9] > 3.5
    flags = {c.name: flags_for(c, policy, spread.z[c.class_index]) for c in outlier}
    assert {n for n, f in flags.items() if "drift" in f} == {"plane"}
    # without a policy of its own a flag keeps the absolute FLAG_DRIFT
    assert "drift" in flags_for(alike[-1], Policy())


def test_drift_spread_when_most_classes_did_not_move() -> None:
    # more than half at drift 0: the median absolute deviation is 0, the mean one is not
    items = _versions([(0.0, (0.0, 0.0))] * 7 + [(0.02, (0.01, 0.03)), (0.4, (0.3, 0.5))])
    spread = drift_spread(items)
    assert spread is not None and spread.median == 0.0 and spread.scale > 0
    assert spread.z[8] > 3.5 > spread.z[7] > 0 == spread.z[0]
    # nothing moved at all: no outlier, no division by zero
    still = drift_spread(_versions([(0.0, (0.0, 0.0))] * 4))
    assert still is not None and set(still.z.values()) == {0.0}
    # fewer than three classes with a drift: the rule cannot judge and is skipped
    assert drift_spread(_versions([(0.0, (0.0, 0.0))] * 2)) is None
    rules = evaluate(
        Policy(max_drift_z=3.5),
        _versions([(0.9, (0.8, 1.0))] * 2),
        has_baseline=True,
        resolve=_resolve,
        names=NAMES,
    )
    assert [r.status for r in rules] == ["skipped"]
    rules = evaluate(
        Policy(max_drift_z=3.5), items, has_baseline=False, resolve=_resolve, names=NAMES
    )
    assert [r.status for r in rules] == ["skipped"]


def test_an_old_prototype_taken_by_a_changed_class_is_charged_to_that_class() -> None:
    # ship's new prototype is not ship to the old model (it changed); the new model calls
    # truck's old prototype ship, and dog's old prototype cat (which did not change)
    items = _versions(RETRAINED)
    ship, truck, dog = items[3], items[2], items[1]
    ship.new_by_baseline_model = 0.0
    truck.baseline_by_new_model, truck.baseline_top_in_new_model = 0.01, 3
    dog.baseline_by_new_model, dog.baseline_top_in_new_model = 0.01, 0
    policy = Policy.load("default")
    spread = drift_spread(items)
    assert spread is not None
    for c in items:
        c.drift_z = spread.z[c.class_index]
    attribute_claims(items, policy, len(NAMES))
    assert (truck.baseline_claimed_by, dog.baseline_claimed_by, ship.baseline_claimed_by) == (
        3,
        None,
        None,
    )
    flagged = {c.name for c in items if flags_for(c, policy, c.drift_z, len(NAMES))}
    assert flagged == {"ship", "dog"}
    rules = evaluate(policy, items, has_baseline=True, resolve=_resolve, names=NAMES)
    cross = next(r for r in rules if r.rule == "min_cross_confidence")
    assert (cross.status, cross.classes) == ("fail", ["dog", "ship"])
    assert truck.to_dict()["cross_scores"]["baseline_prototype_claimed_by"] == 3
    # nothing is charged when the taker did not change
    ship.new_by_baseline_model = 0.99
    attribute_claims(items, policy, len(NAMES))
    assert truck.baseline_claimed_by is None
    assert "cross_score" in flags_for(truck, policy, truck.drift_z, len(NAMES))


def test_same_class_names_compares_every_index_of_both_label_lists() -> None:
    """A reordered labels file changes what callers are told with no change a prototype
    could show: the rule reads every index, not only the checked classes."""
    policy = Policy(same_class_names=True)
    items = _versions(RETRAINED[:3])  # cat, dog, truck checked; the swap is elsewhere

    def rule(new, old, has_baseline=True):  # type: ignore[no-untyped-def]
        (r,) = evaluate(
            policy, items, has_baseline=has_baseline, resolve=_resolve, names=NAMES,
            class_names=(new, old),
        )  # fmt: skip
        return r

    assert (rule(NAMES, NAMES).status, rule(NAMES, NAMES).message) == (
        "pass",
        "all 10 class names as in the baseline",
    )
    swapped = list(NAMES)
    swapped[7], swapped[8] = NAMES[8], NAMES[7]
    failed = rule(tuple(swapped), NAMES)
    assert (failed.status, failed.classes) == ("fail", ["car", "deer"])
    assert "2 of 10 class indices" in failed.message
    assert "(the same names in another order)" in failed.message  # reordered, not renamed
    assert "7 'car' (baseline: 'deer'), 8 'deer' (baseline: 'car')" in failed.message
    assert "same_class_names: false" in failed.message  # what to do if it was meant
    many = rule(tuple(n.upper() for n in NAMES), NAMES)
    assert "10 of 10" in many.message and "and 5 more" in many.message
    assert "another order" not in many.message  # renamed, not reordered
    # a version that came without names, or no baseline: nothing to compare
    assert rule((), NAMES).status == "skipped" and "the model has none" in rule((), NAMES).message
    assert "the baseline has none" in rule(NAMES, ()).message
    assert "neither version has any" in rule((), ()).message
    assert rule(NAMES, NAMES, has_baseline=False).message == "needs a baseline"
    assert Policy().same_class_names is False  # only when a policy asks
    assert not evaluate(Policy(), items, has_baseline=True, resolve=_resolve, names=NAMES)


def test_an_old_prototype_taken_by_a_class_the_baseline_lacked_is_charged_to_it() -> None:
    """An added class (checks/matching.py) is new, so when the new model gives another
    class's old prototype to it, the added class took that evidence."""
    policy = Policy.load("default")
    cross = _item(2, baseline_by_new_model=0.0, baseline_top_in_new_model=3)
    cross.new_by_baseline_model = 0.99
    ring = ClassCheck(
        3, NAMES[3], ClassPrototypes(3, torch.zeros(1, 3, 8, 8), [b""], [0.95], [None])
    )
    attribute_claims([cross, ring], policy, 4)
    assert cross.baseline_claimed_by == 3
    assert flags_for(cross, policy, None, 4) == []
    assert flags_for(ring, policy, None, 4) == []  # nothing of it to compare
