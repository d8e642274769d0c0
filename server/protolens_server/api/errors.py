"""The one table from domain errors (``protolens_server.errors``) to gRPC status codes.

Each row gives the status code and the ``google.rpc.ErrorInfo`` reason (domain
``protolens``); the error's metadata (e.g. ``field``, ``retry_after_s``) goes
into ``ErrorInfo.metadata``. The most specific class in an error's MRO wins.

``InvalidModel`` maps to FAILED_PRECONDITION: callers name registered models,
never files, so a registered model that will not load is a fault of the
service's state (an operator must fix the store), not of the request.

Anything not in the table is a bug: INTERNAL, a generic message, and the
traceback in the server log (never sent to the caller).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from protolens_server import errors as domain
from protolens_server.queue.connection import TOO_MANY_CONNECTIONS, UNREACHABLE

DOMAIN = "protolens"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Mapping:
    code: grpc.StatusCode
    reason: str | None = None  # None: use the error's own ``reason``


ERROR_TABLE: dict[type[BaseException], Mapping] = {
    domain.InvalidArgument: Mapping(grpc.StatusCode.INVALID_ARGUMENT),
    domain.UnknownClass: Mapping(grpc.StatusCode.INVALID_ARGUMENT),
    domain.ReferenceSetError: Mapping(grpc.StatusCode.INVALID_ARGUMENT),
    domain.NotFound: Mapping(grpc.StatusCode.NOT_FOUND),
    domain.ModelNotFound: Mapping(grpc.StatusCode.NOT_FOUND),
    domain.JobNotFound: Mapping(grpc.StatusCode.NOT_FOUND),
    domain.CheckNotFound: Mapping(grpc.StatusCode.NOT_FOUND),
    domain.InvalidModel: Mapping(grpc.StatusCode.FAILED_PRECONDITION),
    domain.QueueFull: Mapping(grpc.StatusCode.RESOURCE_EXHAUSTED),
    domain.QuotaExceeded: Mapping(grpc.StatusCode.RESOURCE_EXHAUSTED),
    domain.ServerBusy: Mapping(grpc.StatusCode.RESOURCE_EXHAUSTED),
    domain.FailedPrecondition: Mapping(grpc.StatusCode.FAILED_PRECONDITION),
    domain.AlreadyExists: Mapping(grpc.StatusCode.ALREADY_EXISTS),
    domain.Unauthenticated: Mapping(grpc.StatusCode.UNAUTHENTICATED),
    domain.PermissionDenied: Mapping(grpc.StatusCode.PERMISSION_DENIED),
    domain.GenerationCancelled: Mapping(grpc.StatusCode.CANCELLED),
    domain.GenerationDiverged: Mapping(grpc.StatusCode.ABORTED),
    domain.ProtolensError: Mapping(grpc.StatusCode.INTERNAL),
    **{
        error: Mapping(grpc.StatusCode.UNAVAILABLE, "BACKEND_UNAVAILABLE")
        for error in UNREACHABLE  # Redis did not answer (queue/connection.py)
    },
    # a Sentinel/Cluster pool at its cap (a plain URL's pool raises domain.ServerBusy)
    TOO_MANY_CONNECTIONS: Mapping(grpc.StatusCode.RESOURCE_EXHAUSTED, "SERVER_BUSY"),
}
# Messages and metadata can echo caller input: capped, so an error always fits in the
# caller's metadata limit (8 KiB by default) however long the bad value was.
MAX_MESSAGE_CHARS = 1000
MAX_METADATA_CHARS = 200
INTERNAL = Mapping(grpc.StatusCode.INTERNAL, "INTERNAL")
INTERNAL_MESSAGE = "internal error; the server log has the details"
_UNKNOWN_CODE = 2  # google.rpc.Code.UNKNOWN
# What a caller is told of an error from Redis's client (never its own text), by reason.
_BACKEND_MESSAGES = {
    "BACKEND_UNAVAILABLE": "the job store (Redis) is unreachable; retry shortly",
    "SERVER_BUSY": "this API server is overloaded: all its Redis connections are busy"
    " (redis_max_connections); retry shortly, with backoff",
}


@dataclass(frozen=True)
class RpcError:
    """What the caller is told: code, message, ErrorInfo reason and metadata."""

    code: grpc.StatusCode
    message: str
    reason: str
    metadata: dict[str, str] = field(default_factory=dict)

    def to_status(self) -> grpc.Status:
        """A rich status: google.rpc.Status with ErrorInfo (+ RetryInfo when retry_after_s)."""
        info = error_details_pb2.ErrorInfo(
            reason=self.reason, domain=DOMAIN, metadata=self.metadata
        )
        details = [_pack(info)]
        retry = self.metadata.get("retry_after_s")
        if retry:
            seconds = float(retry)
            delay = duration_pb2.Duration(
                seconds=int(seconds), nanos=int((seconds - math.floor(seconds)) * 1e9)
            )
            details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
        status = status_pb2.Status(code=self.code.value[0], message=self.message, details=details)
        return rpc_status.to_status(status)


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def lookup(exc: BaseException | type[BaseException]) -> Mapping | None:
    """The table row for an error (or error class): its most specific class in the table."""
    for cls in (exc if isinstance(exc, type) else type(exc)).__mro__:
        if cls in ERROR_TABLE:
            return ERROR_TABLE[cls]
    return None


def to_rpc_error(exc: BaseException, method: str = "") -> RpcError:
    """Map ``exc``; an unknown error is logged with its traceback and answered INTERNAL."""
    mapping = lookup(exc)
    if mapping is None:
        log.error("rpc.internal_error", exc_info=exc, extra={"method": method})
        return RpcError(INTERNAL.code, INTERNAL_MESSAGE, INTERNAL.reason or "INTERNAL")
    if isinstance(exc, domain.ProtolensError):
        reason = mapping.reason or exc.reason
        metadata = {
            k[:MAX_METADATA_CHARS]: _cap(v, MAX_METADATA_CHARS) for k, v in exc.metadata.items()
        }
        return RpcError(mapping.code, _cap(exc.message, MAX_MESSAGE_CHARS), reason, metadata)
    log.warning("rpc.backend_unavailable", exc_info=exc, extra={"method": method})
    reason = mapping.reason or mapping.code.name
    return RpcError(mapping.code, _BACKEND_MESSAGES[reason], reason)


def _cap(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 15] + f"... ({len(text)} chars)"


def code_number(code: grpc.StatusCode) -> int:
    """The google.rpc.Code number of a grpc.StatusCode (for Job.error.code)."""
    return int(code.value[0])


@dataclass(frozen=True)
class StoredStatus:
    """A stored failure (``ErrorRecord``) as the API shows it (``common.Status`` fields)."""

    code: int  # google.rpc.Code number
    reason: str
    message: str
    metadata: dict[str, str]


def stored_status(error: domain.ErrorRecord) -> StoredStatus:
    """Map a stored failure by its reason, through the same table as live errors (a reason
    that names no domain error, such as GENERATION_FAILED, is UNKNOWN); capped like them."""
    cls = domain.error_class(error.reason)
    mapping = lookup(cls) if cls is not None else None
    code = code_number(mapping.code) if mapping is not None else _UNKNOWN_CODE
    metadata = {
        k[:MAX_METADATA_CHARS]: _cap(v, MAX_METADATA_CHARS) for k, v in error.metadata.items()
    }
    return StoredStatus(code, error.reason, _cap(error.message, MAX_MESSAGE_CHARS), metadata)
