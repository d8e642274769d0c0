"""Turn a caller's class (an index, or a name in any case) into an output index."""

from __future__ import annotations

import difflib
import functools
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


_MAX_INDEX_DIGITS = 18  # longer digit strings are out of range for any model


def is_index_text(text: str) -> bool:
    """Whether ``text`` is read as a class index (ASCII digits, blanks around ignored),
    not as a name: the one rule for targets, reference labels and class folders."""
    text = text.strip()
    return bool(text) and text.isascii() and text.isdigit()


def resolve_class(model: HasClasses, value: str | int, *, field: str = "target") -> int:
    """Index of ``value``: an int/digit string in range, or a class name or synonym.

    Names match case-insensitively (``_`` counts as a space). Display names win
    over synonyms; a synonym shared by several classes is an error listing them.
    """
    return class_index(model).resolve(value, field=field)


def class_index(model: HasClasses) -> ClassIndex:
    """The (cached) name index of ``model``'s classes: resolve many values with it."""
    aliases = tuple(tuple(a) for a in model.class_aliases or ())
    return _index(tuple(model.class_names), aliases)


@functools.lru_cache(maxsize=16)
def _index(names: tuple[str, ...], aliases: tuple[tuple[str, ...], ...]) -> ClassIndex:
    return ClassIndex(names, aliases)


class ClassIndex:
    """Normalised names and synonyms -> class indices: one dict lookup per value."""

    def __init__(self, names: Sequence[str], aliases: Sequence[Sequence[str]]) -> None:
        self.names = tuple(names)
        self.aliases = tuple(tuple(a) for a in aliases) or ((),) * len(self.names)
        self._by_name: dict[str, list[int]] = {}
        self._by_alias: dict[str, list[int]] = {}
        for i, name in enumerate(self.names):
            self._by_name.setdefault(_norm(name), []).append(i)
        for i, synonyms in enumerate(self.aliases):
            for norm in dict.fromkeys(_norm(s) for s in synonyms):
                self._by_alias.setdefault(norm, []).append(i)

    def resolve(self, value: str | int, *, field: str = "target") -> int:
        names = self.names
        n = len(names)
        if isinstance(value, bool):
            raise UnknownClass(field, f"{value!r} is not a class")
        text = value.strip() if isinstance(value, str) else ""
        if isinstance(value, int) or is_index_text(text):
            if isinstance(value, str) and len(text) > _MAX_INDEX_DIGITS:
                shown = f"{text[:12]}... ({len(text)} digits)"
                raise UnknownClass(
                    field, f"class index {shown} is out of range: the model has {n} classes"
                )
            index = int(value)
            if 0 <= index < n:
                return index
            raise UnknownClass(
                field,
                f"class index {index} is out of range: the model has {n} classes (0..{n - 1})",
            )
        if not isinstance(value, str) or not text:
            raise UnknownClass(field, f"{value!r} is not a class index or name")
        wanted = _norm(value)
        exact = self._by_name.get(wanted, [])
        if len(exact) == 1:
            return exact[0]
        by_alias = exact or self._by_alias.get(wanted, [])
        if len(by_alias) == 1:
            return by_alias[0]
        if by_alias:
            options = ", ".join(f"{i} ({names[i]})" for i in by_alias[:8])
            raise UnknownClass(
                field, f"{value!r} is ambiguous: it names classes {options}; give the index"
            )
        raise UnknownClass(field, f"unknown class {value!r}{_suggest(wanted, names, self.aliases)}")


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
