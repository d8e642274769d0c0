"""Tiny classifiers for the model-loading tests (importable as ``tiny_nets_models:...``).

pytest puts this folder on ``sys.path`` (rootdir-relative imports, no
``__init__.py``), so ``factory:tiny_nets_models:tiny_net`` resolves in-process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from protolens_server.engine.types import InputSpec
from torch import nn

CHANNELS, SIZE, CLASSES = 3, 16, 5
CLASS_NAMES = ["apple", "banana", "cherry", "date", "elderberry"]
SPEC = InputSpec(CHANNELS, SIZE, SIZE, mean=(0.5,), std=(0.25,))
SIDECAR = {"channels": CHANNELS, "height": SIZE, "width": SIZE, "mean": 0.5, "std": 0.25}


def example_input(batch: int = 4, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, CHANNELS, SIZE, SIZE, generator=g)


class TinyNet(nn.Module):
    def __init__(self, channels: int = CHANNELS, num_classes: int = CLASSES) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 6, 3, padding=1),
            nn.BatchNorm2d(6),
            nn.ReLU(),
            nn.Conv2d(6, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def tiny_net() -> TinyNet:
    """The factory: an architecture with arbitrary initial weights."""
    return TinyNet()


def trained_like(seed: int = 0) -> TinyNet:
    """A TinyNet with seeded weights and non-trivial BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    net = TinyNet()
    with torch.no_grad():
        bn = net.features[1]
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 1.5)
    return net.eval()


def broken_factory() -> nn.Module:
    raise RuntimeError("factory exploded")


def not_a_module() -> str:
    return "nope"


def archive(
    workdir: Path,
    name: str,
    serialized: Path,
    *,
    handler: str = "image_classifier",
    extra: dict[str, object] | None = None,
    model_file: Path | None = None,
) -> Path:
    """Build a .mar with the real torch-model-archiver command."""
    workdir.mkdir(parents=True, exist_ok=True)
    extras = []
    for fname, content in (extra or {}).items():
        p = workdir / fname
        p.write_text(content if isinstance(content, str) else json.dumps(content))
        extras.append(str(p))
    cmd = [
        str(Path(sys.executable).with_name("torch-model-archiver")),
        "--model-name", name, "--version", "1.0",
        "--serialized-file", str(serialized),
        "--handler", handler,
        "--export-path", str(workdir), "--force",
    ]  # fmt: skip
    if extras:
        cmd += ["--extra-files", ",".join(extras)]
    if model_file is not None:
        cmd += ["--model-file", str(model_file)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    return workdir / f"{name}.mar"


class DictOutputNet(nn.Module):
    """TinyNet whose forward returns a dict, as many research and Hugging Face models do."""

    def __init__(self) -> None:
        super().__init__()
        self.net = trained_like(0)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"features": x.mean((2, 3)), "logits": self.net(x)}


def dict_output_net() -> DictOutputNet:
    return DictOutputNet().eval()
