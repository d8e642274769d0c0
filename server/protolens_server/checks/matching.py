"""Which baseline class each of the checked model's classes is compared with.

A retrain rarely keeps its label list byte for byte: a class is added, a labels file is
regenerated in another order (``ImageFolder`` sorts folder names, so a new folder shifts
every index after it). Compared index by index, such a version pairs each class with
another class's prototypes and every class looks changed, which buries the one that did.
So a check pairs classes **by name** when both versions carry their own class names, and
by index otherwise (the policy's ``match_classes``: ``auto``, ``name``, ``index``).

Names are matched as they are written. A name that occurs more than once in a version
(ImageNet's two ``crane`` classes) pairs by its order of occurrence: the first ``crane``
with the first. A class only the model has is *added* (its prototypes are checked, with
nothing to compare them with); one only the baseline has is *removed*. That the indices
moved, or a class went, is the ``same_class_names`` rule's to judge
(``checks/policy.py``): the pairing only makes the comparison compare like with like.

Every comparison happens in the model's index space: the baseline's prototypes are keyed
by the model's index of their class, and a baseline probability row is re-ordered into the
model's classes (``ClassMatch.to_model_columns``) before an entanglement graph is drawn.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from protolens_server.errors import InvalidArgument, ReferenceSetError
from protolens_server.models.classes import is_index_text

if TYPE_CHECKING:
    import torch

    from protolens_server.models.handle import ModelHandle

MODES = ("auto", "name", "index")
T = TypeVar("T")


@dataclass(frozen=True)
class ClassMatch:
    """The pairing of the model's classes with the baseline's (module doc)."""

    by: str  # "name" | "index"
    baseline_of: Mapping[int, int]  # model class index -> baseline class index
    model_classes: int  # how many classes the model has
    baseline_classes: int
    added: tuple[int, ...] = ()  # model indices with no baseline class
    removed: tuple[int, ...] = ()  # baseline indices with no class in the model

    @classmethod
    def identity(cls, num_classes: int) -> ClassMatch:
        return cls("index", {i: i for i in range(num_classes)}, num_classes, num_classes)

    @property
    def moved(self) -> dict[int, int]:
        """Classes paired with a baseline class at another index: model -> baseline index."""
        return {m: b for m, b in self.baseline_of.items() if m != b}

    def baseline_indices(self, classes: Sequence[int]) -> list[int]:
        """The baseline's indices of ``classes`` (model indices), leaving out added ones."""
        return [self.baseline_of[c] for c in classes if c in self.baseline_of]

    def to_model(self, by_baseline_class: Mapping[int, T]) -> dict[int, T]:
        """Values keyed by baseline class index, re-keyed by the model's index of each class."""
        model_of = {b: m for m, b in self.baseline_of.items()}
        return {model_of[b]: v for b, v in by_baseline_class.items() if b in model_of}

    def to_model_columns(self, rows: torch.Tensor) -> torch.Tensor:
        """(P, baseline classes) -> (P, model classes): each model class's column is its
        baseline class's (0 for an added class; a removed class's column is dropped)."""
        if self.by == "index" and self.model_classes == self.baseline_classes:
            return rows
        source, present = self._columns
        picked = rows.index_select(1, source.to(rows.device))
        return picked * present.to(rows.device, rows.dtype)

    @functools.cached_property
    def _columns(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per model class: its baseline column (0 for an added class) and 1 where it has
        one (memoised: a check reads every class's rows through it)."""
        import torch

        source = torch.zeros(self.model_classes, dtype=torch.long)
        present = torch.zeros(self.model_classes)
        for m, b in self.baseline_of.items():
            source[m], present[m] = b, 1.0
        return source, present

    def to_dict(self, names: Sequence[str], baseline_names: Sequence[str]) -> dict[str, Any]:
        def named(index: int, pool: Sequence[str]) -> dict[str, Any]:
            return {"class": index, "name": pool[index] if index < len(pool) else f"class {index}"}

        return {
            "by": self.by,
            "paired": len(self.baseline_of),
            "moved": [
                {**named(m, names), "baseline_class": b} for m, b in sorted(self.moved.items())
            ],
            "added": [named(i, names) for i in self.added],
            "removed": [named(i, baseline_names) for i in self.removed],
        }


def classes_per_version(classes: Sequence[int], match: ClassMatch | None) -> list[list[int]]:
    """The checked ``classes`` (model indices) in each version's own indices, the model's
    first, then, with a baseline (``match``; None: none), the baseline's, which generates
    its own indices of the same classes and leaves out the added ones."""
    own = [list(classes)]
    if match is not None:
        own.append(match.baseline_indices(classes))
    return own


def refuse_numbered_folders(
    folders: Iterable[str],
    match: ClassMatch | None,
    names: Sequence[str],
    baseline_names: Sequence[str],
    *,
    where: str,
    field: str,
) -> None:
    """Refuse a reference set whose numbered class folders mean another class in each
    version: when a check pairs classes by name and they moved, folder ``3`` is the
    model's class 3 to one version and the baseline's class 3 to the other, so the two
    would be scored against different images under one name (``ReferenceSetError`` on
    ``field``, saying which folders to rename to what). Named folders are read by name
    in each version, so they are always safe."""
    if match is None:
        return
    numbered = sorted({int(f.strip()) for f in folders if is_index_text(f)})
    # a number beyond both versions' classes is no class at all: the set's own reading
    # refuses it (out of range), naming the folder
    classes = max(len(names), len(baseline_names))
    ambiguous = [n for n in numbered if n < classes and match.baseline_of.get(n) != n]
    if not ambiguous:
        return

    def name(pool: Sequence[str], index: int) -> str:
        return repr(pool[index]) if index < len(pool) else "no class"

    shown = ambiguous[:4]
    clashes = "; ".join(
        f"folder {n}: {name(names, n)} in the model, {name(baseline_names, n)} in the baseline"
        for n in shown
    )
    more = f"; and {len(ambiguous) - len(shown)} more" if len(ambiguous) > len(shown) else ""
    renames = ", ".join(f"{n} -> {names[n]}" for n in shown if n < len(names))
    raise ReferenceSetError(
        field,
        f"{where} numbers its class folders, and the two versions number their classes "
        f"differently (the check pairs them by name): {clashes}{more}. Rename those folders "
        "to class names" + (f" ({renames})" if renames else "") + " so both versions read "
        "each folder as the same class",
    )


def match_classes(model: ModelHandle, baseline: ModelHandle, by: str = "auto") -> ClassMatch:
    """Pair ``model``'s classes with ``baseline``'s (module doc); ``by``: ``auto`` (names
    when both versions carry their own, else indices), ``name`` or ``index``. Raises
    ``InvalidArgument`` (field ``baseline``) when the two cannot be paired."""
    if by not in MODES:
        raise InvalidArgument("policy.match_classes", f"must be one of {', '.join(MODES)}")
    new_names = tuple(model.given_class_names)
    old_names = tuple(baseline.given_class_names)
    named = bool(new_names) and bool(old_names)
    if by == "name" and not named:
        which = "the model has" if not new_names else "the baseline has"
        if not new_names and not old_names:
            which = "neither version has"
        raise InvalidArgument(
            "baseline",
            f"cannot match classes by name: {which} no class names of its own; register "
            "the version with its labels (class_names in the sidecar) or give a policy "
            "with match_classes: index",
        )
    if by == "index" or not named:
        return _by_index(model.num_classes, baseline.num_classes, named)
    return _by_name(new_names, old_names)


def _by_index(new: int, old: int, named: bool) -> ClassMatch:
    if new != old:
        hint = (
            "give a policy with match_classes: name to pair classes by their names"
            if named
            else "to compare versions with different classes, give both their class names "
            "(class_names in the sidecar) and the check pairs classes by name"
        )
        raise InvalidArgument(
            "baseline",
            f"has {old} classes but the model has {new}, and classes are matched by index; " + hint,
        )
    return ClassMatch.identity(new)


def _occurrences(names: Sequence[str]) -> dict[tuple[str, int], int]:
    """(name, its k-th occurrence) -> index: a name repeated in one version pairs in order."""
    seen: dict[str, int] = {}
    out = {}
    for i, name in enumerate(names):
        k = seen.get(name, 0)
        seen[name] = k + 1
        out[(name, k)] = i
    return out


def _by_name(new: Sequence[str], old: Sequence[str]) -> ClassMatch:
    new_keys, old_keys = _occurrences(new), _occurrences(old)
    pairs = {i: old_keys[key] for key, i in new_keys.items() if key in old_keys}
    if not pairs:
        raise InvalidArgument(
            "baseline",
            f"shares no class name with the model (model: {_sample(new)}; baseline: "
            f"{_sample(old)}); a baseline must be an earlier version of the same classifier, "
            "or give a policy with match_classes: index to compare the classes by position",
        )
    paired_old = set(pairs.values())
    return ClassMatch(
        "name",
        dict(sorted(pairs.items())),
        len(new),
        len(old),
        added=tuple(i for i in range(len(new)) if i not in pairs),
        removed=tuple(i for i in range(len(old)) if i not in paired_old),
    )


def _sample(names: Sequence[str], shown: int = 3) -> str:
    head = ", ".join(repr(n) for n in names[:shown])
    return head + (f", ... ({len(names)} in all)" if len(names) > shown else "")


def describe(class_match: Mapping[str, Any] | None, shown: int = 5) -> str:
    """One line on a pairing that is not index for index (``ClassMatch.to_dict``), for the
    CLI and the report; "" when every class is compared at its own index."""
    if not class_match or not (
        class_match["moved"] or class_match["added"] or class_match["removed"]
    ):
        return ""

    def listed(items: list[str]) -> str:
        more = len(items) - shown
        return ", ".join(items[:shown]) + (f", and {more} more" if more > 0 else "")

    parts = []
    if class_match["moved"]:
        moved = [f"{m['name']} {m['baseline_class']} -> {m['class']}" for m in class_match["moved"]]
        parts.append(f"{len(moved)} at another index ({listed(moved)})")
    for key in ("added", "removed"):
        if class_match[key]:
            names = [c["name"] for c in class_match[key]]
            parts.append(f"{len(names)} {key} ({listed(names)})")
    return f"classes compared by {class_match['by']}: " + "; ".join(parts)
