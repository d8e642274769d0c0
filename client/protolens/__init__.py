"""protolens client: the Python SDK (``Client``, ``AsyncClient``) and the ``protolens`` CLI.

Needs only grpcio and protobuf; the server side (``protolens_server``) is an extra.
"""

__version__ = "0.1.0"

from typing import TYPE_CHECKING

from protolens._units import unit_target
from protolens.errors import ApiError, ProtolensError
from protolens.types import (
    ApiKey,
    Check,
    CheckReport,
    Isolation,
    Job,
    Layer,
    Model,
    Prototype,
    Target,
    UnitTerm,
    WatchEvent,
)

if TYPE_CHECKING:
    from protolens.client import AsyncClient, Client, WatchRetry

_CLIENT_NAMES = ("AsyncClient", "Client", "WatchRetry")


def __getattr__(name: str) -> object:
    """The clients are imported on first use (they load grpc): ``protolens generate``,
    which runs locally, never needs them (PEP 562)."""
    if name in _CLIENT_NAMES:
        from protolens import client

        return getattr(client, name)
    raise AttributeError(f"module 'protolens' has no attribute {name!r}")


__all__ = [
    "ApiError",
    "ApiKey",
    "AsyncClient",
    "Check",
    "CheckReport",
    "Client",
    "Isolation",
    "Job",
    "Layer",
    "Model",
    "ProtolensError",
    "Prototype",
    "Target",
    "UnitTerm",
    "WatchEvent",
    "WatchRetry",
    "__version__",
    "unit_target",
]
