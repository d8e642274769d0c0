"""The environment for a command a test starts (tests/conftest.py sets the run's cache)."""

from __future__ import annotations

import os


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment without the test run's PROTOLENS_* settings (the command
    is given its own), but with the run's cache folder (``PROTOLENS_CACHE_DIR``): a
    command a test starts never writes to the user's ~/.cache/protolens."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROTOLENS_")}
    env["PROTOLENS_CACHE_DIR"] = os.environ["PROTOLENS_CACHE_DIR"]
    return {**env, **extra}
