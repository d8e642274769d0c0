"""Policy parsing and rules, entanglement edges and the SVG graph, on hand-made numbers."""

from __future__ import annotations

import pytest
import torch
from protolens_server.checks import entanglement
from protolens_server.checks.entanglement import Edge
from protolens_server.checks.policy import Policy, evaluate, flags_for
from protolens_server.checks.prototypes import ClassPrototypes
from protolens_server.checks.result import ClassCheck
from protolens_server.checks.svg import entanglement_svg
from protolens_server.errors import InvalidArgument

NAMES = ("cat", "dog", "truck", "ship")


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
        ("- a list", "policy"),
    ):
        path.write_text(text)
        with pytest.raises(InvalidArgument, match=field.replace("[", r"\[").replace("]", r"\]")):
            Policy.from_yaml(path)
    with pytest.raises(InvalidArgument, match="cannot read"):
        Policy.from_yaml(tmp_path / "missing.yaml")


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
    items = [_item(0, entangled=[Edge(0, 2, 0.4)], flags=["x"]), _item(2, lost=[0])]
    svg = entanglement_svg(items)
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert svg.count("<line") == 2 and 'stroke-dasharray="5,4"' in svg  # new + lost arrow
    assert "#f8d0d0" in svg  # the flagged class is filled red


def test_default_policy_by_name(tmp_path, monkeypatch) -> None:
    from protolens_server.checks.policy import DEFAULT_POLICY_YAML, policy_yaml

    p = Policy.load("default")
    assert (p.min_confidence, p.max_drift, p.min_cross_confidence) == (0.5, 0.5, 0.5)
    assert p.min_path_similarity is None and p.source == "default"
    assert policy_yaml("default") == DEFAULT_POLICY_YAML  # what --address sends
    # a file is still a file, also one called "default" when written as a path
    monkeypatch.chdir(tmp_path)
    (tmp_path / "default").write_text("max_drift: 0.25\n")
    assert Policy.load("./default").max_drift == 0.25
    assert policy_yaml("./default") == "max_drift: 0.25\n"
    with pytest.raises(InvalidArgument, match="cannot read"):
        policy_yaml("missing.yaml")
    # the default fails a shortcut-like class and passes a steady one
    items = [
        _item(0, 0.99, drift=0.1, new_by_baseline_model=0.9, baseline_by_new_model=0.9),
        _item(1, 0.99, drift=0.2, new_by_baseline_model=0.01, baseline_by_new_model=0.9),
    ]
    rules = evaluate(p, items, has_baseline=True, resolve=_resolve, names=NAMES)
    assert (rules[0].rule, rules[0].status, rules[0].classes) == (
        "min_cross_confidence",
        "fail",
        ["dog"],
    )
    assert [r.status for r in rules[1:]] == ["pass", "pass"]
