"""How ``protolens ... --help`` reads: descriptions as written, and every option's default.

``HelpFormatter`` wraps a command's description and epilog paragraph by paragraph,
keeping indented lines (examples) as written, and appends ``(default: X)`` to an
option's help unless the default is empty (None, False, "", []) or the help already
states it. An option whose
default is only known where the command runs (the engine's generation defaults
need torch) sets ``action.lazy_default`` to a no-argument callable: it is called
only when the help is shown, so ``protolens --help`` never imports torch.
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Callable
from typing import Any


class HelpFormatter(argparse.HelpFormatter):
    def _fill_text(self, text: str, width: int, indent: str) -> str:
        """Wrap each paragraph of a description or epilog; keep indented lines (examples)."""
        out = []
        for para in text.strip("\n").split("\n\n"):
            lines = para.splitlines()
            if any(line.startswith(" ") for line in lines[1:]) or para.startswith(" "):
                out.append("\n".join(indent + line for line in lines))
            else:
                out.append(
                    textwrap.fill(
                        " ".join(line.strip() for line in lines),
                        width,
                        initial_indent=indent,
                        subsequent_indent=indent,
                        break_on_hyphens=False,
                    )
                )
        return "\n\n".join(out)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default is argparse.SUPPRESS or "default" in text or action.option_strings == []:
            return text
        lazy: Callable[[], Any] | None = getattr(action, "lazy_default", None)
        default = lazy() if lazy is not None else action.default
        if default is None or default is False or default == "" or default == []:
            return text
        shown = str(default).replace("%", "%%")  # help strings are %-formatted
        return f"{text} (default: {shown})" if text else f"(default: {shown})"


def apply(parser: argparse.ArgumentParser) -> None:
    """Use ``HelpFormatter`` for ``parser`` and every subcommand parser below it."""
    parser.formatter_class = HelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                apply(child)
