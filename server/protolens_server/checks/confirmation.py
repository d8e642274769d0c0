"""A flag is confirmed on more prototypes before it counts.

A check makes ``config.prototypes`` prototypes per class (1 by default): a flagged class's
cross-score, drift and confidence then rest on one optimisation from one seed, and one
prototype can fail to carry over to a retrained twin while the class itself did not
change (the shortcut suite's ``glyph-cnn-model``: the twin's ``diamond`` prototype scored
0.00 in the new model, the mean over three prototypes 0.33; docs/checks.md). So once the
first comparison is done, each class flagged for a reason the policy fails on
(``CONFIRMED_FLAGS``) is generated again with ``CONFIRM_PROTOTYPES`` prototypes in both
versions (its first prototype is the same one: seeds are per prototype index), and the
comparison runs again on those. A flag that stays is backed by several samples; one that
clears was one prototype's.

Bounds: when more than ``CONFIRM_MAX_CLASSES`` classes are flagged the version differs
broadly, the verdict does not hinge on any one class, and nothing is generated again; a
check that already makes ``CONFIRM_PROTOTYPES`` or more per class has nothing to confirm.
The confirming jobs are ordinary cache-keyed jobs (their config differs in ``prototypes``
only), so a re-check of unchanged versions gets them from the cache too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from protolens_server.engine.types import GenerationConfig

if TYPE_CHECKING:
    from protolens_server.checks.prototypes import ClassPrototypes


class Flagged(Protocol):
    """What confirmation reads of a class's check (``result.ClassCheck``)."""

    class_index: int
    name: str
    flags: list[str]


CONFIRM_PROTOTYPES = 3
CONFIRM_MAX_CLASSES = 8
CONFIRMED_FLAGS = ("cross_score", "drift", "low_confidence")  # what the default policy fails on


def classes_to_confirm(classes: Sequence[Flagged], config: GenerationConfig) -> list[int]:
    """The classes whose flags need more prototypes (in the given order; maybe none)."""
    if config.prototypes >= CONFIRM_PROTOTYPES:
        return []
    flagged = [c.class_index for c in classes if any(f in CONFIRMED_FLAGS for f in c.flags)]
    return flagged if len(flagged) <= CONFIRM_MAX_CLASSES else []


def confirmation_config(config: GenerationConfig) -> GenerationConfig:
    """The config of the confirming jobs: the check's, with more prototypes."""
    return config.replace(prototypes=CONFIRM_PROTOTYPES)


def merged(
    first: Mapping[int, ClassPrototypes], again: Mapping[int, ClassPrototypes]
) -> dict[int, ClassPrototypes]:
    """The first round's prototypes with the confirmed classes' replaced by their new set."""
    out = dict(first)
    out.update(again)
    return out


@dataclass
class Confirmation:
    """Which classes were generated again, with how many prototypes, and their flags before."""

    prototypes: int
    flags_before: dict[int, list[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, checked: Sequence[Flagged], confirmed: Sequence[int]) -> Confirmation:
        """``confirmed`` classes with their flags in the first comparison (``checked``)."""
        before = {c.class_index: [f for f in c.flags if f in CONFIRMED_FLAGS] for c in checked}
        return cls(CONFIRM_PROTOTYPES, {c: before[c] for c in confirmed})

    def cleared(self, checked: Sequence[Flagged]) -> list[int]:
        """The confirmed classes that no longer carry any of the flags they were confirmed
        for, in the second comparison (``checked``)."""
        after = {c.class_index: c.flags for c in checked}
        return [c for c, flags in self.flags_before.items() if not set(flags) & set(after[c])]

    def to_dict(self, checked: Sequence[Flagged]) -> dict[str, Any]:
        after = {c.class_index: c for c in checked}
        return {
            "prototypes": self.prototypes,
            "classes": [
                {
                    "class": c,
                    "name": after[c].name,
                    "flags_before": flags,
                    "flags_confirmed": [f for f in after[c].flags if f in flags],
                }
                for c, flags in self.flags_before.items()
            ],
            "cleared": [after[c].name for c in self.cleared(checked)],
        }
