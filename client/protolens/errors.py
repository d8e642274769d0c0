"""Errors the SDK raises. Catch ``ProtolensError`` for all of them.

    ProtolensError
    ├── ApiError                 the service answered with an error status
    │   ├── InvalidArgumentError     INVALID_ARGUMENT (``field`` names what is wrong)
    │   ├── NotFoundError            NOT_FOUND (unknown job or model)
    │   ├── FailedPreconditionError  FAILED_PRECONDITION (e.g. cancel a finished job)
    │   ├── AlreadyExistsError       ALREADY_EXISTS (a request_id reused for another request)
    │   ├── ResourceExhaustedError   RESOURCE_EXHAUSTED (``retry_after`` seconds)
    │   ├── DeadlineExceededError    DEADLINE_EXCEEDED
    │   ├── UnauthenticatedError     UNAUTHENTICATED
    │   ├── PermissionDeniedError    PERMISSION_DENIED
    │   └── InternalError            INTERNAL / UNKNOWN / other codes
    ├── ConnectionError          the service could not be reached (UNAVAILABLE)
    └── JobFailedError           a job you waited for ended FAILED or CANCELLED

``translate_errors()`` is the one place ``grpc.RpcError`` becomes one of these. The
``protolens`` command prints any of them as one line; commands the server side adds
raise them too (``protolens_server.cli.edge`` turns its domain errors into them).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import grpc

    from protolens.types import Job

DOMAIN = "protolens"
_STATUS_DETAILS_KEY = "grpc-status-details-bin"


class ProtolensError(Exception):
    """Base of every error the SDK raises on purpose. ``reason`` (UPPER_SNAKE) says which
    kind; a command that fails for a reason of its own passes ``reason=``, and the CLI
    prints ``protolens: REASON: message``."""

    reason: str = "PROTOLENS_ERROR"

    def __init__(self, message: str, *, reason: str = "") -> None:
        super().__init__(message)
        self.message = message
        if reason:
            self.reason = reason

    def __str__(self) -> str:
        return self.message


class ApiError(ProtolensError):
    """The service answered with an error status."""

    def __init__(
        self,
        code: grpc.StatusCode,
        reason: str,
        message: str,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason or code.name
        self.metadata = dict(metadata or {})

    @property
    def field(self) -> str:
        """The request field the error is about ("" if none)."""
        return self.metadata.get("field", "")


class InvalidArgumentError(ApiError):
    pass


class NotFoundError(ApiError):
    pass


class FailedPreconditionError(ApiError):
    pass


class AlreadyExistsError(ApiError):
    """A ``request_id`` already used for a different request (``metadata["job"]`` names
    the job it made): give the new request a new ``request_id``."""


class ResourceExhaustedError(ApiError):
    @property
    def retry_after(self) -> float | None:
        """Seconds the service suggests waiting before retrying."""
        value = self.metadata.get("retry_after_s")
        return float(value) if value else None


class DeadlineExceededError(ApiError):
    pass


class UnauthenticatedError(ApiError):
    pass


class PermissionDeniedError(ApiError):
    pass


class InternalError(ApiError):
    pass


class ConnectionError(ProtolensError):
    """The service could not be reached, or said it is unavailable (retry later).

    ``cause`` says which, when the transport told: ``"refused"`` (nothing listens at the
    address), ``"not_grpc"`` (something answered, but not a gRPC server: a wrong port),
    ``"unresolved"`` (the host name does not resolve), or ``""`` (the service answered
    UNAVAILABLE itself, e.g. while its Redis is unreachable, or the cause is unknown).
    """

    def __init__(self, message: str, reason: str = "UNAVAILABLE", cause: str = "") -> None:
        super().__init__(message)
        self.reason = reason or "UNAVAILABLE"
        self.cause = cause


# What gRPC's transport says (in the status details) for each ConnectionError.cause.
_CONNECTION_CAUSES = (
    ("refused", ("Connection refused", "connection refused")),
    ("not_grpc", ("Failed parsing HTTP/2", "Trying to connect an http1.x")),
    ("unresolved", ("DNS resolution failed", "errors resolving", "hostname lookup")),
)
CAUSE_TEXT = {
    "refused": "nothing is listening there (connection refused)",
    "not_grpc": "something answered, but not a gRPC server",
    "unresolved": "the host name does not resolve",
}


def connection_cause(details: str) -> str:
    """The ``ConnectionError.cause`` that gRPC's status details show ("" if none)."""
    for cause, needles in _CONNECTION_CAUSES:
        if any(n in details for n in needles):
            return cause
    return ""


class JobFailedError(ProtolensError):
    """A job ended FAILED or CANCELLED; ``job`` is its final state."""

    def __init__(self, job: Job) -> None:
        detail = job.error.message if job.error else ""
        super().__init__(f"job {job.id} ended {job.state}" + (f": {detail}" if detail else ""))
        self.job = job
        self.reason = job.error.reason if job.error and job.error.reason else f"JOB_{job.state}"


@functools.cache
def _by_code() -> dict[grpc.StatusCode, type[ApiError]]:
    """The SDK error of each status code (grpc imported on the first failed call only:
    ``protolens generate`` runs locally and never loads the gRPC stack)."""
    import grpc

    return {
        grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
        grpc.StatusCode.OUT_OF_RANGE: InvalidArgumentError,
        grpc.StatusCode.NOT_FOUND: NotFoundError,
        grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
        grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
        grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
        grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
        grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
        grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    }


def from_rpc_error(exc: grpc.RpcError) -> ProtolensError:
    """The most specific SDK error for a failed call."""
    import grpc

    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    message = (exc.details() if hasattr(exc, "details") else "") or str(code)
    trailing = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    reason, metadata = _error_info(trailing or ())
    if code == grpc.StatusCode.UNAVAILABLE:
        cause = "" if reason else connection_cause(message)
        if cause:
            text = f"service unavailable: {CAUSE_TEXT[cause]} ({message})"
            return ConnectionError(text, reason, cause)
        return ConnectionError(f"service unavailable: {message}", reason)
    cls = _by_code().get(code, InternalError)
    return cls(code, reason, message, metadata)


def _error_info(trailing: Any) -> tuple[str, dict[str, str]]:
    """Reason and metadata from the google.rpc.ErrorInfo in the status details, if any."""
    raw = next((v for k, v in trailing if k == _STATUS_DETAILS_KEY), None)
    if raw is None:
        return "", {}
    try:
        from google.rpc import error_details_pb2, status_pb2
    except ImportError:  # googleapis-common-protos missing: fall back to the code name
        return "", {}
    status = status_pb2.Status.FromString(raw)
    reason, metadata = "", {}
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info) and info.domain == DOMAIN:
            reason, metadata = info.reason, dict(info.metadata)
    return reason, metadata


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Re-raise ``grpc.RpcError`` as the matching ``ProtolensError`` (chained with ``from``)."""
    import grpc

    try:
        yield
    except grpc.RpcError as exc:
        raise from_rpc_error(exc) from exc
