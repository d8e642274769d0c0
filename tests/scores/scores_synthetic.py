"""A synthetic 10-class image set (coloured shapes and textures, 32x32) and a small CNN.

Used by the score tests and by ``bench/eval_path_similarity.py``: the class is
the *shape* (disc, square, ring, stripes, checks, ...); colours, position, size
and frequency are random, so the network must learn shape features. Everything
is generated from a seed: no files, no downloads.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path

import torch
from PIL import Image
from protolens_server.engine.types import InputSpec
from protolens_server.models._digest import model_digest, state_dict_sha256
from protolens_server.models.handle import ModelHandle
from torch import nn

CLASSES = (
    "disc",
    "square",
    "ring",
    "horizontal stripes",
    "vertical stripes",
    "checkerboard",
    "cross",
    "diagonal stripes",
    "triangle",
    "dots",
)
SIZE = 32
SPEC = InputSpec(3, SIZE, SIZE, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """One intra-op thread: on a small, shared CPU two threads fighting other
    processes make these tiny models ten times slower, not faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _masks(labels: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """(N, H, W) foreground masks in {0, 1} for each image's class."""
    n = labels.shape[0]
    coords = (torch.arange(SIZE, dtype=torch.float32) + 0.5) / SIZE * 2 - 1  # [-1, 1]
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    y, x = y[None], x[None]

    def u(lo: float, hi: float) -> torch.Tensor:
        return (lo + (hi - lo) * torch.rand(n, generator=g)).view(n, 1, 1)

    cx, cy, r = u(-0.3, 0.3), u(-0.3, 0.3), u(0.35, 0.65)
    freq, phase = u(2.5, 4.5), u(0, 2 * math.pi)
    dx, dy = x - cx, y - cy
    dist = (dx**2 + dy**2).sqrt()
    shapes = [
        dist < r,  # disc
        (dx.abs() < r * 0.85) & (dy.abs() < r * 0.85),  # square
        (dist < r) & (dist > r * 0.55),  # ring
        torch.sin(y * freq * math.pi + phase) > 0,  # horizontal stripes
        torch.sin(x * freq * math.pi + phase) > 0,  # vertical stripes
        (torch.sin(x * freq * math.pi + phase) * torch.sin(y * freq * math.pi + phase)) > 0,
        ((dx.abs() < r * 0.25) | (dy.abs() < r * 0.25)) & (dist < r * 1.2),  # cross
        torch.sin((x + y) * freq * math.pi * 0.7 + phase) > 0,  # diagonal stripes
        (dy < r * 0.7) & (dy > -r * 0.9 + 1.8 * dx.abs()),  # triangle
        torch.sin(x * freq * 1.3 * math.pi + phase) * torch.sin(y * freq * 1.3 * math.pi + phase)
        > 0.55,  # dots
    ]
    stacked = torch.stack([s.expand(n, SIZE, SIZE) for s in shapes], dim=1).float()
    return stacked[torch.arange(n), labels]


def make_dataset(
    per_class: int, seed: int = 0, classes: int = len(CLASSES)
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3, 32, 32) images in [0, 1] and (N,) labels, class-interleaved."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat(per_class)
    n = labels.shape[0]
    mask = _masks(labels, g)[:, None]
    fg = torch.rand(n, 3, 1, 1, generator=g)
    bg = torch.rand(n, 3, 1, 1, generator=g)
    # keep foreground and background apart so the shape is always visible
    too_close = (fg - bg).abs().sum(dim=1, keepdim=True) < 0.6
    bg = torch.where(too_close, 1 - fg, bg)
    images = mask * fg + (1 - mask) * bg
    images = images + 0.04 * torch.randn(images.shape, generator=g)
    return images.clamp(0, 1), labels


class ConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))


class ShapeNet(nn.Module):
    """Four conv blocks, global average pool, linear: default layers block1..4, logits."""

    def __init__(self, classes: int = len(CLASSES)) -> None:
        super().__init__()
        self.block1 = ConvBlock(3, 16, 2)
        self.block2 = ConvBlock(16, 32, 2)
        self.block3 = ConvBlock(32, 32, 1)
        self.block4 = ConvBlock(32, 64, 2)
        self.head = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block4(self.block3(self.block2(self.block1(x))))
        return self.head(x.mean(dim=(2, 3)))


def train_shapenet(
    per_class: int = 200, epochs: int = 10, seed: int = 0, classes: int = len(CLASSES)
) -> tuple[ShapeNet, float]:
    """A ShapeNet trained on a fresh synthetic set; returns (eval-mode model, held-out accuracy)."""
    torch.manual_seed(seed)
    images, labels = make_dataset(per_class, seed=seed, classes=classes)
    net = ShapeNet(classes)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    x_all = SPEC.normalise(images)
    g = torch.Generator().manual_seed(seed + 1)
    for _ in range(epochs):
        net.train()
        order = torch.randperm(len(labels), generator=g)
        for start in range(0, len(order), 64):
            idx = order[start : start + 64]
            loss = nn.functional.cross_entropy(net(x_all[idx]), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval().requires_grad_(False)
    test_x, test_y = make_dataset(20, seed=seed + 10_000, classes=classes)
    with torch.no_grad():
        accuracy = float((net(SPEC.normalise(test_x)).argmax(1) == test_y).float().mean())
    return net, accuracy


def handle_for(module: object, net: torch.nn.Module, fmt: str = "eager") -> ModelHandle:
    digest = model_digest(state_dict_sha256(net.state_dict(), f"shapenet/{fmt}"), SPEC)
    return ModelHandle(
        name="shapenet",
        source=f"test:shapenet/{fmt}",
        module=module,  # type: ignore[arg-type]
        input_spec=SPEC,
        class_names=CLASSES,
        digest=digest,
        format=fmt,  # type: ignore[arg-type]
    )


def write_png(image: torch.Tensor, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    array = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    Image.fromarray(array).save(path)
