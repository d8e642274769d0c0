"""The cache key hashes exactly what determines the output."""

from __future__ import annotations

from dataclasses import replace

import pytest
from protolens_server.engine import Target
from protolens_server.queue.cache import batch_key, cache_key
from queue_helpers import make_spec

BASE = make_spec((1, 2), seed=7)


@pytest.mark.parametrize(
    "change",
    [
        {"model_digest": "e" * 64},
        {"targets": (Target((1,)), Target((3,)))},
        {"targets": (Target((1,), "antitype"), Target((2,)))},
        {"targets": (Target((2,)), Target((1,)))},  # order is the output order
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
    assert batch_key(replace(BASE, seed=1, targets=(Target((5,)),))) == batch_key(BASE)
    assert batch_key(replace(BASE, config={"steps": 9, "lr": 0.05})) != batch_key(BASE)
    assert batch_key(replace(BASE, model_digest="f" * 64)) != batch_key(BASE)


def test_a_spec_carries_typed_engine_options_and_keeps_old_records_readable() -> None:
    from protolens_server.engine import GenerationConfig, IsolationConfig
    from protolens_server.errors import InvalidArgument
    from protolens_server.queue.codec import record_from_fields, record_to_fields
    from protolens_server.queue.records import JobRecord

    assert isinstance(BASE.config, GenerationConfig) and BASE.steps == 8
    isolation = replace(BASE, mode="isolation", config={"steps": 5})
    assert isinstance(isolation.config, IsolationConfig) and isolation.steps == 5
    assert isolation.prototypes_per_target == 1
    # A request naming an option the engine does not have is refused, naming it ...
    with pytest.raises(InvalidArgument, match="colour"):
        replace(BASE, config={"colour": "red"})
    # ... while a stored job written by a release that had one is still read.
    fields = record_to_fields(JobRecord("j1", BASE))
    fields["spec"] = fields["spec"].replace('"steps":8', '"steps":8,"retired_option":1')
    back = record_from_fields(fields)
    assert back.spec == BASE and cache_key(back.spec) == cache_key(BASE)


# A prototypes field as releases before PrototypeFacts wrote it (lr and stop_reason after
# the blob keys) and as the first releases did (no lr, stop_reason or blob keys, scores
# inline): the facts are read by name, so both still parse.
_OLD_PROTOTYPES = (
    '[{"target":{"classes":[1],"kind":"prototype","units":[]},"index":0,"probability":0.9,'
    '"logit":4.0,"top5":[[1,0.9],[2,0.05]],"steps":8,"seed":7,"scores":null,"isolation":null,'
    '"png_key":"p1","scores_key":"s1","tensor_key":"t1","lr":0.05,"stop_reason":"converged"},'
    '{"target":{"classes":[2],"kind":"prototype"},"index":0,"probability":0.8,"logit":3.0,'
    '"top5":[[2,0.8]],"steps":8,"seed":7,"scores":{"path_similarity":0.5}}]'
)


def test_prototypes_stored_by_older_releases_read_as_the_same_facts() -> None:
    from protolens_server.engine import PrototypeFacts
    from protolens_server.queue.codec import prototypes_from_json, prototypes_to_json

    first, second = prototypes_from_json(_OLD_PROTOTYPES)
    assert first.facts() == PrototypeFacts(
        Target((1,)), 0, 0.9, 4.0, [(1, 0.9), (2, 0.05)], 8, 7, lr=0.05, stop_reason="converged"
    )
    assert (first.png_key, first.scores_key, first.tensor_key) == ("p1", "s1", "t1")
    assert second.facts() == PrototypeFacts(Target((2,)), 0, 0.8, 3.0, [(2, 0.8)], 8, 7)
    assert second.scores == {"path_similarity": 0.5} and second.has_scores
    assert prototypes_from_json(prototypes_to_json([first, second])) == [first, second]


def test_a_scored_job_keys_the_scores_version_an_unscored_one_does_not() -> None:
    """A result scored before the scores changed (e.g. before reference-set caveats) is not
    served for a request that would get the new scores; unscored results keep their key."""
    from protolens_server import SCORES_VERSION
    from protolens_server.queue.cache import cache_material

    scored = replace(BASE, reference_digest="r1", reference_set="refs")
    assert cache_material(scored)["scores_version"] == SCORES_VERSION
    assert "scores_version" not in cache_material(BASE)
