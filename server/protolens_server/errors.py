"""Domain errors shared by every server layer. No grpc import here.

    ProtolensError
    ├── InvalidArgument        a caller-supplied value is wrong (names the field)
    │   ├── UnknownClass       a class index or name the model does not have
    │   └── ReferenceSetError  a reference folder/file is missing, unreadable or the wrong size
    ├── NotFound
    │   ├── ModelNotFound      no model of that name/path
    │   ├── JobNotFound        no such job (or not yours)
    │   └── CheckNotFound      no such registry check (or not yours)
    ├── InvalidModel           a file that is not a loadable model, or a shape mismatch
    ├── QueueFull              a queue or quota limit was hit (carries retry_after_s)
    │   └── QuotaExceeded      a per-tenant quota (tenants_file) was hit; names the quota
    ├── ServerBusy             this server process is overloaded (a bounded resource stayed busy)
    ├── Unauthenticated        no API key, or a key that is unknown or revoked
    ├── PermissionDenied       a valid key without the role the call needs (e.g. admin)
    ├── FailedPrecondition     the resource is in the wrong state (e.g. cancel a finished job)
    ├── GenerationCancelled    the job was cancelled between optimisation steps
    └── GenerationDiverged     the optimisation produced NaN/Inf

The API maps each class to a gRPC status in one table (api/errors.py); the CLI
prints ``str(error)`` as one line. A failure that is stored (a failed job's, a failed
check's) is an ``ErrorRecord``: (reason, message, metadata) as data; the API maps its
reason to a status when it answers, through the same table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

GENERATION_FAILED = "GENERATION_FAILED"  # the reason of a failure that is not a domain error


class ProtolensError(Exception):
    """Base of every error protolens raises on purpose."""

    reason: str = "PROTOLENS_ERROR"

    def __init__(self, message: str, **metadata: str) -> None:
        super().__init__(message)
        self.message = message
        self.metadata = {k: str(v) for k, v in metadata.items()}

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle as class, message and attributes (subclasses' ``__init__`` take other
        arguments): the worker's engine process sends its errors back pickled."""
        return _rebuild, (type(self), self.message, dict(vars(self)))


def _rebuild(cls: type[ProtolensError], message: str, state: dict[str, Any]) -> ProtolensError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class InvalidArgument(ProtolensError):
    reason = "INVALID_ARGUMENT"

    def __init__(self, field: str, message: str, **metadata: str) -> None:
        super().__init__(f"{field}: {message}", field=field, **metadata)
        self.field = field

    def for_field(self, field: str) -> InvalidArgument:
        """The same error about another request field: a check's ``baseline`` is resolved
        as a ``model``, and the caller must learn which of the two to fix."""
        detail = self.message.removeprefix(f"{self.field}: ")
        kept = {k: v for k, v in self.metadata.items() if k != "field"}
        return type(self)(field, detail, **kept)


class UnknownClass(InvalidArgument):
    reason = "UNKNOWN_CLASS"


class ReferenceSetError(InvalidArgument):
    reason = "BAD_REFERENCE_SET"


class NotFound(ProtolensError):
    reason = "NOT_FOUND"


class ModelNotFound(NotFound):
    reason = "MODEL_NOT_FOUND"


class JobNotFound(NotFound):
    reason = "JOB_NOT_FOUND"


class CheckNotFound(NotFound):
    reason = "CHECK_NOT_FOUND"


class InvalidModel(ProtolensError):
    reason = "INVALID_MODEL"


class QueueFull(ProtolensError):
    reason = "QUEUE_FULL"

    def __init__(self, message: str, retry_after_s: float = 1.0, **metadata: str) -> None:
        super().__init__(message, retry_after_s=f"{retry_after_s:g}", **metadata)
        self.retry_after_s = retry_after_s


class QuotaExceeded(QueueFull):
    """A tenant's quota; ``retry_after_s=None`` when waiting will not help (job too big)."""

    reason = "QUOTA_EXCEEDED"

    def __init__(
        self, message: str, *, quota: str, limit: int, retry_after_s: float | None = 1.0
    ) -> None:
        if retry_after_s is None:
            ProtolensError.__init__(self, message, quota=quota, limit=str(limit))
        else:
            super().__init__(message, retry_after_s, quota=quota, limit=str(limit))
        self.retry_after_s = retry_after_s  # type: ignore[assignment]
        self.quota = quota


class ServerBusy(ProtolensError):
    """A bounded resource of this server process stayed busy (its Redis connections, under a
    flood of requests): not the caller's quota, not Redis being down; retry after a pause."""

    reason = "SERVER_BUSY"

    def __init__(self, message: str, retry_after_s: float = 1.0, **metadata: str) -> None:
        super().__init__(message, retry_after_s=f"{retry_after_s:g}", **metadata)
        self.retry_after_s = retry_after_s


class Unauthenticated(ProtolensError):
    reason = "UNAUTHENTICATED"


class PermissionDenied(ProtolensError):
    reason = "PERMISSION_DENIED"


class FailedPrecondition(ProtolensError):
    reason = "FAILED_PRECONDITION"


class AlreadyExists(ProtolensError):
    """What the request would create exists under the name it gives: a ``request_id``
    (idempotency key) already used for a different request."""

    reason = "ALREADY_EXISTS"


class GenerationCancelled(ProtolensError):
    reason = "CANCELLED"


class GenerationDiverged(ProtolensError):
    reason = "DIVERGED"


@dataclass(frozen=True)
class ErrorRecord:
    """A failure as stored: the domain error's ``reason`` (``GENERATION_FAILED`` for any
    other exception), its message and metadata. No status code: api/errors.py maps the
    reason when the API answers."""

    reason: str
    message: str
    metadata: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, exc: ProtolensError) -> ErrorRecord:
        return cls(exc.reason, exc.message, dict(exc.metadata))

    def to_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "message": self.message, "metadata": dict(self.metadata)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ErrorRecord:
        metadata = d.get("metadata") or {}
        return cls(
            str(d.get("reason") or GENERATION_FAILED),
            str(d.get("message", "")),
            {str(k): str(v) for k, v in metadata.items()},
        )


def error_class(reason: str) -> type[ProtolensError] | None:
    """The domain error class whose ``reason`` is ``reason`` (None for any other)."""
    todo: list[type[ProtolensError]] = [ProtolensError]
    while todo:
        cls = todo.pop()
        if cls.reason == reason:
            return cls
        todo += cls.__subclasses__()
    return None


def error_class_named(name: str) -> type[ProtolensError] | None:
    """The domain error class called ``name`` (how jobs stored errors before ErrorRecord:
    ``"<ClassName>: message"``)."""
    todo: list[type[ProtolensError]] = [ProtolensError]
    while todo:
        cls = todo.pop()
        if cls.__name__ == name:
            return cls
        todo += cls.__subclasses__()
    return None
