"""JobRecord <-> the fields of its Redis hash.

A job is a hash rather than one JSON string so that Lua scripts can change its
state, owner and progress atomically without parsing JSON. Scalar JobRecord
fields are stored as strings; ``spec`` and ``prototypes`` as JSON. Fields that
are queue bookkeeping (``owner``, ``cancel``, ``t:<tenant>``...) are ignored.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from protolens_server.errors import error_class_named
from protolens_server.queue.records import JobEvent, JobRecord, JobSpec, JobState, StoredPrototype

_JSON_FIELDS = ("spec", "prototypes", "error_metadata")
_FLOAT_FIELDS = ("created_at", "started_at", "finished_at", "best_probability", "progress_at")
_INT_FIELDS = ("step", "total_steps", "attempts")
_STR_FIELDS = (
    "job_id",
    "state",
    "error",
    "error_reason",
    "cache_key",
    "worker",
    "phase",
    "phase_message",
)
RECORD_FIELDS = (*_JSON_FIELDS, *_FLOAT_FIELDS, *_INT_FIELDS, *_STR_FIELDS, "cache_hit")


def text(v: object) -> str:
    """A Redis reply value as a str (redis-py answers bytes unless told otherwise)."""
    return v.decode() if isinstance(v, bytes) else str(v)


def record_to_fields(record: JobRecord) -> dict[str, str]:
    d = dataclasses.asdict(record)
    out: dict[str, str] = {}
    for name in RECORD_FIELDS:
        value = d[name]
        if name in _JSON_FIELDS:
            out[name] = json.dumps(value, separators=(",", ":"))
        elif name == "cache_hit":
            out[name] = "1" if value else "0"
        elif name == "state":
            out[name] = JobState(value).value
        else:
            out[name] = repr(value) if isinstance(value, float) else str(value)
    return out


def record_from_fields(fields: dict[Any, Any], spec: JobSpec | None = None) -> JobRecord:
    """A job hash's record; ``spec``: its spec if already parsed (not parsed again)."""
    f = {text(k): text(v) for k, v in fields.items() if text(k) in RECORD_FIELDS}
    d: dict[str, Any] = {
        "spec": spec if spec is not None else json.loads(f["spec"]),
        "prototypes": json.loads(f.get("prototypes", "[]")),
        "error_metadata": json.loads(f.get("error_metadata") or "{}"),
        "cache_hit": f.get("cache_hit", "0") == "1",
    }
    for name in _FLOAT_FIELDS:
        d[name] = float(f.get(name, 0) or 0)
    for name in _INT_FIELDS:
        d[name] = int(float(f.get(name, 0) or 0))
    for name in _STR_FIELDS:
        d[name] = f.get(name, "")
    if d["error"] and not d["error_reason"]:
        d["error_reason"], d["error"] = _legacy_error(d["error"])
    return JobRecord.from_dict(d)


def _legacy_error(error: str) -> tuple[str, str]:
    """(reason, message) of an error stored as ``"<DomainErrorClass>: message"`` (how jobs
    stored failures before ErrorRecord); ("", error) for any other text."""
    head, sep, rest = error.partition(": ")
    cls = error_class_named(head) if sep else None
    return (cls.reason, rest) if cls is not None else ("", error)


def prototypes_to_json(prototypes: list[StoredPrototype]) -> str:
    """The prototypes as stored (``dataclasses.asdict``'s JSON, built without its
    recursive deep copy: only the target is a nested dataclass; the rest, lists, tuples
    and dicts of plain values, encode the same as they are)."""
    return json.dumps([_stored_dict(p) for p in prototypes], separators=(",", ":"))


def _stored_dict(p: StoredPrototype) -> dict[str, Any]:
    out = {f.name: getattr(p, f.name) for f in dataclasses.fields(p)}
    out["target"] = dataclasses.asdict(p.target)
    return out


def scores_to_json(scores: dict[str, Any]) -> bytes:
    """A prototype's scores as the blob that holds them (canonical JSON: same scores, same key)."""
    return json.dumps(scores, separators=(",", ":"), sort_keys=True).encode()


def scores_from_json(raw: bytes) -> dict[str, Any]:
    return dict(json.loads(raw))


def spec_from_json(raw: str | bytes) -> JobSpec:
    """A job hash's ``spec`` field."""
    stub = {"job_id": "", "spec": json.loads(raw), "state": "QUEUED"}
    return JobRecord.from_dict(stub).spec


def prototypes_from_json(raw: str | bytes) -> list[StoredPrototype]:
    """Parse a prototypes list by round-tripping through JobRecord's own parser."""
    stub = {"job_id": "", "spec": _EMPTY_SPEC, "state": "QUEUED", "prototypes": json.loads(raw)}
    return JobRecord.from_json(json.dumps(stub)).prototypes


_EMPTY_SPEC = dataclasses.asdict(JobSpec(model="", model_digest="", targets=(), config={}, seed=0))


def event_from_fields(job_id: str, fields: dict[Any, Any], entry_id: str = "") -> JobEvent:
    """An event from its stream entry; ``entry_id`` (``<ms>-<seq>``) gives its time."""
    f = {text(k): text(v) for k, v in fields.items()}
    millis = entry_id.partition("-")[0]
    return JobEvent(
        job_id=job_id,
        state=JobState(f.get("state", "QUEUED")),
        step=int(float(f.get("step", 0) or 0)),
        total_steps=int(float(f.get("total_steps", 0) or 0)),
        best_probability=float(f.get("best_probability", 0) or 0),
        message=f.get("message", ""),
        phase=f.get("phase", ""),
        phase_message=f.get("phase_message", ""),
        time=int(millis) / 1000 if millis.isdigit() else 0.0,
    )
