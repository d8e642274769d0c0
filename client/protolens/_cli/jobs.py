"""Client commands: ``protolens submit | watch | get | cancel | models``.

All talk to a running service (``--address``, default ``$PROTOLENS_ADDRESS`` or
127.0.0.1:50051) through the SDK, print JSON with ``--json``, and report errors
as one line (the dispatcher prints ``protolens: REASON: message``, exit 1).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DEFAULT_ADDRESS = "127.0.0.1:50051"
# The engine's default (GenerationConfig steps=0, max_steps=256) in words: the client
# cannot import the engine, so tests/cli/test_cli_first_hour.py checks this against it.
STEPS_DEFAULT = "0 = until each prototype converges, at most 256 steps"


def _address_default() -> str:
    return os.environ.get("PROTOLENS_ADDRESS", DEFAULT_ADDRESS)


def service_args(p: argparse.ArgumentParser) -> None:
    """--address, --json, --timeout and the connection options of a command that calls the API."""
    p.add_argument(
        "--address",
        default=_address_default(),
        metavar="HOST[:PORT]",
        help="the protolens API ($PROTOLENS_ADDRESS; a host without a port means port 50051)",
    )
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.add_argument(
        "--timeout", type=float, default=30.0, metavar="SECONDS", help="seconds per call"
    )
    connection_args(p)


def connection_args(p: argparse.ArgumentParser) -> None:
    """API key and TLS options (each defaults to its environment variable)."""
    p.add_argument("--api-key", default=None, metavar="KEY", help="API key ($PROTOLENS_API_KEY)")
    p.add_argument("--tls", action="store_true", default=None, help="TLS with the system roots")
    p.add_argument(
        "--tls-ca", default=None, metavar="PEM", help="CA certificate to trust ($PROTOLENS_TLS_CA)"
    )
    p.add_argument(
        "--tls-cert", default=None, metavar="PEM", help="client cert, mTLS ($PROTOLENS_TLS_CERT)"
    )
    p.add_argument(
        "--tls-key", default=None, metavar="PEM", help="client key, mTLS ($PROTOLENS_TLS_KEY)"
    )


def connection_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    from protolens.auth import connection

    return connection(
        api_key=args.api_key,
        tls=args.tls,
        tls_ca=args.tls_ca,
        client_cert=args.tls_cert,
        client_key=args.tls_key,
    )


_SERVICE_NOTE = (
    "Talks to a running service: start one on this machine with `protolens up` "
    "(127.0.0.1:50051), or point --address / $PROTOLENS_ADDRESS at yours."
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "submit",
        help="create a prototype job on a running service",
        description="Create a prototype job: the service queues it (or answers it from its "
        "cache at once) and a worker generates it. With --wait, show its progress and, with "
        "--out, write one PNG and one JSON record per prototype (docs/prototype-files.md). "
        "Path-similarity scores need a reference set the service has registered "
        "(--reference-set; `protolens up --reference-root DIR` registers each folder of DIR).\n\n"
        + _SERVICE_NOTE,
    )
    service_args(p)
    p.add_argument("--model", required=True, help="registered model name (see protolens models)")
    p.add_argument(
        "--target",
        action="append",
        required=True,
        metavar="CLASS",
        help="class index or name; A+B for a hybrid, anti:C for an antitype; a unit objective"
        " layer:NAME:channel:C, neuron:C[@Y,X] or direction:V1,V2,..., weighted terms joined"
        " by + or - (e.g. layer:features.3:channel:12-0.5*layer:features.3:channel:7;"
        " layers: protolens layers MODEL) (repeatable)",
    )
    p.add_argument("--prototypes", type=int, default=1, metavar="N", help="prototypes per target")
    p.add_argument(
        "--steps",
        type=int,
        metavar="N",
        help=f"fixed optimisation steps (default: {STEPS_DEFAULT})",
    )
    p.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a generation option, e.g. lr=0.1 or transforms=small (repeatable; "
        "see docs/engine.md)",
    )
    p.add_argument("--seed", type=int, metavar="N", help="random seed (default: 0)")
    p.add_argument(
        "--alpha",
        action="store_true",
        help="alpha prototypes: an opacity channel optimised with the image, stored as RGBA"
        " (the same as --config alpha=true; docs/modes.md)",
    )
    p.add_argument(
        "--reference-set",
        default="",
        metavar="NAME",
        help="registered reference set to score against (without it the job has no scores)",
    )
    p.add_argument(
        "--priority", choices=("high", "normal", "low"), default="normal", help="queue priority"
    )
    p.add_argument(
        "--request-id",
        default="",
        metavar="ID",
        help="idempotency key: a retry with the same id returns the first job",
    )
    p.add_argument("--wait", action="store_true", help="wait for the job, showing progress")
    p.add_argument(
        "--out", type=Path, metavar="DIR", help="with --wait: write the PNGs and JSON here"
    )
    _float_arg(p)
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser(
        "watch",
        help="show a job's progress until it ends",
        description="Follow a job until it ends: state, what its worker is doing, steps, "
        "rate and best probability. A lost connection is resumed. Exit 0 when the job "
        "SUCCEEDED, 1 otherwise.\n\n" + _SERVICE_NOTE,
    )
    service_args(p)
    p.add_argument("job", help="job id or jobs/{id}")
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser(
        "get",
        help="show a job; with --out, write its PNGs and JSON",
        description="Show a job and its prototypes; with --out, write one PNG and one JSON "
        "record per prototype (docs/prototype-files.md) and job.json.\n\n" + _SERVICE_NOTE,
    )
    service_args(p)
    p.add_argument("job", help="job id or jobs/{id}")
    p.add_argument("--out", type=Path, metavar="DIR", help="folder for the PNGs and JSON")
    _float_arg(p)
    p.set_defaults(func=cmd_get)

    p = sub.add_parser(
        "cancel",
        help="cancel a queued or running job",
        description="Cancel a queued job at once, or a running one between two optimisation "
        "steps.\n\n" + _SERVICE_NOTE,
    )
    service_args(p)
    p.add_argument("job", help="job id or jobs/{id}")
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser(
        "models",
        help="list the models the service serves",
        description="List the models the service serves: name, classes, input shape, "
        "source.\n\n" + _SERVICE_NOTE,
    )
    service_args(p)
    p.set_defaults(func=cmd_models)

    p = sub.add_parser(
        "layers",
        help="list a model's layers (for unit targets) with their output shapes",
        description="List the layers of a registered model that unit targets may name "
        "(--target layer:NAME:channel:C), in call order, with each one's output shape for "
        "one image (channels x height x width, tokens x width, or width), ending with "
        "logits. A TorchScript or exported model lists logits only.\n\n" + _SERVICE_NOTE,
    )
    service_args(p)
    p.add_argument("model", metavar="MODEL", help="registered model name (see protolens models)")
    p.set_defaults(func=cmd_layers)


# --- helpers --------------------------------------------------------------------


def client_of(args: argparse.Namespace) -> Any:
    """The SDK client the options of ``service_args`` describe."""
    from protolens.client import Client

    return Client(args.address, timeout=args.timeout, **connection_kwargs(args))


def parse_target(text: str) -> Any:
    from protolens._units import unit_target
    from protolens.types import Target

    text = text.strip()
    if "layer:" in text:
        return unit_target(text)
    if text.startswith("anti:"):
        return Target((_class(text[5:]),), "antitype")
    parts = [_class(p) for p in text.split("+")]
    return Target(tuple(parts), "hybrid" if len(parts) > 1 else "prototype")


def _class(text: str) -> int | str:
    """A class index or name as typed: the SDK decides which (``_convert.class_ref``)."""
    return text.strip()


def parse_config(pairs: list[str], steps: int | None) -> dict[str, Any]:
    from protolens.errors import ProtolensError

    config: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ProtolensError(f"--config {pair!r}: expected KEY=VALUE, e.g. lr=0.05")
        try:
            config[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            config[key.strip()] = value
    if steps is not None:
        config["steps"] = steps
    return config


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def _job_line(job: Any) -> str:
    p = job.progress
    extra = f" ({job.outcome})" if job.outcome else ""
    line = f"{job.name} {job.state}{extra} step {p.step}/{p.total_steps} p={p.best_probability:.3f}"
    if job.error:
        line += f" error={job.error.reason}: {job.error.message}"
    return line


def _print_warnings(job: Any) -> None:
    """``Job.warnings`` on stderr, as ``protolens generate`` prints its own: stdout stays
    the result (or its JSON, which holds them as ``warnings``)."""
    sys.stdout.flush()
    for line in job.warnings:
        print(f"protolens: warning: {line}", file=sys.stderr)


def _float_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--float",
        action="store_true",
        dest="float_files",
        help="with --out: also write each prototype's lossless float32 tensor "
        "(<name>.safetensors; the prototype itself when the model takes other than 1 or 3 "
        "channels, whose PNG is a preview)",
    )
    p.add_argument(
        "--preview-channels",
        metavar="C[,C,C]",
        type=_channels,
        help="with --out: the channels the PNGs show, 1 (grayscale) or 3 (RGB) indices "
        "(default: the stored preview: all of a 1- or 3-channel image, else 0,1,2)",
    )


def _channels(text: str) -> list[int]:
    try:
        return [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected channel indices such as 0 or 3,1,2"
        ) from None


def save_prototypes(
    client: Any,
    job: Any,
    out: Path,
    *,
    include_float: bool = False,
    preview_channels: list[int] | None = None,
) -> list[Path]:
    """Fetch every prototype of a finished job and write its PNG + JSON record into ``out``
    (names as ``protolens generate`` gives them; a name two targets share gets the
    prototype's position in the job appended), then ``job.json``. ``include_float``: also
    its lossless float32 tensor (``<name>.safetensors``); ``preview_channels``: the
    channels the PNGs show (1 or 3 indices; default the stored preview)."""
    paths: list[Path] = []
    used: set[str] = set()
    for summary in job.prototypes:
        extra: dict[str, Any] = {"include_float": True} if include_float else {}
        if preview_channels:
            extra["preview_channels"] = preview_channels
        prototype = client.get_prototype(job, summary.index, **extra)
        stem = prototype.stem
        if stem in used:
            stem = f"{stem}-{summary.index}"
        used.add(stem)
        paths += prototype.save(out, stem)
        if prototype.float_tensor:
            paths.append(out / f"{stem}.safetensors")
    if job.prototypes:
        (out / "job.json").write_text(json.dumps(job.to_dict(), indent=2, default=str) + "\n")
        paths.append(out / "job.json")
    return paths


# --- commands -------------------------------------------------------------------


def cmd_submit(args: argparse.Namespace) -> int:
    from protolens._cli.progress import follow

    targets = [parse_target(t) for t in args.target]
    with client_of(args) as client:
        job = client.create_prototype_job(
            args.model,
            targets,
            prototypes_per_target=args.prototypes,
            config={
                **parse_config(args.config, args.steps),
                **({"alpha": True} if args.alpha else {}),
            },
            seed=args.seed,
            reference_set=args.reference_set,
            priority=args.priority,
            request_id=args.request_id,
        )
        if args.wait:
            with _still_running(job.name):
                if not job.finished and not args.json:
                    follow(client, job)
                job = client.wait(job)
        files = (
            save_prototypes(
                client,
                job,
                args.out,
                include_float=args.float_files,
                preview_channels=args.preview_channels,
            )
            if (args.out and job.succeeded)
            else []
        )
    if args.json:
        _print_json({**job.to_dict(), "files": [str(f) for f in files]})
    else:
        print(_job_line(job))
        for f in files:
            print(f"  wrote {f}")
    _print_warnings(job)
    return 0


@contextlib.contextmanager
def _still_running(job: str) -> Iterator[None]:
    """Ctrl-C while waiting stops the waiting, not the job: say so, and how to go on."""
    try:
        yield
    except KeyboardInterrupt:
        from protolens import names

        job_id = names.JOBS.id(job)
        raise KeyboardInterrupt(
            f"stopped waiting; the job goes on (protolens watch {job_id} to follow it, "
            f"protolens cancel {job_id} to stop it)"
        ) from None


@contextlib.contextmanager
def _reconnect_notices() -> Iterator[None]:
    """Print the SDK's notes on a watch it is resuming (one line each, on stderr)."""
    logger = logging.getLogger("protolens.client")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("protolens: %(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def cmd_watch(args: argparse.Namespace) -> int:
    """Follow a job until it ends; a lost connection is resumed by the SDK (``WatchRetry``)."""
    from protolens._cli.progress import follow

    with client_of(args) as client, _reconnect_notices(), _still_running(args.job):
        if args.json:
            for event in client.watch_job(args.job):
                progress = {**vars(event.progress)}
                when = progress.pop("update_time")
                line = {
                    "state": event.state,
                    **progress,
                    "update_time": when.isoformat() if when else None,
                    "message": event.message,
                    "cursor": event.cursor,
                }
                print(json.dumps(line), flush=True)
            job = client.get_job_after_watch(args.job)
        else:
            follow(client, args.job)
            job = client.get_job_after_watch(args.job)
            print(_job_line(job))
    _print_warnings(job)
    return 0 if job.state == "SUCCEEDED" else 1


def cmd_get(args: argparse.Namespace) -> int:
    from protolens.errors import JobFailedError, ProtolensError

    with client_of(args) as client:
        job = client.get_job(args.job)
        if args.out and not job.succeeded:
            if job.finished:
                raise JobFailedError(job)
            raise ProtolensError(f"job {job.id} is {job.state}: wait for it (protolens watch)")
        files = (
            save_prototypes(
                client,
                job,
                args.out,
                include_float=args.float_files,
                preview_channels=args.preview_channels,
            )
            if args.out
            else []
        )
        scores, unshown = ({}, 0) if args.json else _path_similarities(client, job)
    if args.json:
        _print_json({**job.to_dict(), "files": [str(f) for f in files]})
    else:
        print(_job_line(job))
        for s in job.prototypes:
            kind = " (multi-label: the label's own probability)" if s.multi_label else ""
            print(f"  {s.name} {s.target.label()} p={s.probability:.3f}{kind}")
            if s.index in scores:
                print(f"    path similarity {scores[s.index]}")
        if unshown:
            print(
                f"  path similarity of {unshown} more scored prototypes: in their records, "
                f"protolens get {job.id} --out DIR"
            )
        for f in files:
            print(f"  wrote {f}")
    _print_warnings(job)
    return 0


SCORES_SHOWN = 20  # `get` fetches the scores of at most this many prototypes to print them


def _path_similarities(client: Any, job: Any) -> tuple[dict[int, str], int]:
    """The headline path similarity of a finished job's scored prototypes (one
    GetPrototype each, for the first ``SCORES_SHOWN``), by index, and how many scored
    ones were left out."""
    from protolens.errors import ProtolensError

    scored = [s for s in job.prototypes if s.has_scores]
    shown: dict[int, str] = {}
    for s in scored[:SCORES_SHOWN]:
        try:
            shown[s.index] = client.get_prototype(job, s.index).scores.summary_text()
        except ProtolensError as e:  # the job's line is still worth printing
            shown[s.index] = f"unavailable: {e}"
    return shown, len(scored) - len(shown)


def cmd_cancel(args: argparse.Namespace) -> int:
    with client_of(args) as client:
        job = client.cancel_job(args.job)
    if args.json:
        _print_json(job.to_dict())
    else:
        print(_job_line(job))
    return 0


def cmd_layers(args: argparse.Namespace) -> int:
    with client_of(args) as client:
        layers = client.layers(args.model)
    if args.json:
        _print_json([{"name": layer.name, "shape": list(layer.shape)} for layer in layers])
        return 0
    width = max((len(layer.name) for layer in layers), default=0)
    for layer in layers:
        print(f"{layer.name:<{width}}  {'x'.join(map(str, layer.shape))}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    with client_of(args) as client:
        models = client.list_models()
    if args.json:
        _print_json([{**asdict(m), "id": m.id} for m in models])
        return 0
    for m in models:
        s = m.input_spec
        if not m.usable:
            print(f"{m.id}\t{m.state}\t{m.unusable_reason}")
            continue
        classes = f"{m.num_classes} {'labels, multi-label' if m.multi_label else 'classes'}"
        print(f"{m.id}\t{classes}\t{s.channels}x{s.height}x{s.width}\t{m.source}")
    return 0
