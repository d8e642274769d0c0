"""Similarity measures between activation vectors: Spearman, cosine and L1.

Row-wise: ``x`` is ``(..., C)`` and ``y`` broadcasts against it; the result has
the leading shape, in float64. Spearman is the Pearson correlation of average
ranks (ties share their average rank, as scipy's ``rankdata``); a constant vector
has no rank correlation and no direction, so Spearman and cosine give NaN there,
never a made-up number. L1 is the mean absolute difference (lower is closer).
"""

from __future__ import annotations

import math

import torch

METRICS = ("spearman", "cosine", "l1")
CLOSER_IS_HIGHER = {"spearman": True, "cosine": True, "l1": False}
_EPS = 1e-12


def average_ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks 1..C along the last axis, ties sharing their average rank (as scipy's rankdata).

    One sort per row; a tie group's first and last positions come from running
    maxima/minima over the sorted row, so no search is needed.
    """
    x = x.to(torch.float64)
    if x.shape[-1] == 0:
        return x.clone()
    s, order = x.sort(dim=-1)
    pos = torch.arange(x.shape[-1], dtype=torch.float64).expand_as(s)
    starts = torch.ones_like(s, dtype=torch.bool)
    starts[..., 1:] = s[..., 1:] != s[..., :-1]
    ends = torch.ones_like(s, dtype=torch.bool)
    ends[..., :-1] = starts[..., 1:]
    first = torch.where(starts, pos, torch.zeros_like(pos)).cummax(dim=-1).values
    last_flipped = torch.where(ends, pos, torch.full_like(pos, x.shape[-1])).flip(-1)
    last = last_flipped.cummin(dim=-1).values.flip(-1)
    return torch.empty_like(s).scatter_(-1, order, (first + last) / 2 + 1)


def pearson(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x - x.mean(dim=-1, keepdim=True)
    y = y - y.mean(dim=-1, keepdim=True)
    den = x.norm(dim=-1) * y.norm(dim=-1)
    out = (x * y).sum(dim=-1) / den
    return torch.where(den > _EPS, out, torch.full_like(out, math.nan))


def spearman(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x, y = torch.broadcast_tensors(x.to(torch.float64), y.to(torch.float64))
    return pearson(average_ranks(x), average_ranks(y))


def cosine(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x, y = torch.broadcast_tensors(x.to(torch.float64), y.to(torch.float64))
    den = x.norm(dim=-1) * y.norm(dim=-1)
    out = (x * y).sum(dim=-1) / den
    return torch.where(den > _EPS, out, torch.full_like(out, math.nan))


def l1(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x, y = torch.broadcast_tensors(x.to(torch.float64), y.to(torch.float64))
    return (x - y).abs().mean(dim=-1)


MEASURES = {"spearman": spearman, "cosine": cosine, "l1": l1}


def similarity(x: torch.Tensor, y: torch.Tensor, metric: str = "spearman") -> torch.Tensor:
    """Row-wise ``metric`` of ``x`` (..., C) and ``y`` (broadcast): float64, NaN if undefined."""
    return MEASURES[metric](x, y)


def pairwise(a: torch.Tensor, b: torch.Tensor, metric: str) -> torch.Tensor:
    """``metric`` between every row of ``a`` (n, C) and every row of ``b`` (m, C): (n, m).

    The same numbers as ``similarity(a[:, None], b[None])`` in one matrix product
    (Spearman, cosine) or one ``cdist`` (L1), for the bootstrap's many means.
    """
    a, b = a.to(torch.float64), b.to(torch.float64)
    if metric == "l1":
        return torch.cdist(a, b, p=1) / a.shape[-1]
    if metric == "spearman":
        a, b = average_ranks(a), average_ranks(b)
        a = a - a.mean(dim=-1, keepdim=True)
        b = b - b.mean(dim=-1, keepdim=True)
    den = a.norm(dim=-1)[:, None] * b.norm(dim=-1)[None, :]
    out = (a @ b.T) / den
    return torch.where(den > _EPS, out, torch.full_like(out, math.nan))
