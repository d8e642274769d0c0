"""API keys: created by admins, stored only as hashes in Redis (``queue/api_keys.py``: the
key store and the rate limiter, whose names stay importable here), checked on every RPC.

``ApiKeyAuth`` is the interceptor's tenant resolver: it reads the
``authorization: Bearer <key>`` metadata and answers a ``Principal`` or raises
``Unauthenticated``. With ``require_key=False`` (insecure development mode) a
call without a key is the ``default`` tenant, but a key that is sent must be
valid.
"""

from __future__ import annotations

from typing import Any

import grpc

from protolens_server.api.tenancy import ANONYMOUS, Principal
from protolens_server.errors import Unauthenticated
from protolens_server.queue.api_keys import (  # noqa: F401 (re-exported)
    KEY_PREFIX,
    ApiKeyInfo,
    ApiKeyStore,
    RateLimiter,
    check_tenant,
)
from protolens_server.queue.codec import text

_MISSING = "no API key: send the metadata 'authorization: Bearer pl_...'"


def bearer_key(metadata: Any) -> str | None:
    """The key in ``authorization: Bearer <key>`` metadata; None if there is none."""
    for k, v in metadata or ():
        if k.lower() == "authorization":
            value = text(v).strip()
            scheme, _, token = value.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated("the authorization metadata must read 'Bearer <key>'")
            return token.strip()
    return None


class ApiKeyAuth:
    """The interceptor's resolver: API key -> Principal (see module docstring).

    With a ``RateLimiter``, each authenticated call also counts against the
    tenant's requests-per-second quota (RESOURCE_EXHAUSTED with a retry hint).
    """

    def __init__(
        self,
        store: ApiKeyStore,
        *,
        require_key: bool = True,
        rate_limiter: RateLimiter | None = None,
    ) -> None:
        self.store = store
        self.require_key = require_key
        self.rate_limiter = rate_limiter

    async def __call__(self, context: grpc.aio.ServicerContext) -> Principal:
        key = bearer_key(context.invocation_metadata())
        if key is None:
            if self.require_key:
                raise Unauthenticated(_MISSING)
            principal = ANONYMOUS
        else:
            principal = await self.store.verify(key)
        if self.rate_limiter is not None:
            await self.rate_limiter.check(principal.tenant)
        return principal
