"""A model's temperature says nothing about what it has learned, so a check must not fail
a version for it: a version whose logits spread under one unit is read at the other
version's spread (``checks/comparison.py``), as the engine's convergence gate reads such
a model at unit spread.

Before, a copy of a clean model with its logits scaled down (a strongly tempered model,
a cosine head without its scale) failed the default policy's ``min_confidence`` on every
class and changed every class's entanglement: its own softmax on its prototypes was near
uniform although they are the same classifier's prototypes."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from checks_shortcut_models import CONFIG
from protolens_server.api.testkit import scaled_logits
from protolens_server.checks import comparison, run_check
from protolens_server.checks.policy import Policy
from protolens_server.checks.prototypes import GenerationStats
from protolens_server.checks.result import ModelRef
from protolens_server.checks.run import analyse
from protolens_server.engine import logit_spread

SPREAD = 0.05  # the tempered copy's logit spread over noise images


@pytest.fixture(scope="module")
def versions(catalog):
    clean = catalog.load("shapes@1")
    scale = SPREAD / logit_spread(clean)
    tempered = dataclasses.replace(
        clean,
        name="shapes-tempered",
        module=scaled_logits(clean.module, scale),
        digest=f"tempered-{scale:.6f}-{clean.digest}",
    )
    return clean, tempered


def test_a_tempered_version_is_read_at_the_other_version_s_spread(versions) -> None:
    clean, tempered = versions
    spread = logit_spread(clean)
    assert spread > 1.0 and logit_spread(tempered) == pytest.approx(SPREAD, rel=1e-3)
    assert comparison.reading_scales(tempered, clean) == pytest.approx((spread / SPREAD, 1.0))
    assert comparison.reading_scales(clean, tempered) == pytest.approx((1.0, spread / SPREAD))
    assert comparison.reading_scales(tempered) == pytest.approx((1 / SPREAD, 1.0))  # at a unit
    assert comparison.reading_scales(clean, clean) == (1.0, 1.0)  # as they are
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    scale = comparison.reading_scales(tempered, clean)[0]
    read = comparison.probabilities(tempered, images, scale)
    assert torch.allclose(read, comparison.probabilities(clean, images), atol=1e-4)


def test_the_same_prototypes_in_a_tempered_copy_read_as_in_the_clean_version(
    versions, tmp_path
) -> None:
    """What the check reads, apart from generation: the clean version's own prototypes,
    analysed as a tempered copy's against the clean version, pass the default policy with
    the clean version's confidences (before: every class low_confidence, p about 0.26)."""
    clean, tempered = versions
    policy = Policy.load("default")
    first = run_check(clean, baseline=clean, config=CONFIG, policy=policy, cache_dir=tmp_path)
    prototypes = {c.class_index: c.new for c in first.classes}
    result = analyse(
        tempered,
        prototypes,
        baseline_model=clean,
        baseline_prototypes=prototypes,
        policy=policy,
        model_ref=ModelRef("tempered", tempered.digest, "test"),
        baseline_ref=ModelRef("clean", clean.digest, "test"),
        config=CONFIG,
        seed=0,
        stats=GenerationStats(),
    )
    doc, before = result.to_dict(), first.to_dict()
    assert doc["passed"] and not doc["flagged_classes"], doc["rules"]
    for now, was in zip(doc["classes"], before["classes"], strict=True):
        assert now["confidence"] == pytest.approx(was["confidence"], abs=1e-3)
        assert now["entanglement"] == was["entanglement"]
        assert now["cross_scores"] == pytest.approx(was["cross_scores"], abs=1e-3)
    # the tempered model's own softmax on them, which the check read before
    with torch.no_grad():
        images = torch.cat([p.images for p in prototypes.values()])
        own = torch.softmax(tempered.module(tempered.input_spec.normalise(images)), dim=1)
    assert float(own.max()) < 0.5
