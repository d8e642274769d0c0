"""The cache key hashes exactly what determines the output."""

from __future__ import annotations

from dataclasses import replace

import pytest
from protolens_server.queue.cache import batch_key, cache_key
from protolens_server.queue.records import TargetSpec
from queue_helpers import make_spec

BASE = make_spec((1, 2), seed=7)


@pytest.mark.parametrize(
    "change",
    [
        {"model_digest": "e" * 64},
        {"targets": (TargetSpec((1,)), TargetSpec((3,)))},
        {"targets": (TargetSpec((1,), "antitype"), TargetSpec((2,)))},
        {"targets": (TargetSpec((2,)), TargetSpec((1,)))},  # order is the output order
        {"config": {"steps": 9, "lr": 0.05}},
        {"seed": 8},
        {"reference_digest": "r1"},
        {"engine_version": "other"},
    ],
)
def test_anything_that_changes_the_output_changes_the_key(change: dict) -> None:
    assert cache_key(replace(BASE, **change)) != cache_key(BASE)


@pytest.mark.parametrize(
    "change",
    [
        {"tenant": "team-z"},
        {"priority": 0},
        {"request_id": "r-123"},
        {"trace_id": "abc"},
        {"model": "renamed"},  # the weights (digest) decide, not the name
        {"reference_set": "renamed-set"},  # its digest decides
        {"config": {"lr": 0.05, "steps": 8}},  # key order does not matter
    ],
)
def test_who_asked_and_how_urgently_do_not(change: dict) -> None:
    assert cache_key(replace(BASE, **change)) == cache_key(BASE)


def test_batch_key_ignores_seed_and_targets_but_not_config_or_model() -> None:
    assert batch_key(replace(BASE, seed=1, targets=(TargetSpec((5,)),))) == batch_key(BASE)
    assert batch_key(replace(BASE, config={"steps": 9, "lr": 0.05})) != batch_key(BASE)
    assert batch_key(replace(BASE, model_digest="f" * 64)) != batch_key(BASE)
