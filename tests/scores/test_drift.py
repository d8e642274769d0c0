"""Drift in ``protolens check``: bounded, with intervals, on path similarity's rules; the
policy flags and fails only when an interval clears its threshold."""

from __future__ import annotations

import math

import pytest
import torch
from protolens_server.checks.policy import Policy, evaluate, flags_for
from protolens_server.checks.prototypes import ClassPrototypes
from protolens_server.checks.result import ClassCheck
from protolens_server.engine import drift
from scores_synthetic import make_dataset


def _by_class(images: torch.Tensor, labels: torch.Tensor, per: int) -> dict[int, torch.Tensor]:
    return {c: images[labels == c][:per] for c in range(10)}


def test_unchanged_prototypes_do_not_drift_and_others_drift_boundedly(handle):
    images, labels = make_dataset(6, seed=21)
    new = _by_class(images, labels, 3)
    same = drift(handle, new, new)
    for d in same.values():
        assert d.drift == pytest.approx(0.0, abs=1e-12) and d.determinate_layers >= 3
        assert d.low == pytest.approx(0.0, abs=1e-12) and d.high == pytest.approx(0.0, abs=1e-12)
    other = {c: new[(c + 4) % 10] for c in new}  # each class's "old" prototype: another class
    moved = drift(handle, other, new)
    natural = {c: images[labels == c][3:6] for c in new}  # other images of the same class
    varied = drift(handle, natural, new)
    for c in new:
        for d in (moved[c], varied[c]):
            assert 0.0 <= d.low <= d.high <= 1.0
            assert all(v is None or 0.0 <= v <= 1.0 for v in d.layers.values())
            assert all(d.reasons[k] for k, v in d.layers.items() if v is None)
    mean = {k: sum(d[c].drift for c in new) / 10 for k, d in (("moved", moved), ("varied", varied))}
    assert mean["moved"] > 0.6 and mean["varied"] < 0.45 and mean["moved"] > mean["varied"] + 0.2


def test_a_layer_where_every_class_looks_alike_says_nothing(handle):
    """When other classes' prototypes are the same image as this class's, the scale is 0:
    no layer is normalised (the old drift divided by ~0 there)."""
    g = torch.Generator().manual_seed(4)
    base = torch.rand(1, 3, 32, 32, generator=g)
    new = {c: base.clone() for c in range(3)}
    old = {c: torch.rand(1, 3, 32, 32, generator=g) for c in range(3)}
    out = drift(handle, old, new)
    for d in out.values():
        assert d.drift is None and d.reason == "NO_DETERMINATE_LAYER"
        assert set(d.reasons.values()) <= {"SPAN_NOT_POSITIVE", "SPAN_UNRESOLVED", "UNDEFINED"}


def _check(drift_value, interval, *, path=None, path_interval=None) -> ClassCheck:
    score = None
    if path is not None:
        low, high = path_interval or (None, None)
        score = {"path_similarity": path, "path_similarity_low": low, "path_similarity_high": high}
    protos = ClassPrototypes(0, torch.zeros(1, 3, 2, 2), [b""], [0.99], [score])
    return ClassCheck(0, "cat", protos, baseline=protos, drift=drift_value, drift_interval=interval)


def test_flags_and_rules_need_the_interval_to_clear_the_threshold():
    policy = Policy(max_drift=0.5, min_path_similarity=0.3)
    unclear = _check(0.7, (0.3, 0.9), path=0.1, path_interval=(-0.2, 0.45))
    clear = _check(0.7, (0.55, 0.9), path=0.1, path_interval=(-0.2, 0.25))
    assert flags_for(unclear, policy) == []
    assert flags_for(clear, policy) == ["low_path_similarity", "drift"]
    names = ("cat",)
    for item, status in ((unclear, "pass"), (clear, "fail")):
        rules = evaluate(policy, [item], has_baseline=True, resolve=lambda v: 0, names=names)
        assert {r.rule: r.status for r in rules} == {
            "max_drift": status,
            "min_path_similarity": status,
        }
    failed = evaluate(policy, [clear], has_baseline=True, resolve=lambda v: 0, names=names)
    assert any("0.700 [0.550, 0.900]" in r.message for r in failed)
    doc = clear.to_dict()
    assert doc["drift_interval"] == [0.55, 0.9]
    assert doc["new"]["path_similarity_interval"] == [-0.2, 0.25]
    low, high = doc["path_similarity_change_interval"]
    assert low < 0.0 == doc["path_similarity_change"] < high  # same prototypes: no change
    assert math.isclose(high - low, 2 * math.hypot(0.25 - 0.1, 0.3), rel_tol=1e-3)
