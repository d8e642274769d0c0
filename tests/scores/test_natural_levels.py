"""On the normalised scale, natural held-out images of a class score near 1, others near 0."""

from __future__ import annotations

import numpy as np
from protolens_server.engine import _activations, _scores
from scores_synthetic import make_dataset


def test_held_out_same_class_near_one_other_classes_near_zero(handle, reference_data):
    ref_x, ref_y = reference_data
    layer_set = _activations.resolve_layers(handle)
    stats = _scores.reference_stats(_activations.capture(handle, ref_x, layer_set), ref_y)
    held_x, held_y = make_dataset(8, seed=777)  # never seen by the model or the reference set
    acts = _activations.capture(handle, held_x, layer_set)
    same, other = [], []
    for i, label in enumerate(held_y.tolist()):
        one = {name: value[i] for name, value in acts.items()}
        same.append(_scores.path_similarity(_scores.layer_scores(one, [label], stats)))
        for wrong in (label + 1) % 10, (label + 5) % 10:
            other.append(_scores.path_similarity(_scores.layer_scores(one, [wrong], stats)))
    same_mean, other_mean = float(np.mean(same)), float(np.mean(other))
    print(f"held-out natural images: same class {same_mean:.3f}, other classes {other_mean:.3f}")
    assert 0.8 < same_mean < 1.2
    assert -0.2 < other_mean < 0.2
