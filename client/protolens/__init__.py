"""protolens client: the Python SDK (``Client``, ``AsyncClient``) and the ``protolens`` CLI.

Needs only grpcio and protobuf; the server side (``protolens_server``) is an extra.
"""

__version__ = "0.1.0"

from protolens._units import unit_target
from protolens.client import AsyncClient, Client, WatchRetry
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
