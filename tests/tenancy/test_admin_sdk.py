"""The SDK's admin methods (``Client``/``AsyncClient``) against a real server with keys."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from protolens import ApiKey, AsyncClient, Client
from protolens.auth import connection
from protolens.errors import InvalidArgumentError, PermissionDeniedError, UnauthenticatedError
from tenancy_support import Keyed


def _sync_round_trip(keyed: Keyed) -> tuple[ApiKey, list[ApiKey], ApiKey]:
    with Client(keyed.address, **connection(api_key=keyed.admin_key)) as admin:
        made = admin.create_api_key("gamma", display_name="gamma ci")
        with Client(keyed.address, **connection(api_key=made.secret_key)) as gamma:
            assert [m.id for m in gamma.list_models()] == ["tiny"]  # the new key works
        listed = admin.list_api_keys(tenant="gamma")
        revoked = admin.revoke_api_key(made)  # an ApiKey, a name or a bare id
        gamma = Client(keyed.address, **connection(api_key=made.secret_key))
        with gamma, pytest.raises(UnauthenticatedError):
            gamma.list_models()
    return made, listed, revoked


async def test_client_creates_lists_and_revokes_keys(keyed: Keyed) -> None:
    made, listed, revoked = await asyncio.to_thread(_sync_round_trip, keyed)
    assert made.tenant == "gamma" and made.role == "tenant" and made.display_name == "gamma ci"
    assert made.name == f"apiKeys/{made.key_id}" and made.secret_key.startswith("pl_")
    assert made.create_time is not None
    assert abs(made.create_time - datetime.now(UTC)) < timedelta(minutes=5)
    assert not made.revoked and made.revoke_time is None
    assert [k.key_id for k in listed] == [made.key_id]
    assert all(k.secret_key == "" for k in listed)  # a secret is shown once, at creation
    assert revoked.key_id == made.key_id and revoked.revoked and revoked.secret_key == ""


async def test_async_client_admin_calls_and_their_errors(keyed: Keyed) -> None:
    async with AsyncClient(keyed.address, **connection(api_key=keyed.admin_key)) as admin:
        ops = await admin.create_api_key("ops3", role="admin")
        assert ops.role == "admin"
        tenants = {k.tenant for k in await admin.list_api_keys()}
        assert {"ops", "alpha", "beta", "ops3"} <= tenants
        assert (await admin.revoke_api_key(ops.key_id)).revoked
        with pytest.raises(InvalidArgumentError) as bad_role:
            await admin.create_api_key("ops4", role="root")  # refused before any call
        assert bad_role.value.field == "role"
        with pytest.raises(InvalidArgumentError) as bad_name:
            await admin.revoke_api_key("apiKeys/a/b")
        assert bad_name.value.field == "name" and "apiKeys/{key_id}" in str(bad_name.value)
        with pytest.raises(InvalidArgumentError) as bad_tenant:
            await admin.create_api_key("Not A Tenant")
        assert bad_tenant.value.field == "tenant"
    async with AsyncClient(keyed.address, **connection(api_key=keyed.keys["alpha"])) as alpha:
        with pytest.raises(PermissionDeniedError):
            await alpha.list_api_keys()
