"""BatchNorm folding (engine/_fold.py): the same function and prior, a copy, safe fallbacks."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from engine_nets import FAST, SPEC, tiny_net
from protolens_server.engine import Classifier, generate
from protolens_server.engine._fold import FoldedBatchNorm, folded
from protolens_server.engine._probes import LayerProbe
from torch import nn


class SamePaddingConv(nn.Conv2d):
    """A Conv2d subclass calling F.conv2d itself (as EfficientNet's static-padding conv
    does): fx traces through it, so the fold must handle the functional form."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (1, 1, 1, 1)), self.weight, self.bias, self.stride)


class MixedNet(nn.Module):
    """Module conv + BN, functional conv + BN (no bias), a conv feeding two layers (not
    foldable), and a BN after a non-conv (not foldable)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c2, self.b2 = SamePaddingConv(8, 8, 3, bias=False), nn.BatchNorm2d(8)
        self.c3, self.b3 = nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8)
        self.b4 = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.b1(self.c1(x)))
        x = F.relu(self.b2(self.c2(x)))
        y = self.c3(x)
        x = F.relu(self.b3(y)) + y  # c3's output has two users: not foldable
        x = self.b4(x * 2)  # a BN after an elementwise op: not foldable
        return self.head(x.mean(dim=(2, 3)))


def _calibrated(net: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    net.train()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = None
                nn.init.uniform_(m.weight, 0.5, 1.5)
                nn.init.uniform_(m.bias, -0.2, 0.2)
        for _ in range(3):
            net(torch.randn(8, 3, 16, 16))
    return net.eval().requires_grad_(False)


def test_folded_model_computes_the_same_logits_and_leaves_the_original_alone() -> None:
    net = _calibrated(MixedNet())
    before = copy.deepcopy(net.state_dict())
    fast = folded(net)
    assert fast is not net
    assert sum(isinstance(m, FoldedBatchNorm) for m in fast.modules()) == 2  # b1, b2
    x = torch.randn(4, 3, 16, 16)
    assert torch.allclose(fast(x), net(x), atol=1e-5)
    assert folded(net) is fast  # folded once per model, then cached
    after = net.state_dict()  # the caller's module is unchanged
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 4


def test_the_prior_sees_the_same_batchnorm_input_statistics() -> None:
    net = tiny_net()
    fast = folded(net)
    assert sum(isinstance(m, FoldedBatchNorm) for m in fast.modules()) == 3
    x = SPEC.normalise(torch.rand(3, 3, 32, 32))
    stats = []
    for model in (net, fast):
        with LayerProbe(model, batchnorm=True, features=False) as probe:
            model(x)
            stats.append(probe.take()[1])
    assert len(stats[0]) == len(stats[1]) == 3
    for plain, fold in zip(*stats, strict=True):
        for a, b in zip(plain, fold, strict=True):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def test_a_dead_channel_is_left_unfolded() -> None:
    net = tiny_net()
    with torch.no_grad():
        net.features[1].weight[3] = 0.0  # gamma 0: the BN input is not recoverable
    fast = folded(net)
    assert isinstance(fast.get_submodule("features.1"), nn.BatchNorm2d)
    assert sum(isinstance(m, FoldedBatchNorm) for m in fast.modules()) == 2
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(fast(x), net(x), atol=1e-5)


class Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent control flow: fx cannot trace it
            x = x * 1.0
        return self.head(self.bn(self.conv(x)).mean(dim=(2, 3)))


def test_untraceable_and_scripted_models_run_as_they_are() -> None:
    net = Untraceable().eval()
    assert folded(net) is net
    scripted = torch.jit.script(tiny_net())
    assert folded(scripted) is scripted
    assert folded(lambda x: x) is not None  # a plain callable passes through


@pytest.mark.parametrize("bn_prior", [0.0, 0.05])
def test_generate_with_folding_makes_the_unfolded_prototypes(bn_prior: float) -> None:
    model = Classifier(tiny_net(), SPEC, 10)
    config = replace(FAST, bn_prior=bn_prior)
    plain = generate(model, [1, 4, 7], config, seed=3, fold_batchnorm=False)
    fast = generate(model, [1, 4, 7], config, seed=3)  # folding is the default
    for p, q in zip(plain, fast, strict=True):
        assert abs(p.probability - q.probability) < 1e-3
        assert torch.allclose(p.image, q.image, atol=2e-3)


class InplaceNet(nn.Module):
    """conv-BN-ReLU(inplace=True), as torchvision's ResNets are: after folding, the
    ReLU would overwrite the tensor the prior's moments keep for their backward."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
            nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
        )  # fmt: skip
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def test_inplace_activation_after_a_folded_batchnorm_with_the_prior() -> None:
    torch.manual_seed(0)
    net = _calibrated(InplaceNet())
    model = Classifier(net, SPEC, 10)
    config = replace(FAST, bn_prior=0.05, bn_prior_every=1)
    plain = generate(model, [2, 5], config, seed=1, fold_batchnorm=False)
    fast = generate(model, [2, 5], config, seed=1)
    assert sum(isinstance(m, FoldedBatchNorm) for m in folded(net).modules()) == 2
    # (rounding: Adam's first steps are sign-like, so 1e-7 differences can reach ~5e-3
    # on a few pixels for some weights, as between batch sizes; docs/engine.md)
    for p, q in zip(plain, fast, strict=True):
        assert abs(p.probability - q.probability) < 1e-3
        assert torch.allclose(p.image, q.image, atol=1e-2)
