"""The ``protolens`` command: one argparse tree, one place that turns errors into one line.

Client commands (submit, watch, get, cancel, models, admin) live in ``protolens._cli``;
the server side adds its own (generate, check, serve, worker, up, web, demo) through
the entry-point group ``protolens.commands`` (``_cli.entry_points``), so the client
imports nothing from it. Those import torch only when run: ``protolens --help`` works
on a client-only install, and a server-side command there says what to install.

What a command added that way may use of the client CLI is public here:
``HelpFormatter``, ``parse_target``, ``save_prototypes``, ``follow`` (the progress bar) and
``STEPS_DEFAULT`` (the engine's step default in words, for --steps help).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from protolens._cli import admin, entry_points, jobs
from protolens._cli import help as help_format
from protolens._cli.help import HelpFormatter
from protolens._cli.jobs import STEPS_DEFAULT, parse_target, save_prototypes
from protolens._cli.progress import follow
from protolens.errors import CAUSE_TEXT, ConnectionError, ProtolensError

__all__ = [
    "STEPS_DEFAULT",
    "HelpFormatter",
    "build_parser",
    "follow",
    "main",
    "parse_target",
    "save_prototypes",
]

_FIRST_STEPS = """first steps:
  protolens demo              the main job end to end on this machine (docs: README.md)
  protolens up                the service on this machine, with the gallery in a browser
  protolens COMMAND --help    what a command does, its options and their defaults"""


class Parser(argparse.ArgumentParser):
    """The ``protolens`` parser: ``commands`` names every command, ``server_side`` those
    that other packages added (``protolens.commands`` entry points)."""

    commands: frozenset[str] = frozenset()
    server_side: frozenset[str] = frozenset()


def build_parser() -> Parser:
    parser = Parser(
        prog="protolens",
        description="Prototype generation for image classifiers: locally or as a service.",
        epilog=_FIRST_STEPS,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser.server_side = entry_points.add_commands(sub)
    for module in (jobs, admin):
        module.register(sub)  # each sets ``func`` (args -> exit code) on its parser(s)
    parser.commands = frozenset(sub.choices)
    help_format.apply(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    command = next((a for a in argv if not a.startswith("-")), "")
    args: argparse.Namespace | None = None
    try:
        if command and not parser.server_side and command not in parser.commands:
            raise entry_points.not_a_command(command)
        args = parser.parse_args(argv)  # may import server-side code (help's defaults)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        return int(args.func(args) or 0)
    except KeyboardInterrupt as exc:  # a command may say what the interruption left
        print(f"protolens: {exc or 'interrupted'}", file=sys.stderr)
        return 130
    except ModuleNotFoundError as exc:
        if command not in parser.server_side:
            raise
        return _one_line(entry_points.missing_server_side(exc.name or ""))
    except ProtolensError as exc:
        return _one_line(exc, _connection_hint(exc, args))


def _one_line(exc: ProtolensError, text: str = "") -> int:
    """Print ``protolens: REASON: message`` (or ``text``) on stderr; exit status 1."""
    if not text:
        prefix = f"{exc.reason}: " if exc.reason and exc.reason != "PROTOLENS_ERROR" else ""
        text = f"{prefix}{exc}"
    print(f"protolens: {text}", file=sys.stderr)
    return 1


def _connection_hint(exc: ProtolensError, args: argparse.Namespace | None) -> str:
    """One line for a service that cannot be reached: where, why, and what to do."""
    if not isinstance(exc, ConnectionError) or exc.cause not in CAUSE_TEXT:
        return ""
    from protolens.client import service_target  # grpc: not loaded unless a service is used

    address = service_target(getattr(args, "address", "") or "")
    todo = (
        "is that the protolens API's port? (`protolens up` serves it on 127.0.0.1:50051)"
        if exc.cause == "not_grpc"
        else "start one with `protolens up`, or point --address (or $PROTOLENS_ADDRESS) at it"
    )
    return f"UNAVAILABLE: no protolens API at {address}: {CAUSE_TEXT[exc.cause]}; {todo}"


if __name__ == "__main__":
    sys.exit(main())
