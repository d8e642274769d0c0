"""Helpers for tests and benchmarks of the service: a tiny model store made on the spot.

``make_tiny_model_store(folder)`` writes ``tiny.pt`` (a TorchScript conv net on
16x16 RGB, 5 named classes, BatchNorm, seeded weights) and its sidecar, so a
real worker can generate prototypes in milliseconds on a CPU;
``make_reference_root(root)`` a reference set ``tinyref`` for it (random 20x20
images, three per class). Nothing here is used in production code paths.
"""

from __future__ import annotations

import json
from pathlib import Path

TINY_MODEL = "tiny"
TINY_CLASSES = ("apple", "banana", "cherry", "date", "elderberry")
TINY_SIZE = 16


def make_tiny_model_store(folder: str | Path, *, name: str = TINY_MODEL, seed: int = 0) -> Path:
    """Create (or reuse) ``folder`` with one TorchScript model ``name``; returns the folder."""
    import torch
    from torch import nn

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.pt"
    if path.exists():
        return folder
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Conv2d(6, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, len(TINY_CLASSES)),
    ).eval()
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.2, 0.2)
        net[1].running_var.uniform_(0.5, 1.5)
    scripted = torch.jit.trace(net, torch.rand(1, 3, TINY_SIZE, TINY_SIZE))
    tmp = folder / f".{name}.pt.tmp"
    scripted.save(str(tmp))
    sidecar = {
        "channels": 3,
        "height": TINY_SIZE,
        "width": TINY_SIZE,
        "mean": 0.5,
        "std": 0.25,
        "class_names": list(TINY_CLASSES),
        "description": "tiny test classifier",
    }
    (folder / f"{name}.json").write_text(json.dumps(sidecar))
    tmp.rename(path)
    return folder


def make_reference_root(root: str | Path, *, name: str = "tinyref") -> Path:
    """``root/<name>/<class>/{0,1,2}.png``: random images for each tiny class; returns root."""
    import numpy as np
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(0)
    for cls in TINY_CLASSES:
        folder = root / name / cls
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(3):
            pixels = rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


VIT_CLASSES = ("cat", "dog", "bird")


def make_tiny_vit(
    folder: str | Path,
    *,
    seed: int = 0,
    size: int = 16,
    mean: tuple[float, ...] = (0.5, 0.4, 0.3),
    std: tuple[float, ...] = (0.2, 0.25, 0.3),
    preprocessor: bool = True,
) -> Path:
    """A tiny Hugging Face ViT image classifier (3 classes, one 16-wide layer) saved with
    ``save_pretrained`` into ``folder``, with a ``preprocessor_config.json``: what a
    registered transformers model looks like, made locally (no hub). Needs transformers."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    config = ViTConfig(
        image_size=size,
        patch_size=8,
        num_channels=3,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        id2label=dict(enumerate(VIT_CLASSES)),
        label2id={n: i for i, n in enumerate(VIT_CLASSES)},
    )
    model = ViTForImageClassification(config).eval()
    folder = Path(folder)
    model.save_pretrained(folder)
    if preprocessor:
        (folder / "preprocessor_config.json").write_text(
            json.dumps(
                {
                    "image_processor_type": "ViTImageProcessor",
                    "do_resize": True,
                    "size": {"height": size, "width": size},
                    "do_rescale": True,
                    "rescale_factor": 1 / 255,
                    "do_normalize": True,
                    "image_mean": list(mean),
                    "image_std": list(std),
                }
            )
        )
    return folder


TINY_EAGER_MODEL = "tinyeager"


def tiny_eager_net() -> object:
    """The factory of ``make_tiny_eager_model``: a seeded eager conv net, 16x16 RGB, 5 classes
    (``features.0`` conv 6 channels, ``features.3`` conv 8 channels at 8x8, ``head``)."""
    import torch
    from torch import nn

    class TinyEager(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 6, 3, padding=1),
                nn.BatchNorm2d(6),
                nn.ReLU(),
                nn.Conv2d(6, 8, 3, stride=2, padding=1),
                nn.ReLU(),
            )
            self.head = nn.Linear(8, len(TINY_CLASSES))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.features(x).mean(dim=(2, 3)))

    torch.manual_seed(0)
    net = TinyEager()
    return net.eval()


def make_tiny_eager_model(folder: str | Path, *, name: str = TINY_EAGER_MODEL) -> Path:
    """Add an eager model ``name`` (``tiny_eager_net``'s state dict + a factory sidecar) to
    ``folder``: unit targets can name its inner layers. Returns the folder."""
    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.pth"
    if path.exists():
        return folder
    tmp = folder / f".{name}.pth.tmp"
    torch.save(tiny_eager_net().state_dict(), tmp)  # type: ignore[attr-defined]
    sidecar = {
        "channels": 3,
        "height": TINY_SIZE,
        "width": TINY_SIZE,
        "mean": 0.5,
        "std": 0.25,
        "class_names": list(TINY_CLASSES),
        "description": "tiny eager test classifier",
        "factory": f"{__name__}:tiny_eager_net",
    }
    (folder / f"{name}.json").write_text(json.dumps(sidecar))
    tmp.rename(path)
    return folder
