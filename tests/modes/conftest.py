"""The generation modes over the real service: an in-process API server (grpc.aio on port 0)
and an in-process Worker (``run_once``) on a real Redis, with the tiny eager model
(``tinyeager``: unit targets can name its layers) and the tiny TorchScript model."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from protolens_server.api.server import ApiServer, start_server
from protolens_server.api.testkit import (
    make_reference_root,
    make_tiny_eager_model,
    make_tiny_model_store,
)
from protolens_server.config import Settings


@pytest.fixture(scope="session")
def modes_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = make_tiny_model_store(tmp_path_factory.mktemp("modes-models"))
    return make_tiny_eager_model(folder)


@pytest.fixture(scope="session")
def modes_refs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_reference_root(tmp_path_factory.mktemp("modes-refs"))  # set "tinyref"


@pytest.fixture
def modes_settings(redis_url: str, modes_store: Path, modes_refs: Path) -> Settings:
    refs = modes_refs
    return Settings(
        redis_url=redis_url,
        key_prefix="plm",
        grpc_port=0,
        metrics_port=0,
        model_store=modes_store,
        reference_root=refs,
        builtin_models=False,
        device="cpu",
        max_steps=500,
        heartbeat_s=0.1,
        shutdown_grace_s=0,
        insecure=True,
    )


@pytest.fixture
async def modes_api(modes_settings: Settings) -> AsyncIterator[ApiServer]:
    server, _port = await start_server(modes_settings, sample_interval_s=0.2)
    await asyncio.to_thread(server.catalog.show, "tinyeager")
    try:
        yield server
    finally:
        await server.stop(grace=0)


@pytest.fixture
def modes_address(modes_api: ApiServer) -> str:
    return f"127.0.0.1:{modes_api.port}"
