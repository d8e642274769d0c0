"""Turn a caller's class (an index, or a name in any case) into an output index."""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from typing import Protocol

from protolens_server.errors import UnknownClass


class HasClasses(Protocol):
    @property
    def class_names(self) -> tuple[str, ...]: ...

    @property
    def class_aliases(self) -> tuple[tuple[str, ...], ...]: ...


def _norm(text: str) -> str:
    return re.sub(r"[\s_]+", " ", text).strip().casefold()


def resolve_class(model: HasClasses, value: str | int, *, field: str = "target") -> int:
    """Index of ``value``: an int/digit string in range, or a class name or synonym.

    Names match case-insensitively (``_`` counts as a space). Display names win
    over synonyms; a synonym shared by several classes is an error listing them.
    """
    names = model.class_names
    n = len(names)
    if isinstance(value, bool):
        raise UnknownClass(field, f"{value!r} is not a class")
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        index = int(value)
        if 0 <= index < n:
            return index
        raise UnknownClass(
            field, f"class index {index} is out of range: the model has {n} classes (0..{n - 1})"
        )
    if not isinstance(value, str) or not value.strip():
        raise UnknownClass(field, f"{value!r} is not a class index or name")
    wanted = _norm(value)
    exact = [i for i, name in enumerate(names) if _norm(name) == wanted]
    if len(exact) == 1:
        return exact[0]
    aliases = model.class_aliases or ((),) * n
    by_alias = exact or [
        i for i, syns in enumerate(aliases) if any(_norm(s) == wanted for s in syns)
    ]
    if len(by_alias) == 1:
        return by_alias[0]
    if by_alias:
        options = ", ".join(f"{i} ({names[i]})" for i in by_alias[:8])
        raise UnknownClass(
            field, f"{value!r} is ambiguous: it names classes {options}; give the index"
        )
    raise UnknownClass(field, f"unknown class {value!r}{_suggest(wanted, names, aliases)}")


def _suggest(wanted: str, names: Sequence[str], aliases: Sequence[Sequence[str]]) -> str:
    candidates: dict[str, int] = {}
    for i, name in enumerate(names):
        candidates.setdefault(_norm(name), i)
        for syn in aliases[i] if i < len(aliases) else ():
            candidates.setdefault(_norm(syn), i)
    close = difflib.get_close_matches(wanted, list(candidates), n=3, cutoff=0.6)
    if not close:
        return f" (the model has {len(names)} classes; give a name or an index 0..{len(names) - 1})"
    seen: list[int] = []
    for c in close:
        if candidates[c] not in seen:
            seen.append(candidates[c])
    return "; did you mean " + " or ".join(f"{names[i]!r} ({i})" for i in seen) + "?"
