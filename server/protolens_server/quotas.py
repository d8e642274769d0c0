"""Per-tenant limits, read from the YAML file named by ``Settings.tenants_file``.

    defaults:                     # every tenant not listed below
      max_queued_jobs: 1000       # jobs waiting (not yet running)
      max_running_jobs: 64        # jobs running at once (workers skip the tenant past it)
      max_target_steps: 100000    # targets x prototypes_per_target x steps, per job (the
                                  # step budget: config.steps, else config.max_steps)
      requests_per_second: 50     # RPCs per second (all methods but health/reflection)
    tenants:
      alpha:
        max_queued_jobs: 20000
      bulk-batch:
        requests_per_second: 5

Unset values fall back to ``defaults``, then to the built-in defaults below
(generous: a file is only needed to tighten or loosen them). 0 means no limit.

``max_target_steps`` is the one limit on what a single request may make a worker do.
Its built-in default, ``DEFAULT_MAX_TARGET_STEPS``, admits the largest job of default
configs (``max_targets_per_job``'s 1,000 targets at the default budget of 256 steps) and
refuses what the other limits alone let through: 1,000 targets x 64 prototypes x 10,000
steps, 2,500 times more, in one request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from protolens_server.errors import InvalidArgument
from protolens_server.principal import TENANT_RULE, is_tenant_name

DEFAULT_MAX_TARGET_STEPS = 256_000


class TenantLimits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_queued_jobs: int = Field(10_000, ge=0)
    max_running_jobs: int = Field(0, ge=0)
    max_target_steps: int = Field(DEFAULT_MAX_TARGET_STEPS, ge=0)
    requests_per_second: int = Field(0, ge=0)


class Quotas(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    defaults: TenantLimits = TenantLimits()
    tenants: dict[str, dict[str, int]] = Field(default_factory=dict)

    def for_tenant(self, tenant: str) -> TenantLimits:
        override = self.tenants.get(tenant)
        if not override:
            return self.defaults
        return self.defaults.model_copy(update=override)

    def running_limits(self) -> tuple[int, dict[str, int]]:
        """(default max_running_jobs, {tenant: its own}) for the worker's scheduler."""
        own = {
            t: self.for_tenant(t).max_running_jobs
            for t, o in self.tenants.items()
            if "max_running_jobs" in o
        }
        return self.defaults.max_running_jobs, own


def load_quotas(path: str | Path | None) -> Quotas:
    """The quotas in ``path``; built-in defaults when ``path`` is None."""
    if path is None:
        return Quotas()
    try:
        raw: Any = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as exc:
        raise InvalidArgument("tenants_file", f"cannot read {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise InvalidArgument("tenants_file", f"{path} is not valid YAML: {exc}") from exc
    try:
        quotas = Quotas.model_validate(raw)
        for tenant in quotas.tenants:
            if not is_tenant_name(tenant):  # it would never match a caller: a typo
                raise InvalidArgument(
                    "tenants_file",
                    f"{path}: tenants: {tenant!r} is not a tenant name; {TENANT_RULE}",
                )
            quotas.for_tenant(tenant)
            TenantLimits.model_validate({**quotas.defaults.model_dump(), **quotas.tenants[tenant]})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidArgument("tenants_file", f"{path}: {where}: {first['msg']}") from exc
    return quotas
