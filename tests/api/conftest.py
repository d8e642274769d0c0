"""A real in-process API server (grpc.aio on port 0) over a real Redis and the tiny model store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from protolens.v1 import service_pb2_grpc
from protolens_server.api.server import ApiServer, start_server
from protolens_server.api.testkit import make_tiny_model_store
from protolens_server.config import Settings


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model_store(tmp_path_factory.mktemp("models"))


@pytest.fixture
def api_settings(redis_url: str, tiny_store: Path, tmp_path: Path) -> Settings:
    refs = tmp_path / "refs"
    (refs / "empty").mkdir(parents=True)
    return Settings(
        redis_url=redis_url,
        grpc_port=0,
        model_store=tiny_store,
        reference_root=refs,
        builtin_models=False,
        max_steps=500,
        max_targets_per_job=4,
        max_message_bytes=256 * 1024,
        shutdown_grace_s=0,
        insecure=True,  # these tests are about the API, not keys (tests/tenancy)
    )


@pytest.fixture
async def api(api_settings: Settings) -> AsyncIterator[ApiServer]:
    server, _port = await start_server(api_settings, sample_interval_s=0.2)
    # the store's model inspected (a child process; seconds on a loaded machine) before
    # the tests time their calls
    await asyncio.to_thread(server.catalog.show, "tiny")
    try:
        yield server
    finally:
        await server.stop(grace=0)


@pytest.fixture
def address(api: ApiServer) -> str:
    return f"127.0.0.1:{api.port}"


@pytest.fixture
async def stub(address: str) -> AsyncIterator[service_pb2_grpc.ProtolensServiceStub]:
    async with grpc.aio.insecure_channel(address) as channel:
        yield service_pb2_grpc.ProtolensServiceStub(channel)
