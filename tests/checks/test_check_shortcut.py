"""The issue's bar: a planted shortcut is flagged and fails the policy; an unchanged version
passes; re-checking does no generation."""

from __future__ import annotations

import json

import pytest
import torch
from checks_shortcut_models import CLASSES, CONFIG, POLICY, SHORTCUT
from protolens_server.checks import render_html, run_check

BARS = CLASSES[SHORTCUT]


def _red_fraction(images) -> float:
    """Share of strongly red pixels (red above both other channels by 0.3): the patch is red."""
    red = images[:, 0] - torch.maximum(images[:, 1], images[:, 2])
    return float((red > 0.3).float().mean())


def test_shortcut_version_is_flagged_and_fails_policy(catalog, tmp_path) -> None:
    result = run_check(
        "shapes@2",
        baseline="shapes@1",
        catalog=catalog,
        config=CONFIG,
        policy=POLICY,
        cache_dir=tmp_path,
    )
    assert not result.passed
    doc = result.to_dict()
    assert BARS in doc["flagged_classes"]
    failed = [r for r in doc["rules"] if r["status"] == "fail"]
    assert failed and doc["rules"][: len(failed)] == failed  # failed rules first
    assert any(BARS in r["classes"] for r in failed)
    bars = next(c for c in doc["classes"] if c["name"] == BARS)
    assert "cross_score" in bars["flags"]
    # v1 does not recognise what v2 now calls "bars": the patch, not the stripes.
    assert bars["cross_scores"]["new_prototype_in_baseline_model"] < 0.1
    assert bars["new"]["probability"] > 0.9
    item = next(c for c in result.classes if c.name == BARS)
    assert _red_fraction(item.new.images) > 0.05 > _red_fraction(item.baseline.images)
    # Untouched classes stay close and unflagged.
    for name in ("disc", "ring"):
        c = next(c for c in doc["classes"] if c["name"] == name)
        assert c["flags"] == [] and c["drift"] < 0.3
    html = render_html(result)
    assert 'class="card flagged" id="class-1"' in html
    assert html.index("FAIL") < html.index("Prototypes")
    assert json.loads(json.dumps(doc)) == doc


def test_unchanged_version_passes_and_recheck_generates_nothing(catalog, tmp_path) -> None:
    first = run_check(
        "shapes@2",
        baseline="shapes@1",
        catalog=catalog,
        config=CONFIG,
        policy=POLICY,
        cache_dir=tmp_path,
    )
    # the first round's 2 jobs, then the flagged classes again on more prototypes (a job
    # per version: one chunk), all from the cache the second time
    assert first.confirmation is not None and len(first.confirmation.flags_before) <= 4
    assert first.generation.generated == first.generation.jobs == 4
    again = run_check(
        "shapes@2",
        baseline="shapes@1",
        catalog=catalog,
        config=CONFIG,
        policy=POLICY,
        cache_dir=tmp_path,
    )
    assert again.generation.cache_hits == again.generation.jobs == 4
    assert again.generation.generated == 0
    assert all(c.new.cache_hit and c.baseline.cache_hit for c in again.classes)
    assert _facts(again) == _facts(first)
    # shapes@3 is shapes@1's file registered again: same digest, so all from the cache.
    same = run_check(
        "shapes@3",
        baseline="shapes@1",
        catalog=catalog,
        config=CONFIG,
        policy=POLICY,
        cache_dir=tmp_path,
    )
    assert same.generation.generated == 0
    assert same.passed, [r.to_dict() for r in same.failed_rules]
    assert all(c.drift == pytest.approx(0.0, abs=1e-6) and not c.flags for c in same.classes)


def test_no_baseline_skips_baseline_rules(catalog, tmp_path) -> None:
    result = run_check(
        "shapes@1",
        catalog=catalog,
        classes=["disc", "3"],
        config=CONFIG,
        policy=POLICY,
        cache_dir=tmp_path,
    )
    assert [c.class_index for c in result.classes] == [0, 3]
    statuses = {r.rule: r.status for r in result.rules}
    assert statuses == {
        "min_confidence": "pass",
        "max_drift": "skipped",
        "min_cross_confidence": "skipped",
    }
    assert result.passed
    html = render_html(result)
    assert "no baseline" in html and html.count('class="card"') == 2
    assert "baseline p=" not in html  # new prototypes only


def _facts(result) -> tuple:
    doc = result.to_dict()
    per_class = [
        (c["name"], c["flags"], c["drift"], c["cross_scores"], c["new"]["probabilities"])
        for c in doc["classes"]
    ]
    return doc["rules"], doc["flagged_classes"], per_class
