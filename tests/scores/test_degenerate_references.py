"""Reference sets that cannot support a score give nulls with reasons or a clear error, never a
confident number: two near-identical classes, a negative span, one class, too few images."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch
from protolens_server.engine import (
    REASONS,
    GenerationConfig,
    generate,
    reference_stats,
    score_activations,
)
from protolens_server.errors import InvalidArgument, ReferenceSetError
from protolens_server.scores.references import ReferenceSet
from protolens_server.scores.scoring import score_prototypes
from protolens_server.scores.statistics import reference_statistics
from scores_synthetic import make_dataset, write_png


def _old_normalisation(d: dict, metric: str) -> list[float]:
    """What the scores said before significance: the ratio wherever the span was not ~0."""
    out = []
    for v, s, o in zip(
        d[metric], d[f"{metric}_natural_same"], d[f"{metric}_natural_other"], strict=True
    ):
        if None not in (v, s, o) and abs(s - o) >= 1e-12:
            out.append((v - o) / (s - o))
    return out


def test_two_near_identical_classes_give_nulls_with_reasons(handle, tmp_path):
    """Discs split into two "classes": nothing separates them, so no layer may be normalised."""
    images, labels = make_dataset(24, seed=55)
    discs = images[labels == 0]
    root = tmp_path / "refs"
    for i, image in enumerate(discs):
        write_png(image, root / ("0" if i < 12 else "1") / f"{i:02d}.png")
    protos = generate(handle, [0, 1], GenerationConfig(steps=16, equidistant_steps=2), seed=0)
    scores = score_prototypes(handle, protos, root, robustness_samples=0, cache_dir=tmp_path)
    wild = 0.0
    for s in scores:
        d = s.to_dict()
        for metric in ("spearman", "cosine", "l1"):
            wild = max(wild, *(abs(v) for v in _old_normalisation(d, metric)))
            for value, reason in zip(d[f"{metric}_normalised"], d[f"{metric}_reason"], strict=True):
                assert value is None or abs(value) <= 5, (metric, value)
                assert (value is None) == bool(reason) and (not reason or reason in REASONS)
        nulls = sum(v is None for v in d["spearman_normalised"])
        assert nulls >= len(d["layers"]) - 1, d["spearman_reason"]
        assert s.path_similarity is None or abs(s.path_similarity) <= 5
        if s.path_similarity is None:
            assert d["path_similarity_reason"] == "NO_DETERMINATE_LAYER"
            assert (
                "does not separate this class at any layer" in d["reasons"]["NO_DETERMINATE_LAYER"]
            )
    print(f"largest |normalised| before significance: {wild:.1f}")
    assert wild > 5  # the old normalisation printed nonsense here


def test_a_negative_span_is_not_normalised():
    """Class 0's images scatter widely; class 1's sit at class 0's mean: other-class images are
    closer to the class mean than its own, so "1 = like the class" would flip its sign."""
    g = torch.Generator().manual_seed(3)
    centre = torch.randn(32, generator=g).abs() + 1
    own = centre + 2.0 * torch.randn(10, 32, generator=g)
    near = centre + 0.05 * torch.randn(10, 32, generator=g)
    labels = torch.tensor([0] * 10 + [1] * 10)
    acts = {"layer": torch.cat([own, near]), "logits": torch.randn(20, 2, generator=g)}
    stats = reference_stats(acts, labels)
    item = {
        "layer": (centre + 0.5 * torch.randn(32, generator=g))[None],
        "logits": acts["logits"][:1],
    }
    (scores,) = score_activations(item, [0], stats)
    layer = scores.layers[0]
    for metric in ("spearman", "cosine", "l1"):
        m = layer.metric(metric)
        assert m.normalised is None and m.reason == "SPAN_NOT_POSITIVE", metric
        assert m.normalised_low is None and m.span_z < 0
    closer = layer.spearman.natural_other > layer.spearman.natural_same
    assert closer and (layer.l1.natural_other < layer.l1.natural_same)


def test_a_single_class_is_a_clear_error_not_a_score(handle, reference_folder, tmp_path):
    only = tmp_path / "only"
    shutil.copytree(reference_folder / "3", only / "3")
    refset = ReferenceSet.from_folder(only, handle.class_names)
    with pytest.raises(ReferenceSetError) as err:
        reference_statistics(handle, refset, cache_dir=tmp_path)
    assert isinstance(err.value, InvalidArgument) and err.value.reason == "BAD_REFERENCE_SET"
    message = str(err.value)
    assert "1 class(es)" in message and "at least 2 classes with 3 images each" in message
    assert "recommended" in message
    with pytest.raises(ReferenceSetError, match="at least 2 classes"):
        reference_stats({"logits": torch.randn(5, 3)}, torch.zeros(5, dtype=torch.long))


def test_too_few_images_per_class_is_a_clear_error(handle, reference_folder, tmp_path):
    root = Path(shutil.copytree(reference_folder, tmp_path / "refs"))
    for extra in sorted((root / "1").glob("*.png"))[2:]:
        extra.unlink()
    with pytest.raises(ReferenceSetError) as err:
        ReferenceSet.from_folder(root, handle.class_names).check_usable()
    message = str(err.value)
    assert (
        str(root / "1") in message and "class 1 has only 2 image(s); add at least 1 more" in message
    )
    assert err.value.metadata["missing_class"] == "1"
    labels = torch.tensor([0, 0, 1, 1, 1])
    with pytest.raises(ReferenceSetError, match="class 0 has only 2 image"):
        reference_stats({"logits": torch.randn(5, 3)}, labels)


def test_nan_never_leaks_into_an_interval():
    labels = torch.arange(3).repeat_interleave(4)
    acts = {"logits": torch.nn.functional.one_hot(labels, 3).float() + 0.1 * torch.randn(12, 3)}
    stats = reference_stats(acts, labels)
    (scores,) = score_activations({"logits": acts["logits"][:1]}, [0], stats)
    s = scores.summary
    assert s.value is not None and s.low is not None and s.high is not None
    assert all(math.isfinite(v) for v in (s.value, s.low, s.high))
