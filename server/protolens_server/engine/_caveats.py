"""Reference-set caveats: what makes a usable reference set weak for some classes' scores.

A set that cannot be used at all is a ``ReferenceSetError`` and no score. A caveat is
for a set that can be used but whose scores for a class measure something besides the
class; it is found once, from the images as the model receives them (after loading,
scaling and cropping), kept with the reference statistics (``ReferenceStats.caveats``)
and carried by every score of the classes it names (``PrototypeScores.caveats``).
Caveats never change a number: they are words beside the numbers.

- ``GREYSCALE_CLASS``: every image of a class is greyscale (no pixel's channels differ
  by more than 1/255) while the model takes colour and another class's images are in
  colour. The class mean then sits where grey images sit: at the layers that see
  colour, the score measures colour against grey as much as the class (the project's
  own evaluation: grey copies of a class's prototypes scored +0.25..+0.55 at five
  middle layers where the colour prototypes scored -0.24..-0.52, docs/scores.md).
  Not said when every class is grey (then nothing is compared with colour) nor for a
  one-channel model.
- ``DUPLICATE_IMAGES``: a class holds images identical at the model's input (the same
  file twice, or copies that load to the same pixels). The bootstrap draws each copy as
  an independent image, so the intervals narrow without any more evidence, and the
  class mean leans toward the copied image.
- ``NEAR_DUPLICATE_IMAGES``: a class holds images that show the same content without
  being identical: crops, rescaled or mirrored copies of one photo (``_near_duplicates``).
  The class mean is then those photos' texture and colour as much as the class (the
  project's evaluation, crops of one photo per class: natural photos of other subjects
  score far below 0 at the middle layers, docs/scores.md), and the bootstrap counts each
  view as an independent image. Identical copies are ``DUPLICATE_IMAGES`` only.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ._near_duplicates import near_duplicate_groups

GREYSCALE_CLASS = "GREYSCALE_CLASS"
DUPLICATE_IMAGES = "DUPLICATE_IMAGES"
NEAR_DUPLICATE_IMAGES = "NEAR_DUPLICATE_IMAGES"
CAVEATS = (GREYSCALE_CLASS, DUPLICATE_IMAGES, NEAR_DUPLICATE_IMAGES)
GREY_TOLERANCE = 1  # in 8-bit levels: a channel spread of 1 is rounding, not colour
_LISTED_GROUPS = 5  # duplicate groups named in a message (``files`` holds them all)
_LISTED_VIEWS = 3  # files named per group of near-duplicates
NEAR_DUPLICATES_PER_CLASS = 32  # images of a class compared pairwise, at most
NEAR_DUPLICATES_PER_SET = 512  # images of a set compared, at most (shared out over classes)
NEAR_DUPLICATES_MIN = 4  # images compared per class however many classes


@dataclass(frozen=True)
class Caveat:
    """One weakness of a reference set: a code from ``CAVEATS``, a message that names the
    class and files and says what to do, the classes it concerns (empty: every class)
    and the files (relative to the set's folder)."""

    code: str
    message: str
    classes: tuple[int, ...] = ()
    files: tuple[str, ...] = ()

    def concerns(self, classes: Iterable[int]) -> bool:
        """Whether a score of ``classes`` rests on what this caveat is about."""
        return not self.classes or bool(set(self.classes) & {int(c) for c in classes})

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "classes": list(self.classes),
            "files": list(self.files),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Caveat:
        return cls(
            code=str(d["code"]),
            message=str(d.get("message", "")),
            classes=tuple(int(c) for c in d.get("classes") or ()),
            files=tuple(str(f) for f in d.get("files") or ()),
        )


def reference_caveats(
    images: torch.Tensor, labels: torch.Tensor | Sequence[int], files: Sequence[str]
) -> tuple[Caveat, ...]:
    """The caveats of a reference set from its images as loaded for the model.

    ``images``: ``(N, C, H, W)`` in [0, 1], C the model's channels; ``labels``: ``(N,)``
    class indices; ``files``: each image's name (its path relative to the set's folder).
    Ordered by class, then code.
    """
    labels = torch.as_tensor(labels, dtype=torch.long)
    if images.ndim != 4 or images.shape[0] != labels.numel() or len(files) != labels.numel():
        raise ValueError(
            f"{tuple(images.shape)} images, {labels.numel()} labels and {len(files)} files"
        )
    channels = int(images.shape[1])
    facts = [_look(image) for image in images]  # one image at a time: no copy of the set
    grey = [g for g, _ in facts]
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(labels.tolist()):
        by_class.setdefault(int(label), []).append(i)
    in_colour = {c for c, mine in by_class.items() if not all(grey[i] for i in mine)}
    out: list[Caveat] = []
    budget = NEAR_DUPLICATES_PER_SET  # images the near-duplicate search may still compare
    for c in sorted(by_class):
        mine = by_class[c]
        others_in_colour = channels >= 3 and bool(in_colour - {c})
        if others_in_colour and c not in in_colour:
            out.append(_greyscale_caveat(c, [files[i] for i in mine], channels))
        groups: dict[str, list[int]] = {}
        for i in mine:
            groups.setdefault(facts[i][1], []).append(i)
        copies = [g for g in groups.values() if len(g) > 1]
        if copies:
            out.append(_duplicate_caveat(c, [[files[i] for i in g] for g in copies]))
        distinct = [g[0] for g in groups.values()]  # one of each set of identical copies
        checked = distinct[: min(budget, _near_duplicates_checked(len(distinct), len(by_class)))]
        budget -= len(checked)
        views = _memo_groups(images, checked, tuple(facts[i][1] for i in checked))
        if views:
            named = [[files[checked[k]] for k in g] for g in views]
            out.append(_near_duplicate_caveat(c, named, len(checked), len(distinct)))
    return tuple(out)


def _look(image: torch.Tensor) -> tuple[bool, str]:
    """One (C, H, W) image in [0, 1] as 8-bit levels: whether no pixel's channels differ by
    more than ``GREY_TOLERANCE`` (always, for one channel), and a digest of its pixels."""
    levels = (image.detach().to("cpu", torch.float32).clamp(0, 1) * 255).round().to(torch.int16)
    spread = levels.amax(dim=0) - levels.amin(dim=0)
    digest = hashlib.sha256(levels.to(torch.uint8).contiguous().numpy().tobytes()).hexdigest()
    return bool(spread.max() <= GREY_TOLERANCE), digest


def _folder(files: Sequence[str]) -> str:
    """`` (folder 872/)`` when the class's files share one top folder, else ``""``."""
    tops = {f.split("/", 1)[0] if "/" in f else "" for f in files}
    return f" (folder {next(iter(tops))}/)" if len(tops) == 1 and "" not in tops else ""


def _greyscale_caveat(cls: int, files: Sequence[str], channels: int) -> Caveat:
    n = len(files)
    every = "its only image is" if n == 1 else f"all {n} of its images are"
    return Caveat(
        GREYSCALE_CLASS,
        f"reference class {cls}{_folder(files)}: {every} greyscale (e.g. {files[0]}) while "
        f"the model takes colour ({channels} channels) and other classes' images are in "
        "colour: at the layers that see colour, this class's scores measure colour against "
        "grey, not the class (a colour prototype can score below 0 there and a grey copy of "
        "it above); add colour photos of the class",
        classes=(cls,),
        files=tuple(files),
    )


def _duplicate_caveat(cls: int, groups: Sequence[Sequence[str]]) -> Caveat:
    listed = "; ".join(" = ".join(g) for g in groups[:_LISTED_GROUPS])
    more = len(groups) - _LISTED_GROUPS
    if more > 0:
        listed += f"; and {more} more group(s)"
    extra = sum(len(g) - 1 for g in groups)
    return Caveat(
        DUPLICATE_IMAGES,
        f"reference class {cls}{_folder([f for g in groups for f in g])}: identical images "
        f"(the same pixels at the model's input): {listed}; the bootstrap counts each copy "
        "as another independent image, so the intervals are narrower than the evidence "
        f"supports; remove {extra} copy(ies) so each image appears once",
        classes=(cls,),
        files=tuple(f for g in groups for f in g),
    )


def _near_duplicates_checked(images: int, classes: int) -> int:
    """How many of a class's (distinct) images the near-duplicate search compares: all of
    them up to ``NEAR_DUPLICATES_PER_CLASS``, and fewer per class in a set of many classes
    (``NEAR_DUPLICATES_PER_SET`` shared out, at least ``NEAR_DUPLICATES_MIN``; the caller
    stops when the set's share is spent, so a set of more than 128 classes has its first
    128 compared): a large set costs a bounded time (about 0.1 s of keypoints per image,
    docs/scores.md)."""
    share = max(NEAR_DUPLICATES_MIN, NEAR_DUPLICATES_PER_SET // max(1, classes))
    return min(images, NEAR_DUPLICATES_PER_CLASS, share)


_GROUPS_MEMO: OrderedDict[tuple[str, ...], list[list[int]]] = OrderedDict()
_GROUPS_MEMO_SIZE = 4096  # classes; a few kilobytes each at most
_GROUPS_LOCK = threading.Lock()


def _memo_groups(
    images: torch.Tensor, indices: Sequence[int], digests: tuple[str, ...]
) -> list[list[int]]:
    """``near_duplicate_groups`` of ``images[indices]``, remembered by the images' pixel
    digests: the statistics of another model of the same input size (or a recomputation)
    reuse the groups instead of finding the keypoints again."""
    with _GROUPS_LOCK:
        if digests in _GROUPS_MEMO:
            _GROUPS_MEMO.move_to_end(digests)
            return _GROUPS_MEMO[digests]
    groups = near_duplicate_groups(images[list(indices)])
    with _GROUPS_LOCK:
        _GROUPS_MEMO[digests] = groups
        while len(_GROUPS_MEMO) > _GROUPS_MEMO_SIZE:
            _GROUPS_MEMO.popitem(last=False)
    return groups


def _near_duplicate_caveat(
    cls: int, groups: Sequence[Sequence[str]], checked: int, distinct: int
) -> Caveat:
    def some(group: Sequence[str]) -> str:
        more = len(group) - _LISTED_VIEWS
        return ", ".join(group[:_LISTED_VIEWS]) + (f" and {more} more" if more > 0 else "")

    listed = "; ".join(some(g) for g in groups[:_LISTED_GROUPS])
    if len(groups) > _LISTED_GROUPS:
        listed += f"; and {len(groups) - _LISTED_GROUPS} more group(s)"
    views = sum(len(g) for g in groups)
    of = (
        f"{distinct} images"
        if checked == distinct
        else f"{checked} images compared (of {distinct})"
    )
    photos = "1 photo" if len(groups) == 1 else f"{len(groups)} photos"
    those = "that photo's" if len(groups) == 1 else "those photos'"
    return Caveat(
        NEAR_DUPLICATE_IMAGES,
        f"reference class {cls}{_folder([f for g in groups for f in g])}: {views} of its "
        f"{of} are views of {photos} (crops, rescaled or mirrored copies that "
        f"share content: {listed}); the class mean leans toward {those} texture and colour, "
        "so the middle layers measure likeness to it as much as to the class, and the "
        "bootstrap counts each view as an independent image, so the intervals are narrower "
        "than the evidence supports; use photos taken separately, one view of each",
        classes=(cls,),
        files=tuple(f for g in groups for f in g),
    )
