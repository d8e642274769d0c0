"""The settings of a real stack for end-to-end tests (conftest's shared stack and the
modules that start their own, each over its own model store), and the client CLI run
in process against it."""

from __future__ import annotations

import contextlib
import io
import uuid
from pathlib import Path
from typing import Any

from protolens.cli import main as cli_main
from protolens_server.config import Settings


def stack_settings(redis_url: str, prefix: str, model_store: Path, **more: Any) -> Settings:
    """Loopback ports picked by the OS, a Redis key prefix of its own, no built-in models,
    CPU, and short heartbeats and grace so stopping is quick."""
    return Settings(
        redis_url=redis_url,
        key_prefix=f"{prefix}{uuid.uuid4().hex[:8]}",
        grpc_port=0,
        metrics_port=0,
        web_port=0,  # the gallery's default port may be another's (a `protolens up` left running)
        model_store=model_store,
        builtin_models=False,
        device="cpu",
        heartbeat_s=0.5,
        shutdown_grace_s=10,
        **more,
    )


def run_cli(*argv: str) -> tuple[int, str, str]:
    """``protolens ARGV...`` in this process: its exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli_main(list(argv))
    return code, out.getvalue(), err.getvalue()
