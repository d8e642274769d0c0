"""``protolens check MODEL [--baseline MODEL] [--policy policy.yaml] [--report out.html] [--json]``.

A CI gate for a model version: generate its prototypes (and the baseline's),
compare, apply the policy, write the report. Exit codes: 0 the policy passed,
1 a rule failed, 2 an error (bad input, unreadable model), 130 cancelled (Ctrl-C).

Where the prototypes come from:

- default: the engine in this process, with a cache folder (``--cache-dir``,
  default ``$PROTOLENS_CACHE_DIR/checks`` or ``~/.cache/protolens/checks``)
  keyed like the service's Redis cache, so re-checking an unchanged version
  reads files and generates nothing;
- ``--address HOST:PORT``: the service (``CheckService``): its workers
  generate, its cache is shared by everyone who checks the same version.

MODEL is a ``name@version`` of ``--model-store`` (the versioned store folder),
an MLflow ``models:/NAME/VERSION``, a built-in, or a model file (.pt/.pt2/.mar).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from protolens_server.engine.types import GenerationConfig

from protolens.errors import ProtolensError as ClientError

from protolens_server.cli.edge import command_errors

EXIT_PASS, EXIT_FAIL, EXIT_ERROR, EXIT_CANCELLED = 0, 1, 2, 130

_DESCRIPTION = """A CI gate for a model version: generate its prototypes (and the baseline's),
compare them class by class (confidence, path similarity, drift, cross-scores,
entanglement), apply the policy, and write an HTML report and JSON.

MODEL is a name@version of --model-store (NAME/VERSION/ folders), an MLflow
models:/NAME/VERSION, a built-in, or a model file (.pt/.pt2/.mar).

Prototypes are made in this process, cached in --cache-dir, so re-checking an
unchanged version generates nothing; or, with --address, by the service's workers
(its cache is shared by everyone who checks the same version)."""

_EPILOG = """exit codes: 0 the policy passed, 1 a rule failed, 2 an error (bad input, unreadable
model), 130 cancelled (Ctrl-C).

example:
  protolens check vision@2 --baseline vision@1 --model-store models/ \\
      --policy policy.yaml --report report.html   (docs/checks.md)
  protolens check vision@2 --baseline vision@1 --model-store models/ --policy default"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "check",
        help="check a model version: prototypes, drift vs a baseline, policy, HTML report",
        description=_DESCRIPTION,
        epilog=_EPILOG,
    )
    p.add_argument("model", metavar="MODEL", help="model version to check (e.g. vision@2)")
    p.add_argument(
        "--baseline",
        metavar="MODEL",
        help="earlier version to compare with; 'previous': the version registered before "
        "MODEL's (in --model-store, or in MLflow for models:/NAME/VERSION)",
    )
    p.add_argument(
        "--classes",
        metavar="C",
        nargs="+",
        help="class indices or names (comma or space separated; default: all)",
    )
    p.add_argument(
        "--policy",
        metavar="YAML",
        help="policy file (thresholds), or 'default' for the shipped policy (docs/checks.md)",
    )
    p.add_argument("--report", metavar="HTML", type=Path, help="write the HTML report here")
    p.add_argument("--report-json", metavar="PATH", type=Path, help="write the JSON report here")
    p.add_argument("--json", action="store_true", help="print the JSON report on stdout")
    p.add_argument("--model-store", metavar="DIR", type=Path, help="versioned model store")
    p.add_argument("--reference", metavar="DIR", help="reference images for path similarity")
    p.add_argument(
        "--steps",
        type=int,
        default=0,
        metavar="N",
        help="fixed optimisation steps (0, the engine's default: until converged)",
    )
    p.add_argument("--prototypes", type=int, default=1, metavar="N", help="prototypes per class")
    p.add_argument("--diversity", type=float, default=0.0, metavar="W", help="diversity weight")
    p.add_argument(
        "--lr",
        type=float,
        default=0.0,
        metavar="LR",
        help="learning rate (0, the engine's default: found per model)",
    )
    p.add_argument(
        "--transforms",
        default="medium",
        choices=("none", "small", "medium", "large", "xlarge"),
        help="random transforms",
    )
    p.add_argument(
        "--param",
        default="fourier",
        choices=("fourier", "pixel", "maco"),
        help="image parameterisation (local checks; docs/engine.md)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="any other generation option (repeatable; local checks), e.g. --set"
        " margin_temperature=3 (the fields: docs/engine.md)",
    )
    p.add_argument(
        "--seed", type=int, default=0, metavar="N", help="random seed (same seed, same pixels)"
    )
    p.add_argument(
        "--cache-dir",
        metavar="DIR",
        type=Path,
        help="local prototype cache (default: $PROTOLENS_CACHE_DIR/checks or "
        "~/.cache/protolens/checks)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (local checks)")
    p.add_argument("--address", metavar="HOST:PORT", help="run the check on this service")
    p.add_argument(
        "--api-key", default=None, metavar="KEY", help="API key for --address ($PROTOLENS_API_KEY)"
    )
    p.set_defaults(func=run)


