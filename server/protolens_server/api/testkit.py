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


def scaled_logits(net: object, scale: float) -> object:
    """``net`` (a module giving logits, used as it is: in eval mode already) with its logits
    times ``scale``: the same classifier at another temperature (a strongly tempered
    model, a cosine head without its scale)."""
    import torch
    from torch import nn

    class Tempered(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net, self.scale = net, scale

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x) * self.scale

    wrapper = Tempered()
    wrapper.training = False  # not .eval(): an exported program's module refuses train()
    return wrapper


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


MULTILABEL_MODEL = "scenes"
# A boat is always on water (and water is often alone): the two labels co-occur.
MULTILABEL_CLASSES = ("boat", "water", "tree", "car")
MULTILABEL_SPEC = {"channels": 3, "height": TINY_SIZE, "width": TINY_SIZE, "mean": 0.5, "std": 0.25}


def multilabel_batch(n: int, generator: object) -> tuple[object, object]:
    """``n`` images in [0, 1] and their labels (N, 4) for ``multilabel_net``: each label
    present with probability 0.4 (water always with a boat), a present label's template
    in its own quadrant, the rest grey; both with a little noise."""
    import torch
    import torch.nn.functional as F

    g: torch.Generator = generator  # type: ignore[assignment]
    k, half = len(MULTILABEL_CLASSES), TINY_SIZE // 2
    coarse = torch.rand(k, 3, 3, 3, generator=torch.Generator().manual_seed(7))
    templates = F.interpolate(coarse, size=half, mode="bilinear")
    labels = (torch.rand(n, k, generator=g) < 0.4).float()
    labels[:, 1] = torch.maximum(labels[:, 1], labels[:, 0])
    images = 0.5 + 0.1 * torch.randn(n, 3, TINY_SIZE, TINY_SIZE, generator=g)
    for c in range(k):
        r, q = divmod(c, 2)
        part = (slice(None), slice(None), slice(r * half, r * half + half))
        part += (slice(q * half, q * half + half),)
        drawn = templates[c][None] + 0.1 * torch.randn(n, 3, half, half, generator=g)
        images[part] = torch.where(labels[:, c, None, None, None] > 0, drawn, images[part])
    return images.clamp(0, 1), labels


def multilabel_net(*, sigmoid: bool, seed: int = 0, steps: int = 150) -> object:
    """A small conv net trained (about a second on a CPU) as a multi-label classifier of
    ``MULTILABEL_CLASSES``, one binary cross-entropy per label; its forward returns the
    labels' logits, or with ``sigmoid`` their probabilities. Eval mode, frozen."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Scenes(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 8, 3, padding=1),
                nn.BatchNorm2d(8),
                nn.ReLU(),
                nn.Conv2d(8, 16, 3, stride=2, padding=1),
                nn.ReLU(),
                nn.AdaptiveAvgPool2d(2),
                nn.Flatten(),
            )
            self.head = nn.Linear(64, len(MULTILABEL_CLASSES))
            self.sigmoid = sigmoid

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            z = self.head(self.features(x))
            return torch.sigmoid(z) if self.sigmoid else z

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    net = Scenes()
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(steps):
        images, labels = multilabel_batch(64, g)
        logits = net.head(net.features((images - 0.5) / 0.25))
        loss = F.binary_cross_entropy_with_logits(logits, labels)  # type: ignore[arg-type]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return net.eval().requires_grad_(False)


def make_multilabel_model(
    folder: str | Path, *, name: str = MULTILABEL_MODEL, sigmoid: bool = False
) -> Path:
    """Add ``multilabel_net`` as TorchScript model ``name`` to ``folder``, with a sidecar
    that declares its output ``multi-label-logits`` (without ``sigmoid``: its logits look
    like a single-label model's) or nothing (with it: loading recognises the sigmoid).
    Returns the folder."""
    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.pt"
    if path.exists():
        return folder
    tmp = folder / f".{name}.pt.tmp"
    torch.jit.script(multilabel_net(sigmoid=sigmoid)).save(str(tmp))
    sidecar: dict[str, object] = {
        **MULTILABEL_SPEC,
        "class_names": list(MULTILABEL_CLASSES),
        "description": "tiny multi-label test classifier",
    }
    if not sigmoid:
        sidecar["output"] = "multi-label-logits"
    (folder / f"{name}.json").write_text(json.dumps(sidecar))
    tmp.rename(path)
    return folder
