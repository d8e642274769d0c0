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
