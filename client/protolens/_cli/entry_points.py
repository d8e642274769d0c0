"""What other installed packages add to ``protolens``, found by entry point.

The server side (``protolens_server``, ``pip install 'protolens[server]'``) adds the
commands ``generate``, ``check``, ``serve``, ``worker``, ``up``, ``web`` and ``demo``, and
the hook that ``admin keys create --bootstrap`` calls. The client names none of its
modules; pyproject.toml does:

    [project.entry-points."protolens.commands"]
    server = "protolens_server.cli:register"

    [project.entry-points."protolens.hooks"]
    bootstrap-api-key = "protolens_server.cli.admin:bootstrap_api_key"

An entry point in ``protolens.commands`` points at ``register(subparsers)``, which adds
its package's commands and sets each one's ``func`` (args -> exit code); a command
that fails raises ``protolens.errors.ProtolensError``, printed as one line. An entry
point in ``protolens.hooks`` is a function the client calls by the entry point's name.
Server-side code that is missing or cannot be imported here, or that misses a module
while it runs, is one line saying what to install.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from protolens.errors import ProtolensError

COMMANDS = "protolens.commands"
HOOKS = "protolens.hooks"
SERVER_EXTRA = "pip install 'protolens[server]'"


def missing_server_side(module: str = "") -> ProtolensError:
    """The one-line error for server-side code that cannot run on this install."""
    missing = f" (missing {module})" if module else ""
    return ProtolensError(
        f"this command runs on the server side and needs its dependencies: {SERVER_EXTRA}" + missing
    )


def not_a_command(name: str) -> ProtolensError:
    """The one-line error for a command this install lacks, with no server side here."""
    return ProtolensError(
        f"no command {name!r} here: the server-side commands (generate, up, demo, ...) "
        f"come with {SERVER_EXTRA}"
    )


def add_commands(sub: argparse._SubParsersAction) -> frozenset[str]:
    """Add every installed package's commands to ``sub``; returns their names. An entry
    point whose package is not here adds none (its commands answer ``not_a_command``)."""
    before = set(sub.choices)
    for ep in entry_points(group=COMMANDS):
        try:
            register = ep.load()
        except ModuleNotFoundError as exc:
            if exc.name and ep.module.startswith(exc.name):
                continue  # metadata without its code (e.g. a client copied alone)
            raise
        register(sub)
    return frozenset(sub.choices) - before


def hook(name: str) -> Callable[..., Any]:
    """The function installed as ``name`` in ``protolens.hooks``. Where there is none, or
    it (or what it imports when called) is missing here, it raises ``ProtolensError``
    saying to install the server side."""
    for ep in entry_points(group=HOOKS, name=name):
        try:
            func = ep.load()
        except ModuleNotFoundError as exc:
            raise missing_server_side(exc.name or "") from exc
        return _needing_server_side(func)
    raise missing_server_side()


def _needing_server_side(func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ModuleNotFoundError as exc:
            raise missing_server_side(exc.name or "") from exc

    return call
