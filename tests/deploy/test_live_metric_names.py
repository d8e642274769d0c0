"""The dashboard and alert rules query only series that a running `protolens serve` and
`protolens worker` export: both are started here against a real Redis and scraped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.deploy.processes import scrape, serve_args, start, stop, worker_args
from tests.deploy.promql_names import PROMETHEUS_BUILTINS, exposition_names, used_names


@pytest.fixture
def running(redis_url: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    grpc_port, api_metrics, worker_metrics = free_port(), free_port(), free_port()
    api_log, worker_log = tmp_path / "api.log", tmp_path / "worker.log"
    api = start(serve_args(redis_url, grpc_port, api_metrics), api_log)
    worker = start(worker_args(redis_url, worker_metrics, "--name", "metrics-test"), worker_log)
    try:
        yield {
            "serve": scrape(api_metrics, api, api_log),
            "worker": scrape(worker_metrics, worker, worker_log),
        }
    finally:
        stop(worker)
        stop(api)


def test_dashboard_and_alerts_use_only_exported_metrics(running):
    exported = {role: exposition_names(text) for role, text in running.items()}
    available = exported["serve"] | exported["worker"] | PROMETHEUS_BUILTINS
    used = used_names()
    missing = {name: sorted(where) for name, where in used.items() if name not in available}
    assert not missing, f"queried but exported by neither serve nor worker: {missing}"
    # The scrape is real: each process exports protolens series of its own.
    assert "protolens_rpc_requests_total" in exported["serve"]
    assert "protolens_worker_heartbeats_total" in exported["worker"]
    assert len(used) >= 15
