"""The server side's commands of ``protolens``: generate, isolate, check, serve, worker, up, web,
demo.

``register`` is the ``protolens.commands`` entry point named ``server`` (pyproject.toml):
the client CLI calls it to add these commands, in this order, and never imports this
package by name. Each module imports torch, Redis and the rest only when its command
runs, and each command runs under ``edge.command_errors``.
"""

from __future__ import annotations

import argparse

from protolens_server.cli import check, generate, isolate, service


def register(subparsers: argparse._SubParsersAction) -> None:
    for module in (generate, isolate, check, service):
        module.register(subparsers)
