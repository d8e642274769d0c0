"""The robustness score replays the engine's own transforms, seeded, in model space.

An engine-internal unit test: it imports ``_robustness``, ``_transforms`` and ``_seeds``
because what it checks is that robustness draws exactly the transform the engine
optimises under (same preset, same draws from the same seed), which no public
verb exposes. Everything else about scores is tested through the public API
(tests/scores).
"""

from __future__ import annotations

import pytest
import torch
from protolens_server.engine import _transforms
from protolens_server.engine._robustness import robustness
from protolens_server.engine._seeds import derive_seed


def test_robustness_uses_the_engine_transforms_in_model_space(tiny):
    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, 32, 32, generator=g)
    with torch.no_grad():
        logits = tiny.module(tiny.input_spec.normalise(image[None]))
    (none,) = robustness(tiny, image[None], [(4,)], logits, transforms="none", samples=3)
    assert none.transform_samples == 3 and none.transforms == "none"
    assert none.probability_mean_over_transforms == pytest.approx(none.probability, abs=1e-6)
    assert none.probability_min_over_transforms == pytest.approx(none.probability, abs=1e-6)

    seed = derive_seed("robustness", 0, 7, "4", 0)
    (medium,) = robustness(tiny, image[None], [(4,)], logits, samples=8, seeds=[seed])
    draws = torch.rand(
        (8, _transforms.preset("medium").n_draws), generator=torch.Generator().manual_seed(seed)
    )
    x = tiny.input_spec.normalise(image[None]).expand(8, -1, -1, -1)
    with torch.no_grad():
        p = torch.softmax(tiny.module(_transforms.preset("medium")(x, draws)), dim=1)[:, 4]
    assert medium.probability_mean_over_transforms == pytest.approx(float(p.mean()), abs=1e-6)
    assert medium.probability_min_over_transforms == pytest.approx(float(p.min()), abs=1e-6)
    assert medium.probability == pytest.approx(
        float(torch.softmax(logits, dim=1)[0, 4]), abs=1e-6
    )  # the untransformed view, named apart from the draws
