"""``StreamSlots``: how many streaming RPCs each tenant may hold open on this process.

A stream costs the server a task and its buffers for as long as the caller keeps
it open; without a cap one tenant could open thousands and crowd out the rest.
Over ``max_streams_per_tenant`` a new stream is refused at once with
RESOURCE_EXHAUSTED (reason ``QUOTA_EXCEEDED``, metadata ``quota`` and ``limit``).
The count is per API process: with N replicas a tenant may hold up to N times it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from protolens_server import metrics
from protolens_server.errors import QuotaExceeded

QUOTA_NAME = "max_streams_per_tenant"


class StreamSlots:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}

    def open_for(self, tenant: str) -> int:
        return self._open.get(tenant, 0)

    @contextlib.contextmanager
    def hold(self, tenant: str, what: str = "WatchJob") -> Iterator[None]:
        """One slot of ``tenant``'s for the length of the block; QuotaExceeded if none is free."""
        held = self._open.get(tenant, 0)
        if held >= self.limit:
            metrics.STREAMS_REFUSED.inc()
            raise QuotaExceeded(
                f"you have {held} {what} streams open on this server (limit"
                f" {QUOTA_NAME}={self.limit}); close some, or poll GetJob/ListJobs for the rest",
                quota=QUOTA_NAME,
                limit=self.limit,
                retry_after_s=1.0,
            )
        self._open[tenant] = held + 1
        metrics.STREAMS_OPEN.inc()
        try:
            yield
        finally:
            metrics.STREAMS_OPEN.dec()
            left = self._open[tenant] - 1
            if left:
                self._open[tenant] = left
            else:
                del self._open[tenant]
