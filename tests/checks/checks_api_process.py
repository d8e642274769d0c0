"""A real API server in its own process, for tests that SIGKILL it mid-check.

    python checks_api_process.py REDIS_URL MODEL_STORE LEASE_S

Prints its gRPC port on one line once it serves; every caller is the default tenant.
"""

from __future__ import annotations

import asyncio
import sys


async def main(redis_url: str, store: str, lease_s: float) -> None:
    import torch
    from checks_serving import check_settings
    from protolens_server.api.server import start_server
    from protolens_server.api.tenancy import default_tenant

    torch.set_num_threads(1)
    settings = check_settings(redis_url, store)
    api, port = await start_server(
        settings, sample_interval_s=0.2, tenant_resolver=default_tenant, check_lease_s=lease_s
    )
    print(port, flush=True)
    await api.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
