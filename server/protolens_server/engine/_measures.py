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
    """Ranks 1..C along the last axis, ties sharing their average rank (as scipy's rankdata)."""
    x = x.to(torch.float64).contiguous()
    s = x.sort(dim=-1).values.contiguous()
    less = torch.searchsorted(s, x, right=False)
    less_or_equal = torch.searchsorted(s, x, right=True)
    return (less + less_or_equal + 1).to(torch.float64) / 2


def _pearson(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x - x.mean(dim=-1, keepdim=True)
    y = y - y.mean(dim=-1, keepdim=True)
    den = x.norm(dim=-1) * y.norm(dim=-1)
    out = (x * y).sum(dim=-1) / den
    return torch.where(den > _EPS, out, torch.full_like(out, math.nan))


def spearman(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x, y = torch.broadcast_tensors(x.to(torch.float64), y.to(torch.float64))
    return _pearson(average_ranks(x), average_ranks(y))


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
