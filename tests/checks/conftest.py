"""A versioned model store with shapes@1 (clean), shapes@2 (planted shortcut) and shapes@3
(shapes@1's file registered again), trained once per session, plus check defaults."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from checks_shortcut_models import build_store


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Tiny models: a second torch thread only spins on the shared 2-core box."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    with one_thread():
        yield


@pytest.fixture(scope="session")
def shapes_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("store")
    with one_thread():
        build_store(store)
    return store


@pytest.fixture(scope="session")
def catalog(shapes_store: Path):
    from protolens_server.models import ModelCatalog

    return ModelCatalog(shapes_store, builtins=False)
