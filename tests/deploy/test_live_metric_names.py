"""The dashboard and alert rules query only series that a running `protolens serve` and
`protolens worker` export: both are started here against a real Redis and scraped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.deploy.promql_names import PROMETHEUS_BUILTINS, exposition_names, used_names


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PROTOLENS_DEVICE": "cpu"}
    env.pop("PROTOLENS_CONFIG", None)
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, *args], stdout=out, stderr=subprocess.STDOUT, env=env
        )


def _scrape(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"exited with {proc.returncode} before serving metrics:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as reply:
                return reply.read().decode()
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"no /metrics on port {port} after {timeout} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture
def running(redis_url: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    grpc_port, api_metrics, worker_metrics = free_port(), free_port(), free_port()
    api = _start(
        ["-m", "protolens_server.cli.service", "serve", "--redis-url", redis_url,
         "--port", str(grpc_port), "--metrics-port", str(api_metrics)],
        tmp_path / "api.log",
    )  # fmt: skip
    worker = _start(
        ["-m", "protolens_server.worker", "--redis-url", redis_url, "--device", "cpu",
         "--metrics-port", str(worker_metrics), "--name", "metrics-test"],
        tmp_path / "worker.log",
    )  # fmt: skip
    try:
        yield {
            "serve": _scrape(api_metrics, api, tmp_path / "api.log"),
            "worker": _scrape(worker_metrics, worker, tmp_path / "worker.log"),
        }
    finally:
        _stop(worker)
        _stop(api)


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
