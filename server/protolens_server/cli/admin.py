"""The server side of ``protolens admin keys create --bootstrap``: the first admin key.

No key can call the AdminService before there is an admin key, so the first one is
written straight into the service's Redis, where that Redis is reachable. The client
CLI finds this function by the ``protolens.hooks`` entry point ``bootstrap-api-key``
(pyproject.toml) and never imports it by name.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from protolens import names
from protolens.types import ApiKey

from protolens_server.cli.edge import command_errors

if TYPE_CHECKING:
    from protolens_server.queue.api_keys import ApiKeyInfo


@command_errors()
def bootstrap_api_key(
    tenant: str, *, role: str, display_name: str = "", redis_url: str | None = None
) -> ApiKey:
    """Create an API key in the store at ``redis_url`` (default: the settings'); returns it
    with its ``secret_key``, shown only now."""
    from protolens_server.config import load_settings
    from protolens_server.errors import InvalidArgument
    from protolens_server.queue.store import Store

    settings = load_settings(redis_url=redis_url)
    if not settings.redis_url:
        raise InvalidArgument("redis_url", "--bootstrap needs --redis-url or $PROTOLENS_REDIS_URL")

    async def create() -> tuple[ApiKeyInfo, str]:
        store = Store.open(settings, "admin")  # also sentinel and cluster URLs
        try:
            return await store.api_keys.create(tenant, role, display_name)
        finally:
            await store.close()

    info, secret = asyncio.run(create())
    return ApiKey(
        name=names.API_KEYS.name(info.key_id),
        key_id=info.key_id,
        tenant=info.tenant,
        role=info.role,
        display_name=info.name,
        create_time=datetime.fromtimestamp(info.created_at, UTC),
        secret_key=secret,
    )
