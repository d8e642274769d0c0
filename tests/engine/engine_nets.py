"""Tiny real models for engine tests: a 3-layer CNN with BatchNorm, 10 classes, 32x32."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from protolens_server.engine import GenerationConfig, InputSpec
from torch import nn

SPEC = InputSpec(3, 32, 32)


class TinyNet(nn.Module):
    """conv-BN-ReLU x3, global average pool, linear. Made on the spot, seeded."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for cin, cout, stride in ((3, 8, 1), (8, 16, 2), (16, 32, 2)):
            layers += [nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def tiny_net(seed: int = 0) -> TinyNet:
    """A seeded TinyNet whose logits respond to its input.

    He-initialised convolutions, and BatchNorm running statistics measured on
    random images (as training would leave them), so activations neither vanish
    nor explode and the classes are separable by optimising the input.
    """
    torch.manual_seed(seed)
    net = TinyNet()
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    nn.init.normal_(net.head.weight, std=1.0)
    net.train()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the calibration batches
    with torch.no_grad():
        for _ in range(4):
            smooth = F.interpolate(torch.rand(16, 3, 8, 8), size=32, mode="bilinear")
            net(SPEC.normalise(smooth))
    return net.eval().requires_grad_(False)


# Small and quick, but every term on: the base for most engine tests. A fixed rate
# (the learning-rate finder has its own tests) keeps them from probing per model.
FAST = GenerationConfig(
    steps=12, lr=0.05, equidistant_steps=4, progress_every=4, max_batch=32, transforms="none"
)
