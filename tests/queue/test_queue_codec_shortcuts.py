"""The worker's per-job parsing and encoding shortcuts give what the plain forms give:
stored prototypes' JSON equals ``dataclasses.asdict``'s, and a job's options parse once
per distinct dict (typed: ``32`` and ``32.0`` are different options)."""

from __future__ import annotations

import dataclasses
import json

from protolens_server.engine import GenerationConfig, Target, UnitTerm
from protolens_server.queue.codec import prototypes_to_json
from protolens_server.queue.records import StoredPrototype, job_config


def test_prototypes_json_is_asdicts_json() -> None:
    unit = Target((), "unit", (UnitTerm("layer1", "channel", 3, weight=-0.5),))
    protos = [
        StoredPrototype(
            target=t,
            index=1,
            probability=0.25,
            logit=1.5,
            top5=[(3, 0.25), (1, 0.125)],
            steps=64,
            seed=7,
            lr=0.05,
            stop_reason="converged",
            scores={"version": 2, "spearman": {"layer1": [0.5, None]}},
            isolation={"probability": 0.5} if t.kind == "hybrid" else None,
            png_key="a" * 64,
        )
        for t in (Target((3,)), Target((1, 2), "hybrid"), unit)
    ]
    plain = json.dumps([dataclasses.asdict(p) for p in protos], separators=(",", ":"))
    assert prototypes_to_json(protos) == plain


def test_a_jobs_options_parse_once_per_distinct_typed_dict() -> None:
    stored = GenerationConfig(steps=32).to_dict()
    first = job_config("prototype", stored, stored=True)
    again = job_config("prototype", dict(stored), stored=True)
    assert first is again and first == GenerationConfig(steps=32)
    as_float = job_config("prototype", {**stored, "steps": 32.0}, stored=True)
    assert as_float is not first and isinstance(as_float.steps, float)
    # stored records drop options this engine does not know; requests are refused them
    assert job_config("prototype", {**stored, "retired": 1}, stored=True) == first
