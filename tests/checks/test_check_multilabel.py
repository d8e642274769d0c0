"""A registry check's cross-scores and entanglement read a multi-label model's own
probability per label (its sigmoid), as the prototypes report it, not a softmax."""

from __future__ import annotations

import pytest
import torch
from protolens_server.api.testkit import multilabel_net
from protolens_server.checks import comparison
from protolens_server.engine import Classifier, InputSpec

SPEC = InputSpec(3, 16, 16, mean=(0.5,), std=(0.25,))


def test_cross_scores_of_a_multi_label_model_are_its_own_sigmoids() -> None:
    net = multilabel_net(sigmoid=False, steps=20)
    images = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = net(SPEC.normalise(images))
    multi = comparison.probabilities(Classifier(net, SPEC, 4, multi_label=True), images)
    single = comparison.probabilities(Classifier(net, SPEC, 4), images)
    assert torch.allclose(multi, torch.sigmoid(logits), atol=1e-5)
    assert torch.allclose(single, torch.softmax(logits, dim=1), atol=1e-5)
    got = comparison.target_probability(Classifier(net, SPEC, 4, multi_label=True), images, 1)
    assert got == pytest.approx(float(torch.sigmoid(logits[:, 1]).mean()), abs=1e-5)
