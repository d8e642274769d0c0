"""How the embedded stack starts its children (``protolens up``/``demo``, the e2e tests).

A child started with a ``preexec_fn`` is fork()ed with every at-fork handler run, and
gRPC's handler can block forever in a process that holds channels: it hung the e2e
suite while starting a worker. The stack now arms the parent-death signal in the child
itself, so no handler may run, and a child must still die with its parent.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from protolens_server.api.stack import Stack
from protolens_server.config import Settings

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="parent-death signal: Linux")

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_until_execd(pid: int) -> None:
    """Until the child has become its command (``python -c ...``), not the trampoline."""
    deadline = time.monotonic() + 10
    while (cmdline := Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"))[:2] != [
        os.fsencode(sys.executable),
        b"-c",
    ]:
        assert time.monotonic() < deadline, cmdline
        time.sleep(0.05)


def test_children_start_without_fork_handlers_beside_live_grpc(tmp_path: Path) -> None:
    forks: list[int] = []
    os.register_at_fork(before=lambda: forks.append(1))
    server = grpc.server(futures.ThreadPoolExecutor(2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    stack = Stack(Settings(redis_url="redis://127.0.0.1:1/0"), tmp_path)
    children = []
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
            children += [stack._spawn(f"sleeper-{i}", SLEEPER) for i in range(5)]
            stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert forks == [], "a child was fork()ed with the at-fork handlers (a preexec_fn?)"
        for child in children:
            _wait_until_execd(child.proc.pid)
    finally:
        server.stop(None)
        for child in children:
            child.proc.kill()
            child.proc.wait(5)


def test_a_child_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    parent = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from protolens_server.api.stack import Stack
        from protolens_server.config import Settings
        stack = Stack(Settings(redis_url="redis://127.0.0.1:1/0"), Path({str(tmp_path)!r}))
        child = stack._spawn("sleeper", {SLEEPER!r})
        print(child.proc.pid, flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        child_pid = int(proc.stdout.readline())
        _wait_until_execd(child_pid)
        assert _alive(child_pid)
        proc.send_signal(signal.SIGKILL)  # no chance to stop its children itself
        proc.wait(10)
        deadline = time.monotonic() + 10
        while _alive(child_pid):
            assert time.monotonic() < deadline, "the child outlived its parent"
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait(10)
