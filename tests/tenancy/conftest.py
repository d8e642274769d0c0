"""Tenancy fixtures: a real API server with API keys required, over a real Redis.

``keyed`` starts the server (``insecure=False``), makes the first admin key the
way ``protolens admin keys create --bootstrap`` does (straight into Redis) and
two tenant keys through the AdminService, and gives channels per key.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from protolens.v1 import admin_pb2, admin_pb2_grpc
from protolens_server.api.auth import ApiKeyStore
from protolens_server.api.server import start_server
from protolens_server.api.testkit import make_tiny_model_store
from protolens_server.config import Settings
from tenancy_support import Keyed, bearer


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model_store(tmp_path_factory.mktemp("models"))


@pytest.fixture
def keyed_settings(redis_url: str, tiny_store: Path, tmp_path: Path) -> Settings:
    refs = tmp_path / "refs"
    refs.mkdir()
    return Settings(
        redis_url=redis_url,
        key_prefix="pltenancy",
        grpc_port=0,
        model_store=tiny_store,
        reference_root=refs,
        builtin_models=False,
        max_steps=500,
        max_targets_per_job=4,
        max_message_bytes=256 * 1024,
        shutdown_grace_s=0,
        device="cpu",
        heartbeat_s=0.2,
    )


@pytest.fixture
async def keyed(keyed_settings: Settings) -> AsyncIterator[Keyed]:
    api, port = await start_server(keyed_settings, sample_interval_s=0.2)
    try:
        store = ApiKeyStore(api.queue.redis, api.queue.keys)
        _info, admin_key = await store.create("ops", "admin", "bootstrap")
        address = f"127.0.0.1:{port}"
        async with grpc.aio.insecure_channel(address) as channel:
            stub = admin_pb2_grpc.AdminServiceStub(channel)
            keys = {}
            for tenant in ("alpha", "beta"):
                resp = await stub.CreateApiKey(
                    admin_pb2.CreateApiKeyRequest(tenant=tenant, display_name=f"{tenant} ci"),
                    metadata=bearer(admin_key),
                )
                keys[tenant] = resp.secret_key
            yield Keyed(api, address, admin_key, keys, channel)
    finally:
        await api.stop(grace=0)
