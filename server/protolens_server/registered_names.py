"""The one rule for the names callers give to what an admin registered on the server: a
model in the store (``models/catalog.py``: ``name`` or ``name@version``, each part such a
name) and a reference set under ``reference_root`` (``scores/naming.py``). Letters, digits
and ``._-``, starting with a letter or digit, at most 128 characters, never ``..``: a
name can never be a path."""

from __future__ import annotations

import re

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def is_name(name: str) -> bool:
    """A registered name: letters, digits, ``._-``, never a path."""
    return bool(NAME.fullmatch(name)) and ".." not in name
