"""Fault and load suite fixtures: a real API server + in-process real worker over real Redis.

Each scenario records its outcome with ``report(fault, outcome, **numbers)``; with
``PROTOLENS_FAULT_REPORT=<file.json>`` the records are written there at the end of
the session (``bench/fault_report.py`` runs the suite and renders docs/faults.md).
``PROTOLENS_SOAK=1`` makes the load scenarios longer.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from faults_support import Keyed, fault_settings
from protolens_server.api.server import ApiServer, start_server
from protolens_server.api.testkit import make_tiny_model_store
from protolens_server.config import Settings
from protolens_server.worker.worker import Worker

_RECORDS: list[dict[str, Any]] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = os.environ.get("PROTOLENS_FAULT_REPORT")
    if path and _RECORDS:
        Path(path).write_text(json.dumps(_RECORDS, indent=1))


@pytest.fixture
def report() -> Callable[..., None]:
    def record(fault: str, outcome: str, **numbers: Any) -> None:
        _RECORDS.append({"fault": fault, "outcome": outcome, **numbers})

    return record


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model_store(tmp_path_factory.mktemp("models"))


@pytest.fixture
def settings(redis_url: str, tiny_store: Path) -> Settings:
    return fault_settings(redis_url, tiny_store)


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[ApiServer]:
    server, _ = await start_server(settings, sample_interval_s=0.2)
    try:
        yield server
    finally:
        await server.stop(grace=0)


@pytest.fixture
async def worker(settings: Settings) -> AsyncIterator[Worker]:
    """A real worker running its loop in this event loop (the engine runs in a thread)."""
    w = Worker(settings, name="w-fault", block_ms=100)
    task = asyncio.create_task(w.run())
    try:
        yield w
    finally:
        w.request_stop()
        try:
            await asyncio.wait_for(task, 30)
        except TimeoutError:
            task.cancel()


@pytest.fixture
async def keyed(settings: Settings) -> AsyncIterator[Keyed]:
    """The API with keys required: tenants ``alpha`` and ``beta``, each with a key."""
    from protolens_server.api.auth import ApiKeyStore

    api, port = await start_server(settings.model_copy(update={"insecure": False}))
    try:
        store = ApiKeyStore(api.queue.redis, api.queue.keys)
        keys = {t: (await store.create(t, "tenant", f"{t} faults"))[1] for t in ("alpha", "beta")}
        yield Keyed(api, f"127.0.0.1:{port}", keys)
    finally:
        await api.stop(grace=0)
