"""The statistics every score shares: stratified resamples, intervals, significance, summary.

- ``stratified_resamples``: a seeded bootstrap that redraws each class's images from
  that class only (so every resample has every class, with its own count);
- ``percentile_interval``: the central ``confidence`` share of the replicates
  (NaN replicates ignored; too few valid ones give no interval);
- ``separated``: is a gap (same-class level minus other-class level, in the
  direction where larger means closer) positive and at least ``MIN_SPAN_Z``
  bootstrap standard errors wide? Only then is a normalised score defined;
- ``median``: the robust summary over layers (numpy's median: the mean of the two
  middle values for an even count), which one wild layer cannot drag.
"""

from __future__ import annotations

import math

import torch

RESAMPLES = 200
CONFIDENCE = 0.95
MIN_SPAN_Z = 3.0
MIN_VALID_SHARE = 0.5  # fewer valid replicates than this share: no interval, no significance
NUMERICAL_FLOOR = 1e-9  # relative: gaps smaller than this are rounding, not separation


def stratified_resamples(labels: torch.Tensor, resamples: int, seed: int) -> torch.Tensor:
    """(resamples, N) indices into ``labels``' rows; row b redraws every class within itself.

    Position i of each row holds an image of the same class as ``labels[i]``.
    """
    labels = torch.as_tensor(labels, dtype=torch.long)
    g = torch.Generator().manual_seed(int(seed))
    out = torch.empty((resamples, labels.shape[0]), dtype=torch.long)
    for c in sorted(int(v) for v in labels.unique()):
        rows = torch.nonzero(labels == c).flatten()
        picks = torch.randint(0, rows.numel(), (resamples, rows.numel()), generator=g)
        out[:, rows] = rows[picks]
    return out


def counts(resamples: torch.Tensor, n: int) -> torch.Tensor:
    """(B, n) float64: how often each original row appears in each resample."""
    out = torch.zeros((resamples.shape[0], n), dtype=torch.float64)
    out.scatter_add_(1, resamples, torch.ones_like(resamples, dtype=torch.float64))
    return out


def _valid(replicates: torch.Tensor) -> torch.Tensor:
    return replicates[torch.isfinite(replicates)]


def enough(replicates: torch.Tensor) -> bool:
    return _valid(replicates).numel() >= max(2, MIN_VALID_SHARE * replicates.numel())


def percentile_interval(
    replicates: torch.Tensor, confidence: float = CONFIDENCE
) -> tuple[float, float] | None:
    """The percentile bootstrap interval of 1-D ``replicates`` (None: too few valid ones)."""
    if not enough(replicates):
        return None
    tail = (1.0 - confidence) / 2
    q = torch.quantile(_valid(replicates), torch.tensor([tail, 1.0 - tail], dtype=torch.float64))
    return float(q[0]), float(q[1])


def standard_error(replicates: torch.Tensor) -> float:
    """The bootstrap standard error (sd of the valid replicates; NaN if too few)."""
    if not enough(replicates):
        return math.nan
    return float(_valid(replicates).std(unbiased=True))


def separated(gap: float, replicates: torch.Tensor, scale: float = 1.0) -> tuple[bool, str, float]:
    """(defined?, reason code, z) for a gap oriented so that positive means separated.

    z is ``gap / bootstrap standard error`` (inf when the replicates do not vary). A gap
    within float rounding of 0 (``NUMERICAL_FLOOR`` times ``scale``, the size of the
    levels) counts as 0: two equal levels computed in different orders differ by ~1e-16.
    """
    if not math.isfinite(gap):
        return False, "UNDEFINED", math.nan
    if abs(gap) <= NUMERICAL_FLOOR * abs(scale):
        gap = 0.0
    se = standard_error(replicates)
    if se == 0:
        z = math.copysign(math.inf, gap) if gap else math.nan
    else:
        z = gap / se if math.isfinite(se) else math.nan
    if gap <= 0:
        return False, "SPAN_NOT_POSITIVE", z
    if not math.isfinite(se) or z < MIN_SPAN_Z:
        return False, "SPAN_UNRESOLVED", z
    return True, "", z


def median(values: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """numpy's median along ``dim`` (NaN where any value is NaN)."""
    return torch.quantile(values.to(torch.float64), 0.5, dim=dim)
