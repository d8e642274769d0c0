"""``protolens worker`` / ``python -m protolens_server.worker``: run one worker until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from protolens_server.config import Settings, load_settings
from protolens_server.errors import ProtolensError


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The worker's options (also used by ``protolens worker``); unset ones come from settings."""
    p = parser or argparse.ArgumentParser(
        prog="protolens-worker", description="Run a protolens worker against a shared Redis."
    )
    p.add_argument("--redis-url", help="Redis URL (default: PROTOLENS_REDIS_URL)")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--name", dest="worker_name", help="consumer name (default: host-pid)")
    p.add_argument("--model-store", help="folder of registered models")
    p.add_argument("--reference-root", help="folder of registered reference sets")
    p.add_argument("--metrics-port", type=int, help="Prometheus port (0 = any free port)")
    p.add_argument("--max-batch", type=int, help="images per engine batch")
    p.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    p.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="the worker's log level",
    )
    p.add_argument(
        "--log-format", choices=("json", "text"), default="json", help="log lines as JSON or text"
    )
    return p


def settings_from_args(args: argparse.Namespace) -> Settings:
    names = ("redis_url", "device", "worker_name", "model_store", "reference_root")
    overrides = {n: getattr(args, n, None) for n in (*names, "metrics_port", "max_batch")}
    return load_settings(**overrides)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run a worker until SIGTERM/SIGINT (or idle, with --burst); exit code."""
    args = build_parser().parse_args(argv)
    return run_worker(args)


def run_worker(args: argparse.Namespace) -> int:
    """Run a worker from parsed options (``protolens worker`` calls this)."""
    from protolens_server.logging import configure_logging

    try:
        settings = settings_from_args(args)
    except (ValidationError, ProtolensError, OSError) as e:
        print(f"protolens worker: bad settings: {_one_line(e)}", file=sys.stderr)
        return 2
    if not settings.redis_url:
        print(
            "protolens worker: no Redis: set PROTOLENS_REDIS_URL or --redis-url "
            "(protolens up starts an embedded one)",
            file=sys.stderr,
        )
        return 2
    configure_logging(args.log_level, json=args.log_format == "json")
    try:
        asyncio.run(_serve(settings, burst=args.burst))
    except ProtolensError as e:
        print(f"protolens worker: {e}", file=sys.stderr)
        return 1
    return 0


async def _serve(settings: Settings, *, burst: bool) -> None:
    from protolens_server.heap import freeze_startup_heap
    from protolens_server.worker.worker import Worker

    worker = Worker(settings, metrics_port=settings.metrics_port)
    freeze_startup_heap()  # torch and the worker's start-up heap: out of full GC passes
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.request_stop)
    await worker.run(burst=burst)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())
