"""Small models saved in every format, built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_nets_models import CLASS_NAMES, SIDECAR, archive, example_input, trained_like


@pytest.fixture(scope="session")
def tiny_model() -> torch.nn.Module:
    return trained_like(0)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny_models")


@pytest.fixture(scope="session")
def scripted_path(model_dir: Path, tiny_model: torch.nn.Module) -> Path:
    path = model_dir / "scripted.pt"
    torch.jit.script(tiny_model).save(str(path))
    return path


@pytest.fixture(scope="session")
def traced_path(model_dir: Path, tiny_model: torch.nn.Module) -> Path:
    path = model_dir / "traced.ts"
    torch.jit.trace(tiny_model, example_input(2)).save(str(path))
    return path


@pytest.fixture(scope="session")
def exported_path(model_dir: Path, tiny_model: torch.nn.Module) -> Path:
    path = model_dir / "exported.pt2"
    program = torch.export.export(
        tiny_model,
        (example_input(2),),
        dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=1024)}},
    )
    torch.export.save(program, path)
    return path


@pytest.fixture(scope="session")
def state_dict_path(model_dir: Path, tiny_model: torch.nn.Module) -> Path:
    path = model_dir / "weights.pth"
    torch.save(tiny_model.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def mar_path(model_dir: Path, scripted_path: Path) -> Path:
    index = {str(i): [f"n0000{i}", n] for i, n in enumerate(CLASS_NAMES)}
    return archive(
        model_dir / "mar",
        "tinymar",
        scripted_path,
        extra={"index_to_name.json": index, "input_spec.json": SIDECAR},
    )
