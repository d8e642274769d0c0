"""Score results: JSON round trip, no made-up numbers, clear robustness names, the plot."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from PIL import Image
from protolens_server.engine import (
    METRICS,
    REASONS,
    SCORES_VERSION,
    GenerationConfig,
    MetricScores,
    PrototypeScores,
    generate,
    reference_stats,
    score_activations,
)
from protolens_server.plots import plot_scores
from protolens_server.scores.scoring import score_prototypes
from scores_synthetic import make_dataset, write_png

PARTS = [f.name for f in dataclasses.fields(MetricScores)]


def test_to_dict_is_json_and_round_trips(handle, reference_folder, tmp_path):
    protos = generate(handle, [1, (2, 5)], GenerationConfig(steps=8, equidistant_steps=2), seed=0)
    scores = score_prototypes(
        handle, protos, reference_folder, robustness_samples=2, cache_dir=tmp_path
    )
    for s in scores:
        d = json.loads(json.dumps(s.to_dict(), allow_nan=False))
        assert PrototypeScores.from_dict(d).to_dict() == d
        n = len(d["layers"])
        for metric in METRICS:
            for part in PARTS:
                key = metric if part == "value" else f"{metric}_{part}"
                assert len(d[key]) == n
        assert d["version"] == SCORES_VERSION and d["statistics"]["confidence"] == 0.95
        assert d["caveats"] == []  # the synthetic set is colour, without copies
        assert set(d["reasons"]) <= set(REASONS)
    assert scores[1].target == (2, 5) and scores[1].target_kind == "hybrid"


def test_version_1_records_still_read():
    """Results cached before intervals existed: read, with their missing parts None."""
    old = {
        "version": 1, "target": [3], "target_kind": "class", "layers_available": True,
        "reason": "", "layers": ["a", "logits"], "path_similarity": 0.4,
        **{f"spearman{s}": [0.1, 0.2] for s in ("", "_other", "_normalised")},
        "robustness": {
            "samples": 4, "transforms": "medium", "probability": 0.9, "probability_mean": 0.8,
            "probability_min": 0.7, "logit_margin": 2.0, "runner_up": 1,
        },
    }  # fmt: skip
    scores = PrototypeScores.from_dict(old)
    assert scores.path_similarity == 0.4 and scores.summary.low is None
    assert scores.layers[1].spearman.normalised == 0.2
    assert scores.layers[1].spearman.normalised_low is None
    assert scores.layers[0].cosine.value is None and scores.layers[0].spearman.reason == ""
    r = scores.robustness
    assert (r.transform_samples, r.probability_min_over_transforms) == (4, 0.7)


def test_undefined_numbers_are_none_not_invented():
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    constant = torch.ones(6, 6)  # no rank correlation exists for a constant vector
    stats = reference_stats({"flat": constant, "logits": torch.randn(6, 2)}, labels)
    (scores,) = score_activations(
        {"flat": torch.ones(1, 6), "logits": torch.randn(1, 2)}, [0], stats
    )
    flat = scores.layers[0]
    assert flat.spearman.value is None and flat.spearman.normalised is None
    assert flat.spearman.reason == "UNDEFINED" and flat.spearman.normalised_low is None
    assert flat.l1.value == 0.0 and flat.l1.normalised is None  # same and other levels coincide
    assert flat.l1.reason == "SPAN_NOT_POSITIVE"
    assert all(math.isnan(float(v)) for v in stats.levels["same"]["spearman"]["flat"])
    d = scores.to_dict()
    assert "UNDEFINED" in d["reasons"] and "does not separate" in d["reasons"]["SPAN_NOT_POSITIVE"]


def test_robustness_names_say_what_they_are(handle, reference_folder, tmp_path):
    (proto,) = generate(handle, [4], GenerationConfig(steps=8, equidistant_steps=2), seed=0)
    (scores,) = score_prototypes(
        handle, [proto], reference_folder, robustness_samples=6, cache_dir=tmp_path
    )
    r = scores.to_dict()["robustness"]
    assert set(r) == {
        "transform_samples", "transforms", "probability", "probability_mean_over_transforms",
        "probability_min_over_transforms", "logit_margin", "runner_up",
    }  # fmt: skip
    assert r["transform_samples"] == 6 and r["transforms"] == "medium"
    low, mean = r["probability_min_over_transforms"], r["probability_mean_over_transforms"]
    assert 0 <= low <= mean <= 1  # over the draws only: the untransformed view is apart
    (none,) = score_prototypes(
        handle, [proto], reference_folder, robustness_samples=0, cache_dir=tmp_path
    )
    assert none.robustness.probability_min_over_transforms is None
    assert none.robustness.probability == pytest.approx(r["probability"])


def test_plot_is_a_png(handle, reference_folder, tmp_path):
    (proto,) = generate(handle, [8], GenerationConfig(steps=8, equidistant_steps=2), seed=0)
    (scores,) = score_prototypes(handle, [proto], reference_folder, cache_dir=tmp_path)
    path = plot_scores(scores, tmp_path / "plot.png", title="triangle")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > 300 and im.height > 200


def test_scores_of_a_prototype_do_not_depend_on_its_batch(handle, reference_folder, tmp_path):
    protos = generate(handle, [3, 7], GenerationConfig(steps=8, equidistant_steps=2), seed=0)
    together = score_prototypes(handle, protos, reference_folder, cache_dir=tmp_path)
    (alone,) = score_prototypes(handle, protos[1:], reference_folder, cache_dir=tmp_path)
    a, b = together[1].to_dict(), alone.to_dict()
    ra, rb = a["robustness"], b["robustness"]
    assert (ra["runner_up"], ra["transform_samples"]) == (rb["runner_up"], rb["transform_samples"])
    for key in (
        "probability",
        "probability_mean_over_transforms",
        "probability_min_over_transforms",
        "logit_margin",
    ):
        assert ra[key] == pytest.approx(rb[key], rel=1e-5, abs=1e-6), key
    for key in ("spearman", "spearman_normalised_low", "path_similarity_high"):
        assert a[key] == pytest.approx(b[key], abs=1e-6), key


def test_intervals_travel_in_the_proto_and_the_sdk(handle, reference_folder, tmp_path):
    """The API's typed Scores fields and the SDK's Estimates carry the same numbers and nulls."""
    from protolens import _convert
    from protolens_server.api.convert import scores_to_pb

    images, labels = make_dataset(3, seed=8)
    root = tmp_path / "refs"
    for i, (image, label) in enumerate(zip(images, labels.tolist(), strict=True)):
        write_png(image, root / str(label) / f"{i}.png")  # 3 per class: few layers resolve
    (proto,) = generate(handle, [4], GenerationConfig(steps=8, equidistant_steps=2), seed=0)
    (scores,) = score_prototypes(handle, [proto], root, robustness_samples=2, cache_dir=tmp_path)
    d = scores.to_dict()
    msg = scores_to_pb(d, "refs")
    sdk = _convert.scores(msg)
    assert msg.determinate_layers == d["path_similarity_layers"] == sdk.determinate_layers
    assert (msg.confidence, msg.resamples) == (0.95, 200)
    head = sdk.path_similarity
    assert (head.value, head.low, head.high) == (
        d["path_similarity"],
        d["path_similarity_low"],
        d["path_similarity_high"],
    )
    assert len(sdk.layers) == len(d["layers"])
    for i, layer in enumerate(sdk.layers):
        assert (
            layer.value == d["spearman_normalised"][i] and layer.reason == d["spearman_reason"][i]
        )
        assert (layer.low, layer.high) == (
            d["spearman_normalised_low"][i],
            d["spearman_normalised_high"][i],
        )
    assert any(layer.value is None and layer.reason for layer in sdk.layers)  # nulls stay nulls
    assert sdk.robustness["probability_min_over_transforms"] == pytest.approx(
        d["robustness"]["probability_min_over_transforms"]
    )
    assert len(sdk.per_layer["spearman_normalised_low"]) == len(d["layers"])
