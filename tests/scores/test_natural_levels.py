"""Natural held-out images: near 1 for their class (inside their interval), near 0 for others,
and the intervals cover what a much larger reference set would have said."""

from __future__ import annotations

import numpy as np
import pytest
from protolens_server.engine import capture, layers_of, reference_stats, score_activations
from scores_synthetic import make_dataset


@pytest.fixture(scope="module")
def held_out(handle, reference_data):
    ref_x, ref_y = reference_data
    layer_set = layers_of(handle)
    stats = reference_stats(capture(handle, ref_x, layer_set), ref_y)
    held_x, held_y = make_dataset(8, seed=777)  # never seen by the model or the reference set
    acts = capture(handle, held_x, layer_set)
    return layer_set, stats, acts, held_y.tolist()


def test_held_out_same_class_scores_one_within_its_interval(held_out):
    _, stats, acts, labels = held_out
    same = score_activations(acts, labels, stats)
    other = score_activations(acts, [(c + 1) % 10 for c in labels], stats)
    other += score_activations(acts, [(c + 5) % 10 for c in labels], stats)
    same_mean = float(np.mean([s.path_similarity for s in same]))
    other_mean = float(np.mean([s.path_similarity for s in other if s.path_similarity is not None]))
    print(f"held-out natural images: same class {same_mean:.3f}, other classes {other_mean:.3f}")
    assert 0.9 < same_mean < 1.1 and -0.2 < other_mean < 0.2
    for c in range(10):  # each class's images: their mean interval holds 1 and their mean
        mine = [s for s, label in zip(same, labels, strict=True) if label == c]
        low = np.mean([s.summary.low for s in mine])
        high = np.mean([s.summary.high for s in mine])
        mean = np.mean([s.path_similarity for s in mine])
        assert low <= 1.0 <= high and low <= mean <= high, (c, low, mean, high)


def test_intervals_cover_the_value_of_a_large_reference_set(handle, held_out):
    """The same images scored against 150 images per class (close to the population value):
    the 95% intervals from 16 per class contain it for most layers and images."""
    layer_set, stats, acts, labels = held_out
    big_x, big_y = make_dataset(150, seed=99)
    big = reference_stats(capture(handle, big_x, layer_set), big_y, resamples=20)
    small = score_activations(acts, labels, stats)
    large = score_activations(acts, labels, big)
    covered = [
        a.spearman.normalised_low <= b.spearman.normalised <= a.spearman.normalised_high
        for s, p in zip(small, large, strict=True)
        for a, b in zip(s.layers, p.layers, strict=True)
        if a.spearman.normalised is not None and b.spearman.normalised is not None
    ]
    print(f"coverage of the large-set value: {np.mean(covered):.2f} over {len(covered)}")
    assert len(covered) >= 200 and np.mean(covered) >= 0.8
