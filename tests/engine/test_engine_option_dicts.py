"""``OptionRecord.to_dict``: a new plain dict equal to ``dataclasses.asdict`` (the stored
form, cache keys and provenance hash it), whichever path builds it; ``parse_changes``:
the command-line ``FIELD=VALUE`` form the benchmarks share."""

from __future__ import annotations

import dataclasses

import pytest
from protolens_server.engine import GenerationConfig, IsolationConfig
from protolens_server.errors import InvalidArgument


def test_to_dict_is_asdict_and_a_fresh_dict_each_time() -> None:
    for config in (
        GenerationConfig(),
        GenerationConfig(steps=7, lr=0.01, objective="logit", alpha=True),
        IsolationConfig(),
    ):
        first = config.to_dict()
        assert first == dataclasses.asdict(config)
        assert list(first) == [f.name for f in dataclasses.fields(config)]  # same order
        first["steps"] = -1  # a caller may change its copy ...
        assert config.to_dict()["steps"] == config.steps  # ... not the next one's
        assert GenerationConfig.from_dict(GenerationConfig().to_dict()) == GenerationConfig()


def test_parse_changes_types_each_value_as_its_field() -> None:
    changes = GenerationConfig.parse_changes(
        ["steps=64", " lr = 0.2", "parameterisation=maco", "decorrelate=0", "alpha=Yes"]
    )
    assert changes == {
        "steps": 64,
        "lr": 0.2,
        "parameterisation": "maco",
        "decorrelate": False,  # bool("0") would be True
        "alpha": True,
    }
    assert GenerationConfig().replace(**changes).decorrelate is False


@pytest.mark.parametrize(
    ("pair", "field", "why"),
    [
        ("steps", "config", "expected FIELD=VALUE"),
        ("colour=red", "config.colour", "is not a generation option"),
        ("replace=1", "config.replace", "is not a generation option"),
        ("steps=0.5", "config.steps", "'0.5' is not a whole number"),
        ("alpha=maybe", "config.alpha", "'maybe' is not 1/0, true/false or yes/no"),
    ],
)
def test_parse_changes_names_what_is_wrong(pair: str, field: str, why: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        GenerationConfig.parse_changes([pair])
    assert err.value.field == field
    assert why in str(err.value)
