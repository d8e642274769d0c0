"""Start real `protolens serve` / `protolens worker` processes for deployment tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


def start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    """``python -m <args>`` with stdout+stderr to ``log`` and the CPU as device."""
    env = {**os.environ, "PROTOLENS_DEVICE": "cpu"}
    env.pop("PROTOLENS_CONFIG", None)
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, *args], stdout=out, stderr=subprocess.STDOUT, env=env
        )


def serve_args(redis_url: str, grpc_port: int, metrics_port: int, *extra: str) -> list[str]:
    # --insecure: loopback without API keys (these tests are about deployment signals;
    # authentication is tested in tests/tenancy).
    return [
        "-m", "protolens_server.cli.service", "serve", "--redis-url", redis_url,
        "--port", str(grpc_port), "--metrics-port", str(metrics_port), "--insecure", *extra,
    ]  # fmt: skip


def worker_args(redis_url: str, metrics_port: int, *extra: str) -> list[str]:
    return [
        "-m", "protolens_server.worker", "--redis-url", redis_url, "--device", "cpu",
        "--metrics-port", str(metrics_port), *extra,
    ]  # fmt: skip


def scrape(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 90) -> str:
    """The process's /metrics page, once it answers (fails if the process dies first)."""
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


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
