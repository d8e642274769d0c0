"""Targets between the layers: the queue's ``TargetSpec`` and the engine's ``Target``.

One conversion each way, used by the API (validation), the worker and local checks,
so a unit target's terms cross every edge the same way.
"""

from __future__ import annotations

from protolens_server.engine.types import Target, UnitTerm
from protolens_server.queue.records import TargetSpec, UnitSpec


def engine_target(spec: TargetSpec) -> Target:
    """The engine's target for a stored one (its shape rules apply: InvalidArgument)."""
    units = tuple(
        UnitTerm(u.layer, u.unit, u.index, u.position, u.direction, u.weight)  # type: ignore[arg-type]
        for u in spec.units
    )
    return Target(tuple(spec.classes), spec.kind, units)  # type: ignore[arg-type]


def target_spec(target: Target) -> TargetSpec:
    """The stored form of an engine target."""
    units = tuple(
        UnitSpec(u.layer, u.unit, u.index, u.position, u.direction, u.weight) for u in target.units
    )
    return TargetSpec(tuple(target.classes), target.kind, units)
