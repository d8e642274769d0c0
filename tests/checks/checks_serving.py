"""A real API server and one real worker over a model store, for the service's check tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from protolens_server.config import Settings


def check_settings(redis_url: str, store: Path | str, **changes: Any) -> Settings:
    """The checks tests' service settings: ``store`` only (no built-in models), no metrics
    port, no shutdown grace, the CPU; ``changes`` on top."""
    from protolens_server.config import Settings

    base = {
        "redis_url": redis_url,
        "grpc_port": 0,
        "metrics_port": 0,
        "model_store": store,
        "builtin_models": False,
        "max_steps": 2000,
        "shutdown_grace_s": 0,
        "device": "cpu",
    }
    return Settings(**{**base, **changes})


@contextlib.asynccontextmanager
async def serving(
    redis_url: str, store: Path, **changes: Any
) -> AsyncIterator[tuple[str, object, object]]:
    """A real API server over ``store`` and one real worker: (address, server, worker);
    ``changes``: settings on top of ``check_settings``'s."""
    import asyncio

    from protolens_server.api.server import start_server
    from protolens_server.api.tenancy import default_tenant
    from protolens_server.worker import Worker

    settings = check_settings(redis_url, store, **changes)
    # Every caller is the default tenant here (API keys are tests/api's business).
    api, port = await start_server(settings, sample_interval_s=0.2, tenant_resolver=default_tenant)
    worker = Worker(settings, name="w-checks", block_ms=100)
    task = asyncio.create_task(worker.run())
    try:
        yield f"127.0.0.1:{port}", api, worker
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, 30)
        await api.stop(grace=0)
