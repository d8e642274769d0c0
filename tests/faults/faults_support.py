"""What the fault scenarios share (kept out of conftest.py so imports are unambiguous)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from child_env import child_env
from protolens_server.config import Settings
from protolens_server.queue.jobs import JobQueue
from protolens_server.queue.records import JobState

SOAK = os.environ.get("PROTOLENS_SOAK") == "1"


@dataclass
class Keyed:
    """An API server with keys required, its address and one key per tenant."""

    api: Any
    address: str
    keys: dict[str, str]

    def md(self, tenant: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.keys[tenant]}"),)


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] if ordered else 0.0


async def redis_clients(redis: Any) -> int:
    """Connections this process's protolens clients hold right now (CLIENT LIST, by the
    names queue/connection.py gives them), plus this inspector's own: other test
    processes sharing the Redis are not counted."""
    mine = f"@{socket.gethostname()}:{os.getpid()}"
    clients = await redis.client_list()
    return 1 + sum(1 for c in clients if c.get("name", "").endswith(mine))


def fault_settings(redis_url: str, store: Path, **changes: Any) -> Settings:
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "key_prefix": "plfault",
        "grpc_port": 0,
        "model_store": store,
        "builtin_models": False,
        "insecure": True,
        "device": "cpu",
        "heartbeat_s": 0.2,
        "reclaim_idle_s": 2.0,
        "max_attempts": 2,
        "max_batch": 32,
        "max_steps": 500,
        "max_targets_per_job": 4,
        "max_queued_jobs": 100_000,
        "max_message_bytes": 256 * 1024,
        "shutdown_grace_s": 0.5,
        "metrics_port": 0,
    }
    values.update(changes)
    return Settings(**values)


async def stored_once(queue: JobQueue, job_id: str) -> bool:
    """The job SUCCEEDED with exactly one 'succeeded' event and its result hash names it."""
    record = await queue.get(job_id)
    events = await queue.redis.xrange(queue.keys.events(job_id))
    succeeded = [f for _, f in events if f[b"message"] == b"succeeded"]
    owner = await queue.redis.hget(queue.keys.result(record.cache_key), "job_id")
    return record.state == JobState.SUCCEEDED and len(succeeded) == 1 and owner is not None


class WorkerProcess:
    """``python -m protolens_server.worker`` with ``settings`` as PROTOLENS_* variables, plus
    ``env`` (e.g. a fault hook); its log (text format) goes to ``log``."""

    def __init__(
        self, settings: Settings, name: str, log: Path, *, env: dict[str, str] | None = None
    ) -> None:
        base = child_env()
        base.update(
            PROTOLENS_REDIS_URL=settings.redis_url,
            PROTOLENS_KEY_PREFIX=settings.key_prefix,
            PROTOLENS_MODEL_STORE=str(settings.model_store),
            PROTOLENS_BUILTIN_MODELS="false",
            PROTOLENS_DEVICE="cpu",
            PROTOLENS_PROGRESS_INTERVAL_S=str(settings.progress_interval_s),
            PROTOLENS_HEARTBEAT_S=str(settings.heartbeat_s),
            PROTOLENS_RECLAIM_IDLE_S=str(settings.reclaim_idle_s),
            PROTOLENS_MAX_ATTEMPTS=str(settings.max_attempts),
            PROTOLENS_MAX_BATCH=str(settings.max_batch),
            PROTOLENS_SHUTDOWN_GRACE_S=str(settings.shutdown_grace_s),
            PROTOLENS_METRICS_PORT="0",
            PROTOLENS_WORKER_NAME=name,
            **(env or {}),
        )
        self.name, self.log = name, log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "protolens_server.worker", "--log-format", "text"],
            env=base,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, then the exit code (killed if it does not exit in ``timeout``)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)


def scrape(port: int) -> dict[str, float]:
    """A Prometheus endpoint's samples: ``{'name{labels}': value}``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples
