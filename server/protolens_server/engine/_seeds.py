"""Per-prototype seeds: each prototype's randomness comes from its own generator."""

from __future__ import annotations

import hashlib
import numbers
from collections.abc import Sequence

import torch

from protolens_server.errors import InvalidArgument

from .types import Target


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from ``parts`` (stable across processes and platforms)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def prototype_seed(call_seed: int, target: Target, index: int) -> int:
    """The seed of prototype ``index`` of ``target``: independent of what else is in the batch."""
    if target.units:  # class targets keep the seeds they always had
        return derive_seed("prototype", call_seed, target.label(), target.kind, index)
    return derive_seed("prototype", call_seed, target.classes, target.kind, index)


def generator(seed: int) -> torch.Generator:
    """A CPU generator: the same draws on every device."""
    return torch.Generator().manual_seed(seed)


def per_target_seeds(seed: int | Sequence[int], n_targets: int) -> list[int]:
    """One seed per target, from one seed for the call or one per target."""
    if isinstance(seed, bool):
        raise InvalidArgument("seed", "must be an integer or one integer per target")
    if isinstance(seed, numbers.Integral):  # int, numpy integers
        return [int(seed)] * n_targets
    try:
        seeds = [int(s) for s in seed]
    except (TypeError, ValueError) as e:
        raise InvalidArgument("seed", "must be an integer or one integer per target") from e
    if len(seeds) != n_targets:
        raise InvalidArgument("seed", f"has {len(seeds)} values for {n_targets} targets")
    return seeds
