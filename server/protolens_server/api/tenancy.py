"""Who is calling: the principal (tenant + role) bound for the length of one RPC.

The interceptor calls a ``TenantResolver`` once per RPC (except the public
health and reflection services) and binds the result to ``CURRENT_PRINCIPAL``;
servicers read ``current_tenant()`` and pass it to every queue call, and admin
RPCs check ``current_principal().is_admin``. The production resolver is
``api.auth.ApiKeyAuth`` (API keys in the ``authorization`` metadata); a
resolver may be sync or async and may return a tenant name or a ``Principal``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar

import grpc

from protolens_server.principal import (  # noqa: F401 (re-exported)
    ANONYMOUS,
    DEFAULT_TENANT,
    ROLE_ADMIN,
    ROLE_TENANT,
    ROLES,
    Principal,
)

TenantResolver = Callable[
    [grpc.aio.ServicerContext], "str | Principal | Awaitable[str | Principal]"
]

CURRENT_PRINCIPAL: ContextVar[Principal] = ContextVar("protolens_principal", default=ANONYMOUS)


def default_tenant(context: grpc.aio.ServicerContext) -> str:
    """No authentication: everyone is the default tenant (tests of other parts)."""
    return DEFAULT_TENANT


def current_principal() -> Principal:
    """The caller of the RPC being served."""
    return CURRENT_PRINCIPAL.get()


def current_tenant() -> str:
    """The tenant of the RPC being served."""
    return CURRENT_PRINCIPAL.get().tenant
