"""Entanglement: which other classes a class's prototype also excites strongly.

For each class's prototype(s) the model's softmax is read (a multi-label model's own
sigmoid per label: then an edge is a label the prototype also makes present); every other class
among the ``top_k`` most probable with probability >= ``threshold`` (mean over
the class's prototypes) is an edge ``class -> other``. Together the edges make a
class-confusion graph drawn from prototypes alone, no data set needed. A class
whose set of edges differs between two versions is flagged, where the other
version is clearly on the other side of the threshold (``HYSTERESIS``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

DEFAULT_THRESHOLD = 0.1
DEFAULT_TOP_K = 3


@dataclass(frozen=True)
class Edge:
    source: int
    target: int
    probability: float

    def to_dict(self) -> dict[str, float | int]:
        return {"source": self.source, "target": self.target, "probability": self.probability}


def edges_for(
    cls: int,
    probs: torch.Tensor,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    top_k: int = DEFAULT_TOP_K,
) -> list[Edge]:
    """Edges from ``cls`` given its prototypes' softmax rows ``probs`` (P, K)."""
    mean = probs.float().mean(dim=0)
    k = min(top_k + 1, mean.numel())
    values, indices = mean.topk(k)
    return [
        Edge(cls, int(j), float(p))
        for p, j in zip(values.tolist(), indices.tolist(), strict=True)
        if int(j) != cls and p >= threshold
    ][:top_k]


def graph(
    probs_by_class: Mapping[int, torch.Tensor],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    top_k: int = DEFAULT_TOP_K,
) -> dict[int, list[Edge]]:
    return {c: edges_for(c, p, threshold=threshold, top_k=top_k) for c, p in probs_by_class.items()}


def targets_of(edges: Sequence[Edge]) -> set[int]:
    return {e.target for e in edges}


# An edge changed only where the other version is clearly on the other side of the
# threshold: below this fraction of it. A runner-up at 0.11 in one version and 0.09 in
# the other is the same entanglement (seen on the shortcut suite's ViT twins: edges at
# 0.10-0.15 flipping on three unchanged classes), one at 0.3 and 0.02 is not.
HYSTERESIS = 0.5


def changed(
    old: Sequence[Edge],
    new: Sequence[Edge],
    old_probs: torch.Tensor | None = None,
    new_probs: torch.Tensor | None = None,
    *,
    threshold: float = DEFAULT_THRESHOLD,
) -> tuple[set[int], set[int]]:
    """(gained, lost) entangled classes of one class between versions.

    With each version's softmax rows of the class's prototypes (``old_probs``,
    ``new_probs``: (P, K)), an edge of one version counts as changed only where the
    other version gives that class less than ``HYSTERESIS * threshold``; without
    them, any difference of the edge sets counts."""
    before, after = targets_of(old), targets_of(new)
    gained, lost = after - before, before - after
    if old_probs is None or new_probs is None:
        return gained, lost
    floor = HYSTERESIS * threshold
    old_mean, new_mean = old_probs.float().mean(dim=0), new_probs.float().mean(dim=0)
    return (
        {j for j in gained if float(old_mean[j]) < floor},
        {j for j in lost if float(new_mean[j]) < floor},
    )


def entangled_pairs(g: Mapping[int, Sequence[Edge]]) -> set[frozenset[int]]:
    return {frozenset((e.source, e.target)) for edges in g.values() for e in edges}
