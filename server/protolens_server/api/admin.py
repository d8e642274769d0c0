"""``AdminService``: API keys (create once-shown, list without secrets, revoke).

Every RPC needs the admin role (``PermissionDenied`` otherwise); the
interceptor has already authenticated the caller.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
from protolens import names
from protolens.v1 import admin_pb2 as pb
from protolens.v1 import admin_pb2_grpc

from protolens_server.api.convert import timestamp_pb
from protolens_server.api.tenancy import ROLE_ADMIN, ROLE_TENANT, current_principal
from protolens_server.api.validation import read_name
from protolens_server.config import Settings
from protolens_server.errors import InvalidArgument, PermissionDenied
from protolens_server.queue.api_keys import ApiKeyInfo, ApiKeyStore

if TYPE_CHECKING:
    from protolens_server.models.catalog import ModelCatalog
    from protolens_server.queue.store import Store


ADMIN_SERVICE = pb.DESCRIPTOR.services_by_name["AdminService"].full_name
_ROLE_TO_PB = {ROLE_TENANT: pb.API_KEY_ROLE_TENANT, ROLE_ADMIN: pb.API_KEY_ROLE_ADMIN}
_ROLE_FROM_PB = {
    pb.API_KEY_ROLE_UNSPECIFIED: ROLE_TENANT,
    pb.API_KEY_ROLE_TENANT: ROLE_TENANT,
    pb.API_KEY_ROLE_ADMIN: ROLE_ADMIN,
}


def api_key_to_pb(info: ApiKeyInfo) -> pb.ApiKey:
    out = pb.ApiKey(
        name=names.API_KEYS.name(info.key_id),
        key_id=info.key_id,
        tenant=info.tenant,
        role=_ROLE_TO_PB.get(info.role, pb.API_KEY_ROLE_UNSPECIFIED),
        display_name=info.name,
        create_time=timestamp_pb(info.created_at),
    )
    if info.revoked:
        out.revoke_time.CopyFrom(timestamp_pb(info.revoked_at))
    return out


def _require_admin() -> None:
    if not current_principal().is_admin:
        raise PermissionDenied("this call needs an API key with the admin role")


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    def __init__(self, store: ApiKeyStore) -> None:
        self.store = store

    async def CreateApiKey(
        self, request: pb.CreateApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateApiKeyResponse:
        _require_admin()
        role = _ROLE_FROM_PB.get(request.role)
        if role is None:
            raise InvalidArgument("role", f"unknown role {request.role}")
        info, secret = await self.store.create(request.tenant, role, request.display_name)
        return pb.CreateApiKeyResponse(api_key=api_key_to_pb(info), secret_key=secret)

    async def ListApiKeys(
        self, request: pb.ListApiKeysRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListApiKeysResponse:
        _require_admin()
        infos = await self.store.list(request.tenant)
        return pb.ListApiKeysResponse(api_keys=[api_key_to_pb(i) for i in infos])

    async def RevokeApiKey(
        self, request: pb.RevokeApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.RevokeApiKeyResponse:
        _require_admin()
        key_id = read_name(names.API_KEYS.parse, request.name)
        return pb.RevokeApiKeyResponse(api_key=api_key_to_pb(await self.store.revoke(key_id)))


def add_admin_service(
    server: grpc.aio.Server, store: Store, catalog: ModelCatalog, settings: Settings
) -> str:
    """Register the AdminService on ``server`` (keys in the store's API-key repository)."""
    admin_pb2_grpc.add_AdminServiceServicer_to_server(AdminServicer(store.api_keys), server)
    return ADMIN_SERVICE
