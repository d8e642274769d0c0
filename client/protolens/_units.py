"""The unit-target syntax of the CLI and ``protolens.unit_target``.

A term is ``layer:NAME:channel:C``, ``layer:NAME:neuron:C`` (the centre),
``layer:NAME:neuron:C@Y,X`` (or ``@T`` for a token), or
``layer:NAME:direction:V1,V2,...``; terms join with ``+`` and ``-`` and take an
optional weight, ``0.5*layer:...``::

    layer:features.3:channel:12-0.5*layer:features.3:channel:7+layer:logits:channel:281
"""

from __future__ import annotations

import re

from protolens.errors import InvalidArgumentError
from protolens.types import Target, UnitTerm

PREFIX = "layer:"
# a term starts at the text's start or at a + or - followed by an optional weight and "layer:"
_TERM = re.compile(r"(?:^\s*([+-]?)|([+-]))\s*(?:(\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)\s*\*\s*)?layer:")
_KINDS = ("channel", "neuron", "direction")


def is_unit_text(text: str) -> bool:
    return PREFIX in text


def unit_target(text: str) -> Target:
    """A unit target from the CLI's syntax, e.g.
    ``unit_target("layer:features.3:channel:12-0.5*layer:features.3:channel:7")``;
    ``InvalidArgumentError`` saying what is wrong and the syntax."""
    return Target.unit(*parse_units(text))


def parse_units(text: str) -> tuple[UnitTerm, ...]:
    """The terms of ``text``; ``InvalidArgumentError`` saying what is wrong and the syntax."""
    starts = list(_TERM.finditer(text.strip()))
    body = text.strip()
    if not starts or starts[0].start() != 0:
        raise _bad(text, "a unit target starts with layer:NAME:")
    terms = []
    for k, m in enumerate(starts):
        end = starts[k + 1].start() if k + 1 < len(starts) else len(body)
        sign = -1.0 if "-" in (m.group(1) or "", m.group(2) or "") else 1.0
        weight = sign * (float(m.group(3)) if m.group(3) else 1.0)
        terms.append(_term(body[m.end() : end].strip(), weight, text))
    return tuple(terms)


def _term(rest: str, weight: float, text: str) -> UnitTerm:
    parts = rest.split(":", 2)
    if len(parts) != 3 or not parts[0]:
        raise _bad(text, f"{rest!r} is not NAME:channel|neuron|direction:VALUE")
    layer, unit, value = (p.strip() for p in parts)
    if unit not in _KINDS:
        raise _bad(text, f"unknown unit {unit!r}: use channel, neuron or direction")
    try:
        if unit == "direction":
            direction = tuple(float(v) for v in value.split(","))
            return UnitTerm(layer, unit, direction=direction, weight=weight)
        index, _, where = value.partition("@")
        position = tuple(int(v) for v in where.split(",")) if where else ()
        if position and unit != "neuron":
            raise _bad(text, "only a neuron has a position (@Y,X)")
        return UnitTerm(layer, unit, int(index), position, weight=weight)
    except ValueError:
        raise _bad(text, f"{value!r} is not a number list for {unit}") from None


def _bad(text: str, why: str) -> InvalidArgumentError:
    import grpc

    return InvalidArgumentError(
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
        f"targets: {text!r}: {why} (syntax: [W*]layer:NAME:channel:C | neuron:C[@Y,X] |"
        " direction:V1,V2,... joined by + or -; see `protolens layers MODEL`)",
        {"field": "targets"},
    )
