"""Who a caller is: a tenant and a role (``Principal``). No gRPC here: the Redis layer's
API-key store (queue/api_keys.py) answers principals, the API binds them per RPC
(api/tenancy.py re-exports these names)."""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_TENANT = "default"
# A tenant's name: 1-63 of a-z 0-9 . _ -, starting with a letter or digit. \Z, not $:
# "$" also matches before a final newline ("team\n" was a valid tenant).
TENANT_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}\Z")
TENANT_RULE = "use 1-63 of a-z 0-9 . _ - starting with a letter or digit"


def is_tenant_name(name: str) -> bool:
    return isinstance(name, str) and TENANT_RE.match(name) is not None


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
