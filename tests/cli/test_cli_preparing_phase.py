"""The "preparing" phase names everything done before the first step (issue 16 item 3),
including the learning-rate finder's probe runs when no rate is given (issue 12)."""

from __future__ import annotations

import dataclasses

from protolens_server.cli.generate import _preparing
from protolens_server.engine import GenerationConfig, Target
from protolens_server.queue.records import JobSpec
from protolens_server.worker.runner import preparing_phase


def test_the_phase_names_the_finder_only_when_it_runs() -> None:
    found = GenerationConfig()  # lr 0: the finder chooses
    given = dataclasses.replace(found, lr=0.05)
    assert "learning rate" in _preparing(found, False)
    assert "learning rate" not in _preparing(given, False)
    assert "equidistant start" in _preparing(given, False)
    for config, named in ((found, True), (given, False)):
        spec = JobSpec(
            model="tiny",
            model_digest="d" * 64,
            targets=(Target((3,)),),
            config=config.to_dict(),
            seed=0,
            engine_version="test",
        )
        text = preparing_phase(spec, compile=False)[1]
        assert ("choosing the learning rate" in text) is named, text
