"""Check records live in the Redis layer: ``queue/checks.py`` (names kept importable here)."""

from protolens_server.queue.checks import (
    FINAL_STATES,
    RUNNING,
    CheckRecord,
    CheckState,
    CheckStore,
    GenerationStats,
    new_check_id,
)

__all__ = [
    "FINAL_STATES",
    "RUNNING",
    "CheckRecord",
    "CheckState",
    "CheckStore",
    "GenerationStats",
    "new_check_id",
]
