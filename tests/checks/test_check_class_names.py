"""A version whose labels file was reordered (the same weights, two class names swapped)
is the same classifier to every prototype and every score, so compared index by index only
its class names can show the change. The default policy compares them
(``same_class_names``) and fails it, flagging the renamed classes among those checked; a
version that came without names is not failed for lacking them. Compared by name (the
default when both versions carry names: ``checks/matching.py``), the two swapped names now
label each other's logits, so their prototypes fail the cross-scores as well."""

from __future__ import annotations

import dataclasses

from checks_shortcut_models import CONFIG
from protolens_server.checks import run_check
from protolens_server.checks.policy import Policy
from protolens_server.models.handle import generated_class_names


def test_a_reordered_labels_file_fails_the_default_policy(catalog, tmp_path) -> None:
    clean = catalog.load("shapes@1")
    names = list(clean.class_names)
    names[0], names[1] = names[1], names[0]
    relabelled = dataclasses.replace(clean, name="shapes-relabelled", class_names=tuple(names))
    policy = Policy.load("default")
    by_name = run_check(
        relabelled, baseline=clean, config=CONFIG, policy=policy, cache_dir=tmp_path
    ).to_dict()
    assert sorted(by_name["failed_rules"]) == ["min_cross_confidence", "same_class_names"]
    assert sorted(by_name["flagged_classes"]) == sorted(names[:2])
    swapped = {c["class"]: c for c in by_name["classes"] if c["class"] < 2}
    for c, other in ((0, 1), (1, 0)):
        assert swapped[c]["baseline_class"] == other
        assert swapped[c]["cross_scores"]["new_prototype_in_baseline_model"] < 0.25

    by_index = Policy.from_dict({**policy.to_dict(), "match_classes": "index"}, source="test")
    result = run_check(
        relabelled, baseline=clean, config=CONFIG, policy=by_index, cache_dir=tmp_path
    ).to_dict()
    assert not result["passed"]
    assert result["failed_rules"] == ["same_class_names"]
    (rule,) = [r for r in result["rules"] if r["rule"] == "same_class_names"]
    assert rule["classes"] == [names[0], names[1]]
    assert f"0 {names[0]!r} (baseline: {names[1]!r})" in rule["message"]
    flagged = {c["class"]: c["flags"] for c in result["classes"]}
    assert flagged[0] == flagged[1] == ["policy:same_class_names"]
    assert not any(flags for c, flags in flagged.items() if c > 1)
    # the same weights, so the same prototypes: nothing else moved
    for c in result["classes"]:
        assert c["cross_scores"]["new_prototype_in_baseline_model"] > 0.5

    unnamed = dataclasses.replace(
        clean, class_names=generated_class_names(clean.num_classes), name="shapes-unnamed"
    )
    assert unnamed.given_class_names == () and clean.given_class_names == clean.class_names
    again = run_check(unnamed, baseline=clean, config=CONFIG, policy=policy, cache_dir=tmp_path)
    doc = again.to_dict()
    assert doc["passed"], doc["rules"]
    (rule,) = [r for r in doc["rules"] if r["rule"] == "same_class_names"]
    assert rule["status"] == "skipped" and "the model has none" in rule["message"]
