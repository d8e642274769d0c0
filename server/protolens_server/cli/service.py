"""Service commands: ``protolens serve | worker | up | demo``.

- ``serve``: the gRPC API (+ metrics over HTTP) against a shared Redis;
- ``worker``: one worker process (delegates to ``protolens_server.worker``);
- ``up``: everything on one machine (embedded Redis unless ``--redis-url``,
  the API on loopback, N workers) until Ctrl-C/SIGTERM;
- ``demo``: the main job end to end: stack up, a job for efficientnet_lite0
  through the client SDK with a progress bar, PNGs and scores written, stack down.

Heavy imports (torch, redis, grpc server parts) happen inside the commands, so
``protolens --help`` stays fast. Also runnable as ``python -m protolens_server.cli.service``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DEMO_MODEL = "efficientnet_lite0"
DEMO_CLASSES = ("281", "948")  # tabby, Granny Smith
# With scikit-image installed (the ``demo`` extra) the demo scores its prototypes against
# crops of scikit-image's sample photos, so it picks classes those photos show.
DEMO_CLASSES_WITH_REFERENCES = ("285", "967")  # Egyptian cat (chelsea), espresso (coffee)


def _settings_args(p: argparse.ArgumentParser, *, port_default: str = "") -> None:
    p.add_argument("--host", dest="grpc_host", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", dest="grpc_port", type=int, help=f"gRPC port {port_default}".strip())
    p.add_argument("--metrics-port", type=int, help="Prometheus metrics port (0 = any free one)")
    p.add_argument("--redis-url", help="redis://host:port/db ($PROTOLENS_REDIS_URL)")
    p.add_argument("--model-store", type=Path, help="folder of registered models")
    p.add_argument("--reference-root", type=Path, help="folder of registered reference sets")
    p.add_argument("--log-level", default="INFO")


def _settings(args: argparse.Namespace, **forced: Any) -> Any:
    from protolens_server.config import load_settings

    keys = (
        "grpc_host",
        "grpc_port",
        "metrics_port",
        "redis_url",
        "model_store",
        "reference_root",
        "insecure",
    )
    overrides = {k: getattr(args, k, None) for k in keys}
    return load_settings(**{**overrides, **forced})


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the gRPC API server against a shared Redis")
    _settings_args(p, port_default="(default 50051)")
    p.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="development only: no API key needed (callers are tenant 'default'); "
        "refused unless --host is loopback",
    )
    p.set_defaults(func=cmd_serve)

    # The worker parses its own options (importing it here would import torch): this
    # parser takes no options of its own ("+" prefix), so every "-..." string is passed on.
    p = sub.add_parser(
        "worker",
        help="run a worker process against a shared Redis (see protolens worker --help)",
        add_help=False,
        prefix_chars="+",
    )
    p.add_argument("worker_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("up", help="start Redis, the API and workers on this machine")
    _settings_args(p, port_default="(default 50051)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--data-dir", type=Path, help="logs and embedded Redis files (default: temp)")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("demo", help="the main job end to end on an embedded stack")
    p.add_argument("--out", type=Path, default=Path("protolens-demo"), help="output folder")
    p.add_argument("--model", default=DEMO_MODEL, help=f"model (default {DEMO_MODEL})")
    p.add_argument(
        "--target",
        action="append",
        metavar="CLASS",
        help="class index or name, repeatable (default: 281 tabby, 948 Granny Smith)",
    )
    p.add_argument("--steps", type=int, help="optimisation steps (default: engine default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reference-set", default="", help="registered reference set for scores")
    p.add_argument("--model-store", type=Path, help="folder of registered models")
    p.add_argument("--reference-root", type=Path, help="folder of registered reference sets")
    p.add_argument("--redis-url", help="use this Redis instead of an embedded one")
    p.add_argument("--timeout", type=float, default=3600, help="seconds to wait for the job")
    p.set_defaults(func=cmd_demo)


# --- serve / worker -------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    import asyncio

    from protolens_server.api.server import serve
    from protolens_server.errors import InvalidArgument
    from protolens_server.logging import configure_logging

    settings = _settings(args)
    if not settings.redis_url:
        raise InvalidArgument(
            "redis_url", "serve needs a Redis: pass --redis-url or set PROTOLENS_REDIS_URL "
            "(or run everything on one machine with `protolens up`)"
        )  # fmt: skip
    configure_logging(args.log_level)

    def ready(port: int, metrics_port: int) -> None:
        print(
            f"protolens: API on {settings.grpc_host}:{port}, metrics on :{metrics_port}",
            file=sys.stderr,
            flush=True,
        )

    asyncio.run(serve(settings, ready=ready))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from protolens_server.worker.main import build_parser, run_worker

    parser = build_parser(argparse.ArgumentParser(prog="protolens worker"))
    return int(run_worker(parser.parse_args(args.worker_args)) or 0)


# --- up ----------------------------------------------------------------------------


def _start_stack(settings: Any, workdir: Path, workers: int) -> Any:
    from protolens_server.api.stack import Stack

    return Stack(settings, workdir, workers=workers).start()


def cmd_up(args: argparse.Namespace) -> int:
    from protolens_server.errors import InvalidArgument

    settings = _settings(args)
    if settings.grpc_host not in ("127.0.0.1", "localhost", "::1"):
        raise InvalidArgument(
            "host", "protolens up serves on loopback only (no authentication); "
            "use `protolens serve` for a network deployment"
        )  # fmt: skip
    if args.workers < 0:
        raise InvalidArgument("workers", "must be >= 0")
    workdir = args.data_dir or Path(tempfile.mkdtemp(prefix="protolens-up-"))
    stop = _StopFlag()
    stack = _start_stack(settings, workdir, args.workers)
    try:
        redis_note = "embedded" if stack.redis else stack.settings.redis_url
        print(f"protolens: serving on {stack.address}", flush=True)
        print(
            f"  redis: {redis_note}; workers: {args.workers}; "
            f"metrics: http://{settings.grpc_host}:{stack.settings.metrics_port}/metrics; "
            f"logs: {workdir}",
            flush=True,
        )
        print(f"  try: PROTOLENS_ADDRESS={stack.address} protolens models", flush=True)
        print("  Ctrl-C stops everything", flush=True)
        while not stop.set:
            dead = stack.dead_children()
            if dead:
                names = ", ".join(f"{c.name} (exit {c.proc.returncode})" for c in dead)
                print(f"protolens: {names} stopped unexpectedly; shutting down", file=sys.stderr)
                for child in dead:
                    print(child.log_tail(), file=sys.stderr)
                return 1
            time.sleep(0.2)
        print("protolens: stopping workers, API and Redis ...", flush=True)
        return 0
    finally:
        stop.restore()
        stack.stop()


class _StopFlag:
    """Turns SIGINT/SIGTERM into a flag, restoring the old handlers afterwards."""

    def __init__(self) -> None:
        self.set = False
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def _handle(self, signum: int, frame: Any) -> None:
        self.set = True

    def restore(self) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)


# --- demo --------------------------------------------------------------------------


def _demo_reference(settings: Any, wanted: str) -> str:
    from protolens_server.scores.naming import available_sets

    if wanted:
        return wanted
    sets = available_sets(settings.reference_root)
    return sets[0] if sets else ""


def _sample_reference_set(settings: Any, workdir: Path) -> tuple[Any, str]:
    """Register crops of scikit-image's photos as reference set "photos" (if installed)."""
    try:
        from protolens_server.scores.samples import write_reference_set
    except ImportError:
        return settings, ""
    root = workdir / "references"
    try:
        write_reference_set(root / "photos")
    except ImportError:  # scikit-image is not installed: no natural images to score against
        return settings, ""
    print(
        "protolens demo: reference set 'photos': crops of scikit-image's sample photos "
        "(one photo per class)",
        flush=True,
    )
    return settings.model_copy(update={"reference_root": root}), "photos"


