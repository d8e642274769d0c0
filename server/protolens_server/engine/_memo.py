"""Memos held weakly per model: an entry lives as long as the model object does."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, TypeVar

M = TypeVar("M")


def memo_of(table: weakref.WeakKeyDictionary[Any, M], owner: Any, new: Callable[[], M]) -> M:
    """``owner``'s memo in ``table``, made with ``new`` on first use; a fresh one kept
    nowhere for an owner that cannot be weakly referenced (a plain function or a bound
    method as the model): it is then measured again on every call."""
    try:
        return table.setdefault(owner, new())
    except TypeError:
        return new()
