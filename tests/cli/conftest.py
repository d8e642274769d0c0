"""A tiny TorchScript classifier with a sidecar, saved once for the CLI tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

CLASS_NAMES = ["apple", "banana", "cherry", "date", "elderberry"]
SIDECAR = {"channels": 3, "height": 16, "width": 16, "mean": 0.5, "std": 0.25}


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


class _NaNOffZero(nn.Module):
    """Finite on the all-zeros load check, NaN on any other input."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x.mean((2, 3)))
        nonzero = x.abs().flatten(1).amax(1, keepdim=True) > 0
        return torch.where(nonzero, y * float("nan"), y)


def _save(module: nn.Module, path: Path, sidecar: dict) -> Path:
    torch.manual_seed(0)
    torch.jit.script(module.eval()).save(str(path))
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    return path


@pytest.fixture(scope="session")
def cli_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli_models")
    torch.manual_seed(0)
    fruit = _save(_Net(), root / "fruit.pt", {**SIDECAR, "class_names": CLASS_NAMES})
    torch.manual_seed(0)
    nan = _save(_NaNOffZero(), root / "nan.pt", SIDECAR)
    torch.manual_seed(0)
    program = torch.export.export(
        _Net().eval(),
        (torch.rand(2, 3, 16, 16),),
        dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=1024)}},
    )
    exported = root / "exported.pt2"
    torch.export.save(program, exported)
    exported.with_suffix(".json").write_text(json.dumps({**SIDECAR, "class_names": CLASS_NAMES}))
    bare = root / "bare.pt"
    bare.write_bytes(fruit.read_bytes())  # no sidecar: default ImageNet spec 3x224x224
    notes = root / "notes.pt"
    notes.write_text("this is not a model")
    return {
        "fruit": fruit,
        "nan": nan,
        "exported": exported,
        "bare": bare,
        "notes": notes,
        "root": root,
    }
