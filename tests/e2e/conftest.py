"""A real stack for end-to-end tests: the test Redis, an API server process, worker processes.

The stack is shared by a module (starting processes costs seconds); tests that
stop workers start them again. Models: the tiny TorchScript model; reference
set ``tinyref`` with random 20x20 images for each of its classes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from e2e_stack import stack_settings
from protolens_server.api.stack import Stack
from protolens_server.api.testkit import make_reference_root, make_tiny_model_store


@pytest.fixture(scope="session")
def e2e_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model_store(tmp_path_factory.mktemp("e2e-models"))


@pytest.fixture(scope="session")
def e2e_refs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_reference_root(tmp_path_factory.mktemp("e2e-refs"))


@pytest.fixture(scope="module")
def stack(
    _session_redis: str, e2e_store: Path, e2e_refs: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    client = redis.Redis.from_url(_session_redis)
    client.flushdb()
    client.close()
    settings = stack_settings(_session_redis, "e2e", e2e_store, reference_root=e2e_refs)
    with Stack(settings, tmp_path_factory.mktemp("stack"), workers=1) as running:
        yield running
