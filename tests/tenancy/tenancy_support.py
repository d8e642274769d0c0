"""What the tenancy tests share: a server with keys, per-tenant metadata."""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from protolens.v1 import admin_pb2_grpc, service_pb2_grpc
from protolens_server.api.server import ApiServer


def bearer(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


@dataclass
class Keyed:
    api: ApiServer
    address: str
    admin_key: str
    keys: dict[str, str]
    channel: grpc.aio.Channel
    _: list = field(default_factory=list)

    @property
    def jobs(self) -> service_pb2_grpc.ProtolensServiceStub:
        return service_pb2_grpc.ProtolensServiceStub(self.channel)

    @property
    def admin(self) -> admin_pb2_grpc.AdminServiceStub:
        return admin_pb2_grpc.AdminServiceStub(self.channel)

    def md(self, tenant: str) -> tuple[tuple[str, str], ...]:
        return bearer(self.keys[tenant])


def tiny_job(digest: str, tenant: str, seed: int, *, priority: int = 1, steps: int = 2):
    """A one-target job for the tiny test model (fast on a CPU)."""
    from protolens_server import ENGINE_VERSION
    from protolens_server.engine import GenerationConfig, Target
    from protolens_server.queue.records import JobSpec

    config = GenerationConfig(
        steps=steps,
        transforms="small",
        start="constant",
        equidistant_steps=0,
        progress_every=1,
        autocast=False,
        channels_last=False,
    ).to_dict()
    return JobSpec(
        model="tiny",
        model_digest=digest,
        targets=(Target((seed % 5,)),),
        config=config,
        seed=seed,
        engine_version=ENGINE_VERSION,
        priority=priority,
        tenant=tenant,
    )
