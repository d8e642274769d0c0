"""Score results: JSON round trip, no made-up numbers, and the per-prototype plot."""

from __future__ import annotations

import json
import math

import pytest
import torch
from PIL import Image
from protolens_server.engine import GenerationConfig, generate
from protolens_server.engine import _scores as sc
from protolens_server.engine._scores import PrototypeScores
from protolens_server.plots import plot_scores
from protolens_server.scoring import score_prototypes


def test_to_dict_is_json_and_round_trips(handle, reference_folder, tmp_path):
    protos = generate(handle, [1, (2, 5)], GenerationConfig(steps=8, equidistant_steps=2), seed=0)
    scores = score_prototypes(
        handle, protos, reference_folder, robustness_samples=2, cache_dir=tmp_path
    )
    for s in scores:
        d = json.loads(json.dumps(s.to_dict(), allow_nan=False))
        assert PrototypeScores.from_dict(d).to_dict() == d
        n = len(d["layers"])
        for metric in sc.METRICS:
            for part in sc.METRIC_PARTS:
                key = metric if part == "value" else f"{metric}_{part}"
                assert len(d[key]) == n
    assert scores[1].target == (2, 5) and scores[1].target_kind == "hybrid"


def test_undefined_numbers_are_none_not_invented():
    labels = torch.tensor([0, 0, 1, 1])
    constant = torch.ones(4, 6)  # no rank correlation exists for a constant vector
    stats = sc.reference_stats({"flat": constant, "logits": torch.randn(4, 2)}, labels)
    (flat, _) = sc.layer_scores({"flat": torch.ones(6), "logits": torch.randn(2)}, [0], stats)
    assert flat.spearman.value is None and flat.spearman.normalised is None
    assert flat.l1.value == 0.0 and flat.l1.normalised is None  # same and other levels coincide
    assert all(math.isnan(float(v)) for v in stats.levels["same"]["spearman"]["flat"])


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
    assert (ra["runner_up"], ra["samples"]) == (rb["runner_up"], rb["samples"])
    for key in ("probability", "probability_mean", "probability_min", "logit_margin"):
        assert ra[key] == pytest.approx(rb[key], rel=1e-5, abs=1e-6), key
    assert a["spearman"] == pytest.approx(b["spearman"], abs=1e-6)


def test_robustness_uses_the_engine_transforms_in_model_space(handle, shapenet):
    from protolens_server.engine import _transforms
    from protolens_server.engine._seeds import derive_seed

    (proto,) = generate(handle, [4], GenerationConfig(steps=8, equidistant_steps=2), seed=0)
    with torch.no_grad():
        logits = shapenet(handle.input_spec.normalise(proto.image[None]))
    (none,) = sc.robustness(handle, proto.image[None], [proto.target], logits, transforms="none")
    assert none.probability_mean == pytest.approx(none.probability, abs=1e-6)
    assert none.probability_min == pytest.approx(none.probability, abs=1e-6)

    seed = derive_seed("robustness", 0, proto.seed, proto.target.label(), proto.index)
    (medium,) = sc.robustness(
        handle, proto.image[None], [proto.target], logits, samples=8, seeds=[seed]
    )
    draws = torch.rand(
        (8, _transforms.preset("medium").n_draws), generator=torch.Generator().manual_seed(seed)
    )
    x = handle.input_spec.normalise(proto.image[None]).expand(8, -1, -1, -1)
    with torch.no_grad():
        p = torch.softmax(shapenet(_transforms.preset("medium")(x, draws)), dim=1)[:, 4]
    assert medium.probability_mean == pytest.approx(float(p.mean()), abs=1e-6)
    assert medium.probability_min == pytest.approx(float(p.min()), abs=1e-6)
