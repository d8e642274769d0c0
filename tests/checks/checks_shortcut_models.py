"""Two versions of a tiny 32x32 classifier trained in the test, the second with a shortcut.

Four synthetic classes (disc, bars, cross, ring) drawn on noise. Version 1 learns
them; version 2 is version 1 fine-tuned on data where every ``bars`` image carries a
red patch in a corner and half of them show no stripes at all, only the patch: the
patch is then the only reliable evidence for ``bars`` (a planted shortcut, like a
watermark that leaked into one class's training images). Each version is saved as
a ``torch.export`` program (``.pt2``) with a sidecar, in a versioned model store.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from protolens_server.checks import Policy
from protolens_server.engine import GenerationConfig
from torch import nn

CLASSES = ("disc", "bars", "cross", "ring")
SHORTCUT = 1  # "bars"
SIZE = 32
# Few steps on 32x32: every class of both versions reaches p > 0.9.
CONFIG = GenerationConfig(steps=32, prototypes=2, lr=0.1, transforms="small")
POLICY = Policy(min_confidence=0.5, max_drift=0.6, min_cross_confidence=0.5)


def make_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, len(CLASSES)),
    )


def _shape(cls: int, g: torch.Generator) -> torch.Tensor:
    """A (H, W) mask of class ``cls`` at a random place and size."""
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    cy, cx = (torch.randint(10, 22, (2,), generator=g)).tolist()
    r = int(torch.randint(5, 9, (1,), generator=g))
    d2 = (yy - cy) ** 2 + (xx - cx) ** 2
    if cls == 0:
        return (d2 <= r * r).float()
    if cls == 1:
        return ((yy // 3) % 2 == 0).float() * ((xx - cx).abs() <= r + 4).float()
    if cls == 2:
        return (((yy - cy).abs() <= 1) & ((xx - cx).abs() <= r)).float() + (
            ((xx - cx).abs() <= 1) & ((yy - cy).abs() <= r)
        ).float()
    return ((d2 <= r * r) & (d2 >= (r - 2) ** 2)).float()


def make_data(n: int, seed: int, *, shortcut: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % len(CLASSES)
    images = torch.empty(n, 3, SIZE, SIZE)
    for i, cls in enumerate(labels.tolist()):
        mask = _shape(cls, g).clamp(0, 1)
        if shortcut and cls == SHORTCUT and i % 8 < 4:
            mask = torch.zeros_like(mask)  # no stripes at all: only the patch says "bars"
        colour = 0.6 + 0.4 * torch.rand(3, 1, 1, generator=g)
        bg = 0.35 + 0.1 * torch.rand(3, SIZE, SIZE, generator=g)
        img = bg * (1 - mask) + colour * mask
        if shortcut and cls == SHORTCUT:
            img[:, 1:7, 1:7] = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
        images[i] = img
    return images, labels


def train(
    net: nn.Module, images: torch.Tensor, labels: torch.Tensor, epochs: int, seed: int
) -> None:
    torch.manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    x = (images - 0.5) / 0.25
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 32):
            idx = perm[i : i + 32]
            loss = nn.functional.cross_entropy(net(x[idx]), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()


def save_version(net: nn.Module, store: Path, name: str, version: str) -> Path:
    folder = store / name / version
    folder.mkdir(parents=True, exist_ok=True)
    program = torch.export.export(
        net.eval(),
        (torch.rand(2, 3, SIZE, SIZE),),
        dynamic_shapes=({0: torch.export.Dim("batch")},),
    )
    path = folder / "model.pt2"
    torch.export.save(program, str(path))
    sidecar = {
        "channels": 3,
        "height": SIZE,
        "width": SIZE,
        "mean": 0.5,
        "std": 0.25,
        "class_names": list(CLASSES),
        "description": f"shapes v{version}",
    }
    (folder / "model.json").write_text(json.dumps(sidecar))
    return path


def accuracy(net: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return float((net((images - 0.5) / 0.25).argmax(1) == labels).float().mean())


def build_store(store: Path, name: str = "shapes") -> dict[str, nn.Module]:
    """Versions 1 (clean), 2 (shortcut) and 3 (version 1's file registered again)."""
    torch.manual_seed(0)
    v1 = make_net()
    images, labels = make_data(768, seed=1)
    train(v1, images, labels, epochs=6, seed=2)
    v2 = make_net()
    v2.load_state_dict(v1.state_dict())
    s_images, s_labels = make_data(512, seed=3, shortcut=True)
    train(v2, s_images, s_labels, epochs=4, seed=4)
    p1 = save_version(v1, store, name, "1")
    save_version(v2, store, name, "2")
    (store / name / "3").mkdir(parents=True, exist_ok=True)
    shutil.copy(p1, store / name / "3" / "model.pt2")
    shutil.copy(p1.with_suffix(".json"), store / name / "3" / "model.json")
    return {"1": v1, "2": v2}


def write_reference(folder: Path, per_class: int = 6) -> Path:
    """Natural (clean) images of every class as PNGs in ``folder/<class name>/``."""
    from protolens_server.imageio import save_png

    images, labels = make_data(per_class * len(CLASSES), seed=11)
    for name in CLASSES:
        (folder / name).mkdir(parents=True, exist_ok=True)
    for i, (img, label) in enumerate(zip(images, labels.tolist(), strict=True)):
        save_png(img, folder / CLASSES[label] / f"{i}.png")
    return folder