def cmd_demo(args: argparse.Namespace) -> int:
    from protolens._cli.jobs import parse_target, save_prototypes
    from protolens._cli.progress import follow
    from protolens.client import Client

    settings = _settings(args, grpc_port=0, metrics_port=0)
    reference = _demo_reference(settings, args.reference_set)
    workdir = Path(tempfile.mkdtemp(prefix="protolens-demo-"))
    default_targets = DEMO_CLASSES
    if not reference and not args.target and args.model == "efficientnet_lite0":
        settings, reference = _sample_reference_set(settings, workdir)
        if reference:
            default_targets = DEMO_CLASSES_WITH_REFERENCES
    targets = [parse_target(t) for t in (args.target or default_targets)]
    print(f"protolens demo: starting Redis, the API and a worker (logs in {workdir})", flush=True)
    stack = _start_stack(settings, workdir, 1)
    try:
        print(f"protolens demo: service on {stack.address}", flush=True)
        if not reference:
            print(
                "protolens demo: no reference set registered (set PROTOLENS_REFERENCE_ROOT or "
                "--reference-root): generating without path-similarity scores",
                flush=True,
            )
        config = {"steps": args.steps} if args.steps else {}
        with Client(stack.address, timeout=600) as client:
            job = client.create_prototype_job(
                args.model, targets, config=config, seed=args.seed, reference_set=reference
            )
            print(f"protolens demo: {job.name} {job.outcome} for {args.model}", flush=True)
            if not job.finished:
                follow(client, job)
            job = client.wait(job, timeout=args.timeout)
            files = save_prototypes(client, job, args.out)
        for s in job.prototypes:
            print(f"  {s.target.label():<24} p={s.probability:.3f}  scores: {s.has_scores}")
        for f in files:
            print(f"  wrote {f}")
        return 0
    finally:
        print("protolens demo: stopping the stack", flush=True)
        stack.stop()


def main(argv: list[str] | None = None) -> int:
    """``python -m protolens_server.cli.service serve ...`` (what ``Stack`` runs)."""
    from protolens.cli import main as cli_main

    return cli_main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
