"""The container health check against a real gRPC health service and a real metrics endpoint."""

from __future__ import annotations

import subprocess
import sys
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from protolens_server import metrics
from protolens_server.healthcheck import check_grpc, check_metrics

from tests.conftest import free_port


@pytest.fixture
def health_server():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(None)


def run_check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "protolens_server.healthcheck", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_exit_code_follows_serving_status(health_server):
    servicer, address = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    done = run_check("--address", address)
    assert done.returncode == 0, done.stderr
    assert "SERVING" in done.stdout

    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    done = run_check("--address", address)
    assert done.returncode == 1
    assert "NOT_SERVING" in done.stderr


def test_named_service_and_unknown_service(health_server):
    servicer, address = health_server
    servicer.set("protolens.v1.Protolens", health_pb2.HealthCheckResponse.SERVING)
    assert check_grpc(address, "protolens.v1.Protolens")[0]
    ok, why = check_grpc(address, "no.such.Service")
    assert not ok and "NOT_FOUND" in why


def test_nothing_listening_is_unhealthy():
    ok, why = check_grpc(f"127.0.0.1:{free_port()}", timeout=0.5)
    assert not ok
    assert "UNAVAILABLE" in why or "DEADLINE_EXCEEDED" in why


def test_port_comes_from_settings(health_server, monkeypatch):
    servicer, address = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    port = address.rsplit(":", 1)[1]
    done = subprocess.run(
        [sys.executable, "-m", "protolens_server.healthcheck"],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            "PATH": "/usr/bin:/bin",
            "PROTOLENS_GRPC_PORT": port,
            "PROTOLENS_GRPC_HOST": "0.0.0.0",
        },
    )
    assert done.returncode == 0, done.stderr


def test_metrics_endpoint_check():
    port = metrics.serve_metrics(0, addr="127.0.0.1")
    ok, why = check_metrics(f"http://127.0.0.1:{port}/metrics")
    assert ok, why
    ok, _ = check_metrics(f"http://127.0.0.1:{free_port()}/metrics", timeout=0.5)
    assert not ok
