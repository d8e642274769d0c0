"""Helpers for queue tests (a unique module name: tests/ has no packages)."""

from __future__ import annotations

from protolens_server.engine import Target
from protolens_server.queue.records import JobSpec


def make_spec(
    classes: tuple[int, ...] = (3,),
    *,
    tenant: str = "team-a",
    request_id: str = "",
    seed: int = 0,
    steps: int = 8,
    priority: int = 1,
    model_digest: str = "d" * 64,
) -> JobSpec:
    return JobSpec(
        model="tiny",
        model_digest=model_digest,
        targets=tuple(Target((c,)) for c in classes),
        config={"steps": steps, "lr": 0.05},
        seed=seed,
        engine_version="test",
        priority=priority,
        tenant=tenant,
        request_id=request_id,
    )
