"""Who is calling: the seam where authentication will plug in (issue 5).

The interceptor calls a ``TenantResolver`` once per RPC and binds the result to
``CURRENT_TENANT`` for the length of the call; servicers read it with
``current_tenant()`` and pass it to every queue call. Today every caller is
the ``default`` tenant; an API-key resolver will read the ``authorization``
metadata and raise a domain error for a bad key.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar

import grpc

DEFAULT_TENANT = "default"

TenantResolver = Callable[[grpc.aio.ServicerContext], str]

CURRENT_TENANT: ContextVar[str] = ContextVar("protolens_tenant", default=DEFAULT_TENANT)


def default_tenant(context: grpc.aio.ServicerContext) -> str:
    """No authentication yet: everyone is the default tenant."""
    return DEFAULT_TENANT


def current_tenant() -> str:
    """The tenant of the RPC being served."""
    return CURRENT_TENANT.get()
