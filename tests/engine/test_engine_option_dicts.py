"""``OptionRecord.to_dict``: a new plain dict equal to ``dataclasses.asdict`` (the stored
form, cache keys and provenance hash it), whichever path builds it."""

from __future__ import annotations

import dataclasses

from protolens_server.engine import GenerationConfig, IsolationConfig


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
