"""Feature isolation: the mask lands on the evidence, keeps the class and removing it loses
the class; deterministic; bad input fails early with a domain error."""

from __future__ import annotations

import pytest
import torch
from protolens_server.engine import Classifier, InputSpec, IsolationConfig, isolate
from protolens_server.errors import InvalidArgument, UnknownClass
from torch import nn

SIZE, PATCH = 32, (slice(12, 20), slice(4, 12))
FAST = IsolationConfig(steps=48)


@pytest.fixture(scope="module")
def patch_model() -> Classifier:
    """Class 1 reads the mean red-minus-green/blue of one 8x8 place, with a bias that needs
    most of a red patch there; class 0 is a constant: the evidence for class 1 has one
    place (a linear model on the flattened image)."""
    lin = nn.Linear(3 * SIZE * SIZE, 2)
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.zero_()
        w = torch.zeros(3, SIZE, SIZE)
        w[0][PATCH], w[1][PATCH], w[2][PATCH] = 1.0, -0.5, -0.5
        lin.weight[1] = 4 * w.flatten() / 64  # 4 x the patch mean: +12.8 for a full red patch
        lin.bias[1] = -6.4
    net = nn.Sequential(nn.Flatten(), lin).eval()
    return Classifier(net, InputSpec(3, SIZE, SIZE, (0.5,), (0.25,)), 2)


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = 0.3 + 0.3 * torch.rand(3, SIZE, SIZE, generator=g)
    x[:, PATCH[0], PATCH[1]] = torch.tensor([0.9, 0.1, 0.1]).view(3, 1, 1)
    return x


def test_mask_lands_on_the_evidence(patch_model: Classifier, image: torch.Tensor) -> None:
    found = isolate(patch_model, image, 1, FAST, seed=0)
    mask = found.mask[0]
    on_patch = float(mask[PATCH].sum() / mask.sum())
    assert on_patch > 0.4, on_patch  # the patch is 6.25% of the image
    assert found.mask_mean < 0.25
    assert found.probability > 0.9 and found.probability_kept > 0.9
    assert found.probability_removed < 0.5 * found.probability
    assert tuple(found.isolated.shape) == (4, SIZE, SIZE)
    assert torch.equal(found.isolated[3:], found.mask) and torch.equal(found.isolated[:3], image)


def test_isolation_is_deterministic(patch_model: Classifier, image: torch.Tensor) -> None:
    config = IsolationConfig(steps=12)
    a = isolate(patch_model, image, 1, config, seed=3)
    assert torch.equal(a.mask, isolate(patch_model, image, 1, config, seed=3).mask)
    assert not torch.equal(a.mask, isolate(patch_model, image, 1, config, seed=4).mask)


def test_bad_input_fails_early(patch_model: Classifier, image: torch.Tensor) -> None:
    with pytest.raises(InvalidArgument, match="the model takes"):
        isolate(patch_model, image[:, :16], 1)
    with pytest.raises(UnknownClass):
        isolate(patch_model, image, 2)
    with pytest.raises(InvalidArgument, match=r"config\.sparsity"):
        IsolationConfig(sparsity=-1)
    with pytest.raises(InvalidArgument, match="not an isolation option"):
        IsolationConfig.from_dict({"alpha": True})
