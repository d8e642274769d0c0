"""Check records live in the Redis layer: ``queue/checks.py`` (names kept importable here)."""

from protolens_server.queue.checks import (
    FINAL_STATES,
    RUNNING,
    CheckRecord,
    CheckStore,
    GenerationStats,
    new_check_id,
)

__all__ = [
    "FINAL_STATES",
    "RUNNING",
    "CheckRecord",
    "CheckStore",
    "GenerationStats",
    "new_check_id",
]