@command_errors()
def run(args: argparse.Namespace) -> int:
    from protolens_server.errors import GenerationCancelled, ProtolensError

    try:
        if not args.address:
            _needs_a_store(args)  # before the slow imports of a local check
        result = _run_remote(args) if args.address else _run_local(args)
    except GenerationCancelled:
        print("protolens check: cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    except ProtolensError as exc:
        reason = getattr(exc, "reason", "")
        print(f"protolens check: {reason}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except (ClientError, ConnectionError) as exc:  # the SDK's (--address), or a socket's
        print(f"protolens check: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return _finish(args, result)


def _needs_a_store(args: argparse.Namespace) -> None:
    """A NAME@VERSION that is no file names a version in a model store: without
    --model-store, say so at once (it used to be MODEL_NOT_FOUND after loading torch)."""
    from protolens_server.errors import InvalidArgument

    if args.model_store is not None:
        return
    for ref in (args.model, args.baseline):
        if not ref or ref == "previous" or "@" not in ref or any(c in ref for c in ":/"):
            continue
        if Path(ref).exists():
            continue
        name, _, version = ref.rpartition("@")
        raise InvalidArgument(
            "--model-store",
            f"{ref} names version {version} of {name!r} in a model store: pass --model-store "
            f"DIR, the folder holding {name}/{version}/ (e.g. {name}/{version}/model.pt2)",
        )


def split_classes(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def _config(args: argparse.Namespace) -> GenerationConfig:
    from protolens_server.engine.types import GenerationConfig

    return GenerationConfig(
        steps=args.steps,
        prototypes=args.prototypes,
        diversity=args.diversity,
        lr=args.lr,
        transforms=args.transforms,
        parameterisation=args.param,
    ).replace(**GenerationConfig.parse_changes(args.set))


def _run_local(args: argparse.Namespace) -> dict[str, Any]:
    from protolens_server.checks import Policy, run_check, write_html
    from protolens_server.cpu_budget import configure_torch_threads

    configure_torch_threads()  # as generate: the CPUs this process may use, fixed for the run

    catalog = None
    if args.model_store is not None:
        from protolens_server.models import ModelCatalog

        catalog = ModelCatalog(args.model_store, mlflow_tracking_uri="env")
    policy = Policy.load(args.policy) if args.policy else Policy()
    stop = threading.Event()
    with _progress() as on_progress, _ctrl_c(stop):
        result = run_check(
            args.model,
            baseline=args.baseline,
            catalog=catalog,
            classes=split_classes(args.classes),
            config=_config(args),
            seed=args.seed,
            reference=args.reference,
            policy=policy,
            cache_dir=args.cache_dir,
            device=args.device,
            on_progress=on_progress,
            should_stop=stop.is_set,
        )
    if args.report:
        write_html(result, args.report)
    return result.to_dict()


def _run_remote(args: argparse.Namespace) -> dict[str, Any]:
    from protolens import Client
    from protolens.auth import auth_metadata

    from protolens_server.checks.policy import policy_yaml

    if args.set:
        from protolens_server.errors import InvalidArgument

        raise InvalidArgument("--set", "applies to local checks only (drop --address)")
    policy_text = policy_yaml(args.policy) if args.policy else ""
    metadata = auth_metadata(args.api_key or os.environ.get("PROTOLENS_API_KEY", ""))
    with Client(args.address, metadata=metadata) as client, _progress() as on_progress:
        check = client.start_check(
            args.model,
            baseline=args.baseline or "",
            classes=split_classes(args.classes) or [],
            steps=args.steps,
            prototypes=args.prototypes,
            seed=args.seed,
            policy_yaml=policy_text,
        )
        try:
            check = client.wait_check(check.name, on_progress=on_progress)
        except KeyboardInterrupt:
            client.cancel_check(check.name)
            from protolens_server.errors import GenerationCancelled

            raise GenerationCancelled("the check was cancelled") from None
        if check.state != "SUCCEEDED":
            from protolens_server.errors import FailedPrecondition

            raise FailedPrecondition(f"check {check.name} ended {check.state}: {check.error}")
        report = client.get_check_report(check.name)
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(report.html, encoding="utf-8")
    return json.loads(report.json)


def _finish(args: argparse.Namespace, doc: dict[str, Any]) -> int:
    from protolens.files import caveat_lines

    from protolens_server.checks.matching import describe as describe_class_match

    for line in caveat_lines(doc.get("caveats") or ()):
        print(f"protolens check: warning: {line}", file=sys.stderr)
    if args.report_json:
        args.report_json.parent.mkdir(parents=True, exist_ok=True)
        args.report_json.write_text(json.dumps(doc, indent=2))
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        verdict = "PASS" if doc["passed"] else "FAIL"
        g = doc["generation"]
        print(
            f"{verdict} {doc['model']['ref']}"
            + (f" vs {doc['baseline']['ref']}" if doc.get("baseline") else "")
            + f": {len(doc['classes'])} classes, {g['cache_hits']}/{g['jobs']} jobs from the cache"
        )
        for rule in doc["rules"]:
            if rule["status"] == "fail":
                print(f"  failed {rule['rule']}: {rule['message']}")
        if doc["flagged_classes"]:
            print(f"  flagged: {', '.join(doc['flagged_classes'])}")
        paired = describe_class_match(doc.get("class_match"))
        if paired:
            print(f"  {paired}")
        if doc.get("confirmation"):
            print(f"  {confirmation_line(doc['confirmation'])}")
        if args.report:
            print(f"  report: {args.report}")
    return EXIT_PASS if doc["passed"] else EXIT_FAIL


def confirmation_line(confirmation: dict[str, Any]) -> str:
    """``flags confirmed on 3 prototypes: disc (cross_score, drift); diamond (cleared)``."""
    parts = []
    for c in confirmation["classes"]:
        kept = c["flags_confirmed"]
        parts.append(f"{c['name']} ({', '.join(kept) if kept else 'cleared'})")
    return f"flags confirmed on {confirmation['prototypes']} prototypes: {'; '.join(parts)}"


class _progress:
    """A tqdm bar on stderr when it is a terminal; otherwise a plain line per 10% (CI logs)."""

    def __enter__(self) -> Callable[[float, str], None]:
        if not sys.stderr.isatty():
            self.bar = None
            last = {"step": -1, "message": ""}

            def log_line(fraction: float, message: str) -> None:
                step = int(10 * min(1.0, max(0.0, fraction)))
                if step != last["step"] or message != last["message"]:
                    last.update(step=step, message=message)
                    print(f"protolens check: {message} {10 * step}%", file=sys.stderr, flush=True)

            return log_line
        from tqdm import tqdm

        self.bar = tqdm(total=1000, file=sys.stderr, leave=False, bar_format="{l_bar}{bar}")

        def on_progress(fraction: float, message: str) -> None:
            self.bar.n = int(1000 * min(1.0, max(0.0, fraction)))
            self.bar.set_description_str(message, refresh=False)
            self.bar.refresh()

        return on_progress

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


class _ctrl_c:
    """First Ctrl-C asks the engine to stop between steps (no half cache entry is written)."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.previous: Any = None

    def __enter__(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        self.previous = signal.getsignal(signal.SIGINT)

        def handler(signum: int, frame: FrameType | None) -> None:
            if self.stop.is_set():
                raise KeyboardInterrupt
            self.stop.set()

        signal.signal(signal.SIGINT, handler)

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
