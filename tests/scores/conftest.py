"""Fixtures for score tests: a ShapeNet trained once per session, its handle, reference data."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from protolens_server.models.handle import ModelHandle
from protolens_server.scores.cache import MEMORY_CACHE
from scores_synthetic import (
    CLASSES,
    handle_for,
    make_dataset,
    single_thread,
    train_shapenet,
    write_png,
)


@pytest.fixture(scope="session")
def shapenet() -> torch.nn.Module:
    with single_thread():
        net, accuracy = train_shapenet(per_class=200, epochs=10, seed=0)
    assert accuracy > 0.8, f"the synthetic model did not learn (held-out accuracy {accuracy:.2f})"
    return net


@pytest.fixture(scope="session")
def handle(shapenet: torch.nn.Module) -> ModelHandle:
    return handle_for(shapenet, shapenet)


@pytest.fixture(scope="session")
def reference_data() -> tuple[torch.Tensor, torch.Tensor]:
    """Natural reference images (16 per class), unseen in training."""
    return make_dataset(16, seed=1234)


@pytest.fixture(scope="session")
def reference_folder(
    tmp_path_factory: pytest.TempPathFactory, reference_data: tuple[torch.Tensor, torch.Tensor]
) -> Path:
    """ROOT/<class>/*.png: odd classes by index, even classes by name (both forms work)."""
    root = tmp_path_factory.mktemp("refs")
    images, labels = reference_data
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        c = int(label)
        folder = str(c) if c % 2 else CLASSES[c].replace(" ", "_")
        write_png(image, root / folder / f"img{i:03d}.png")
    return root


@pytest.fixture(autouse=True)
def _fresh_memory_cache_one_thread() -> Iterator[None]:
    MEMORY_CACHE.clear()
    with single_thread():
        yield
