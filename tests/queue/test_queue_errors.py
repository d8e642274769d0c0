"""Failures are stored as data (reason, message, metadata): the queue keeps them, only the
API's error table turns a reason into a status code."""

from __future__ import annotations

from pathlib import Path

import grpc
from protolens_server.api.convert import error_to_pb
from protolens_server.api.errors import code_number, stored_status
from protolens_server.errors import (
    GENERATION_FAILED,
    ErrorRecord,
    InvalidModel,
    ReferenceSetError,
    UnknownClass,
)
from protolens_server.queue.jobs import JobQueue
from protolens_server.queue.records import EndMode, EndOutcome, JobState
from protolens_server.worker.worker import job_failure
from queue_helpers import make_spec


async def _fail(queue: JobQueue, consumer, error, **spec):
    record, _ = await queue.submit(make_spec(**spec))
    [entry] = await consumer.read(1)
    _, delivery = await consumer.claim(entry)
    assert await consumer.end(delivery, EndMode.FAIL, error=error) == EndOutcome.DEAD
    return await queue.get(record.job_id)


async def test_a_domain_failure_is_stored_as_reason_message_metadata(
    queue: JobQueue, consumer_factory
) -> None:
    failure = job_failure(UnknownClass("targets", "class 1001 of a 1000-class model"))
    done = await _fail(queue, consumer_factory(), failure)
    assert done.state == JobState.FAILED
    assert done.failure == ErrorRecord(
        "UNKNOWN_CLASS", "targets: class 1001 of a 1000-class model", {"field": "targets"}
    )
    raw = await queue.redis.hmget(queue.keys.job(done.job_id), "error", "error_reason")
    assert raw == [b"targets: class 1001 of a 1000-class model", b"UNKNOWN_CLASS"]
    status = error_to_pb(done)
    assert status.code == code_number(grpc.StatusCode.INVALID_ARGUMENT)
    assert status.reason == "UNKNOWN_CLASS" and status.metadata["field"] == "targets"
    assert status.metadata["attempts"] == "1"


async def test_any_other_failure_is_generation_failed_and_unknown(
    queue: JobQueue, consumer_factory
) -> None:
    failure = job_failure(RuntimeError("boom in /home/someone/model.py\nsecond line"))
    assert failure == ErrorRecord(GENERATION_FAILED, "RuntimeError: boom in <path>")
    done = await _fail(queue, consumer_factory(), failure, seed=1)
    status = error_to_pb(done)
    assert (status.code, status.reason) == (2, GENERATION_FAILED)
    assert status.message == "RuntimeError: boom in <path>"


async def test_a_failure_stored_before_error_records_is_read_as_one(
    queue: JobQueue, consumer_factory
) -> None:
    """Jobs stored ``"<DomainErrorClass>: message"`` (and no reason) until this version."""
    done = await _fail(queue, consumer_factory(), "x", seed=2)
    key = queue.keys.job(done.job_id)
    await queue.redis.hset(key, mapping={"error": "InvalidModel: not a model", "error_reason": ""})
    old = await queue.get(done.job_id)
    assert old.failure == ErrorRecord("INVALID_MODEL", "not a model")
    assert error_to_pb(old).code == code_number(grpc.StatusCode.FAILED_PRECONDITION)
    await queue.redis.hset(key, "error", "ValueError: not a domain error")
    assert (await queue.get(done.job_id)).failure == ErrorRecord(
        GENERATION_FAILED, "ValueError: not a domain error"
    )


def test_stored_status_maps_through_the_one_error_table() -> None:
    exc = InvalidModel("no forward", path="x" * 500)
    status = stored_status(ErrorRecord.of(exc))
    assert status.code == code_number(grpc.StatusCode.FAILED_PRECONDITION)
    assert status.reason == "INVALID_MODEL" and len(status.metadata["path"]) <= 200
    assert stored_status(ErrorRecord("NO_SUCH_REASON", "m")).code == 2


def test_paths_under_the_roots_tenants_name_are_shown_relative_the_rest_hidden() -> None:
    """A job error names a reference-set or model-store file relative to its root (the file
    to fix); any other absolute path, one that merely contains a root, is ``<path>``; a
    relative path is left alone."""
    error = ReferenceSetError(
        "reference",
        "cannot read image /srv/refs/photos/apple/1.png; see /srv/models/m.pt,"
        " /other/srv/refs/z.png, prefs/y and a/b/c.png",
        file="/srv/refs/photos/apple/1.png",
    )
    failure = job_failure(error, (Path("/srv/refs"), Path("/srv/models"), None))
    assert failure.message == (
        "reference: cannot read image photos/apple/1.png; see m.pt, <path>, prefs/y and a/b/c.png"
    )
    assert failure.metadata["file"] == "photos/apple/1.png"
    assert job_failure(error).metadata["file"] == "<path>"  # no roots given: all hidden
