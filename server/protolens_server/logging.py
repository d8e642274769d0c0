"""Structured logs: one JSON object per line, with the job, tenant and trace in context.

The API binds ``trace_id`` (from the caller's ``traceparent`` / ``x-request-id``
metadata, or a new one) and ``tenant`` for the length of an RPC; the worker
binds ``job_id``, ``tenant`` and the job's stored ``trace_id`` while it runs a
job. Every log line written inside a ``bind`` block carries those fields, in
asyncio tasks and threads started with ``contextvars.copy_context()`` too::

    from protolens_server.logging import bind, configure_logging, get_logger

    configure_logging("INFO")            # once, at process start
    log = get_logger(__name__)
    with bind(job_id=job.id, tenant=job.tenant, trace_id=job.trace_id):
        log.info("job.started", extra={"targets": 3})

gives ``{"ts": "2026-11-27T13:50:01.123Z", "level": "info", "event":
"job.started", "logger": "...", "job_id": "...", "tenant": "...", "trace_id":
"...", "targets": 3}``. The message is the event name: keep it a short, stable
``noun.verb`` and put values in ``extra`` so they stay searchable.
"""

from __future__ import annotations

import contextvars
import datetime as _dt
import json as _json
import logging
import re
import secrets
import sys
import traceback
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from types import MappingProxyType
from typing import Any, TextIO

__all__ = [
    "CONTEXT_FIELDS",
    "JsonFormatter",
    "bind",
    "bound_fields",
    "configure_logging",
    "get_logger",
    "new_trace_id",
    "trace_id_from_metadata",
]

# Always present in a JSON line (null when unbound), so log queries can rely on them.
CONTEXT_FIELDS = ("job_id", "tenant", "trace_id")

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_BOUND: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "protolens_log_fields", default=_EMPTY
)

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {
    "message",
    "asctime",
    "taskName",
}
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")
_HANDLER_MARK = "_protolens_handler"


@contextmanager
def bind(**fields: Any) -> Iterator[None]:
    """Add ``fields`` to every log line written inside the block (None values are skipped)."""
    merged = {**_BOUND.get(), **{k: v for k, v in fields.items() if v is not None}}
    token = _BOUND.set(merged)
    try:
        yield
    finally:
        reset_context_var(_BOUND, token)


def reset_context_var(var: contextvars.ContextVar[Any], token: contextvars.Token[Any]) -> None:
    """``var.reset(token)``, except where a generator is closed from another context.

    A server stream the client stops early is closed (``aclose``) by gRPC in another
    context than the one that set ``var``: ``reset`` raises ValueError there. That
    context never saw the value, and the one that did ends with its task, so there is
    nothing to undo.
    """
    with suppress(ValueError):
        var.reset(token)


def bound_fields() -> dict[str, Any]:
    """The fields bound in the current context (a copy)."""
    return dict(_BOUND.get())


def new_trace_id() -> str:
    """A fresh W3C trace id: 32 lowercase hex digits, not all zero."""
    return secrets.token_hex(16)


def trace_id_from_metadata(metadata: Iterable[tuple[str, Any]] | None) -> str:
    """The caller's trace id from gRPC metadata, or a new one.

    Reads a W3C ``traceparent`` header first, then ``x-request-id`` (any
    printable token up to 128 characters); anything else gets a new id.
    """
    values = {str(k).lower(): v for k, v in (metadata or ())}
    parent = values.get("traceparent")
    if isinstance(parent, bytes):
        parent = parent.decode("ascii", "replace")
    if isinstance(parent, str):
        match = _TRACEPARENT.match(parent.strip().lower())
        if match and match.group(1) != "0" * 32:
            return match.group(1)
    request_id = values.get("x-request-id")
    if isinstance(request_id, bytes):
        request_id = request_id.decode("ascii", "replace")
    if isinstance(request_id, str) and 0 < len(request_id) <= 128 and request_id.isprintable():
        return request_id.strip()
    return new_trace_id()


def _timestamp(created: float) -> str:
    stamp = _dt.datetime.fromtimestamp(created, tz=_dt.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON line: ts, level, event, logger, context fields, extras."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
            "logger": record.name,
        }
        bound = _BOUND.get()
        for name in CONTEXT_FIELDS:
            line[name] = bound.get(name)
        line.update({k: v for k, v in bound.items() if k not in line})
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRS and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exc_type"] = record.exc_info[0].__name__ if record.exc_info[0] else None
            line["exc"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        elif record.exc_text:
            line["exc"] = record.exc_text
        return _json.dumps(line, default=str, ensure_ascii=False, separators=(",", ":"))


class _TextFormatter(logging.Formatter):
    """Human-readable lines for a terminal: time, level, event, then key=value pairs."""

    def format(self, record: logging.LogRecord) -> str:
        pairs = {**_BOUND.get()}
        pairs.update(
            {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRS and k[:1] != "_"}
        )
        text = f"{_timestamp(record.created)} {record.levelname:<7} {record.getMessage()}"
        if pairs:
            text += " " + " ".join(f"{k}={v}" for k, v in pairs.items())
        if record.exc_info:
            text += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
        return text


def configure_logging(
    level: str | int = "INFO", json: bool = True, stream: TextIO | None = None
) -> logging.Handler:
    """Send every log record (root logger) to ``stream`` (stderr) as JSON or text lines.

    Idempotent: a second call replaces the handler this function installed
    before and leaves other handlers alone. Returns the installed handler.
    """
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if json else _TextFormatter())
    setattr(handler, _HANDLER_MARK, True)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    return handler


def logging_config() -> tuple[int, bool] | None:
    """(level, json) as ``configure_logging`` set them, or None where it was not called:
    what a child process passes to ``configure_logging`` to log as its parent does."""
    root = logging.getLogger()
    for handler in root.handlers:
        if getattr(handler, _HANDLER_MARK, False):
            return root.level, isinstance(handler.formatter, JsonFormatter)
    return None


def get_logger(name: str) -> logging.Logger:
    """A standard library logger (here for symmetry: ``get_logger(__name__)``)."""
    return logging.getLogger(name)
