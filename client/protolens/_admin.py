"""Operator calls in the SDK (the ``AdminService``): ``create_api_key``, ``list_api_keys``,
``revoke_api_key`` on ``Client`` and ``AsyncClient`` (mixins). Each needs a client made
with an admin key (``PermissionDeniedError`` otherwise).

    with Client(addr, **connection(api_key=admin_key)) as client:
        key = client.create_api_key("vision-team", display_name="vision CI")
        key.secret_key                            # shown only now: hand it over
        client.list_api_keys(tenant="vision-team")
        client.revoke_api_key(key)                # or "apiKeys/{key_id}", or the key id

The first admin key cannot come from the service: ``protolens admin keys create
--bootstrap`` makes it on the server side (docs/tenancy.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from protolens import _convert as convert
from protolens import types
from protolens.errors import translate_errors
from protolens.v1 import admin_pb2 as pb
from protolens.v1 import admin_pb2_grpc

ApiKeyRef = str | types.ApiKey


class AdminMethods:
    """Blocking admin methods (mixed into ``Client``)."""

    _admin: admin_pb2_grpc.AdminServiceStub  # made by the client on its channel
    _kw: Callable[..., dict[str, Any]]

    def create_api_key(
        self,
        tenant: str,
        *,
        role: str = "tenant",
        display_name: str = "",
        timeout: float | None = None,
    ) -> types.ApiKey:
        """A new key for ``tenant`` (``role`` "tenant" or "admin"); its ``secret_key`` is
        shown only in what this returns."""
        req = convert.api_key_request(tenant, role, display_name)
        with translate_errors():
            resp = self._admin.CreateApiKey(req, **self._kw(timeout))
        return convert.api_key(resp.api_key, resp.secret_key)

    def list_api_keys(
        self, *, tenant: str = "", timeout: float | None = None
    ) -> list[types.ApiKey]:
        """Every key (or ``tenant``'s), oldest first, revoked ones too; never a secret."""
        with translate_errors():
            resp = self._admin.ListApiKeys(
                pb.ListApiKeysRequest(tenant=tenant), **self._kw(timeout)
            )
        return [convert.api_key(k) for k in resp.api_keys]

    def revoke_api_key(self, key: ApiKeyRef, *, timeout: float | None = None) -> types.ApiKey:
        """Revoke a key: the next call made with it is UNAUTHENTICATED."""
        req = pb.RevokeApiKeyRequest(name=convert.api_key_name(key))
        with translate_errors():
            resp = self._admin.RevokeApiKey(req, **self._kw(timeout))
        return convert.api_key(resp.api_key)


class AsyncAdminMethods:
    """The same, for ``AsyncClient``."""

    _admin: admin_pb2_grpc.AdminServiceStub
    _kw: Callable[..., dict[str, Any]]

    async def create_api_key(
        self,
        tenant: str,
        *,
        role: str = "tenant",
        display_name: str = "",
        timeout: float | None = None,
    ) -> types.ApiKey:
        req = convert.api_key_request(tenant, role, display_name)
        with translate_errors():
            resp = await self._admin.CreateApiKey(req, **self._kw(timeout))
        return convert.api_key(resp.api_key, resp.secret_key)

    async def list_api_keys(
        self, *, tenant: str = "", timeout: float | None = None
    ) -> list[types.ApiKey]:
        req = pb.ListApiKeysRequest(tenant=tenant)
        with translate_errors():
            resp = await self._admin.ListApiKeys(req, **self._kw(timeout))
        return [convert.api_key(k) for k in resp.api_keys]

    async def revoke_api_key(self, key: ApiKeyRef, *, timeout: float | None = None) -> types.ApiKey:
        req = pb.RevokeApiKeyRequest(name=convert.api_key_name(key))
        with translate_errors():
            resp = await self._admin.RevokeApiKey(req, **self._kw(timeout))
        return convert.api_key(resp.api_key)
