"""What the fault scenarios share (kept out of conftest.py so imports are unambiguous)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from protolens_server.config import Settings

SOAK = os.environ.get("PROTOLENS_SOAK") == "1"


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
