"""Who a caller is: a tenant and a role (``Principal``). No gRPC here: the Redis layer's
API-key store (queue/api_keys.py) answers principals, the API binds them per RPC
(api/tenancy.py re-exports these names)."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_TENANT = "default"
ROLE_TENANT = "tenant"
ROLE_ADMIN = "admin"
ROLES = (ROLE_TENANT, ROLE_ADMIN)


@dataclass(frozen=True)
class Principal:
    tenant: str
    role: str = ROLE_TENANT
    key_id: str = ""  # "" when no key was presented (insecure development mode)

    @property
    def is_admin(self) -> bool:
        return self.role == ROLE_ADMIN


ANONYMOUS = Principal(DEFAULT_TENANT)
