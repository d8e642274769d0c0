"""JSON logs: one object per line, context fields bound per job/RPC and isolated per task."""

from __future__ import annotations

import asyncio
import contextvars
import io
import json
import logging
import threading

import pytest
from protolens_server.logging import (
    bind,
    bound_fields,
    configure_logging,
    new_trace_id,
    trace_id_from_metadata,
)


@pytest.fixture
def stream():
    buf = io.StringIO()
    handler = configure_logging("DEBUG", json=True, stream=buf)
    yield buf
    logging.getLogger().removeHandler(handler)


def lines(buf: io.StringIO) -> list[dict]:
    """Our test logger's lines (asyncio etc. may log at DEBUG too)."""
    records = [json.loads(line) for line in buf.getvalue().splitlines()]
    return [r for r in records if r["logger"] == "protolens.test"]


def test_one_json_object_per_line_with_context_fields(stream):
    log = logging.getLogger("protolens.test")
    log.info("rpc.received")
    with bind(job_id="j1", tenant="acme", trace_id="t" * 32):
        log.warning("job.started", extra={"targets": 3, "model": "m"})
    [first, second] = lines(stream)
    assert first["event"] == "rpc.received"
    assert first["level"] == "info"
    assert first["job_id"] is None and first["tenant"] is None and first["trace_id"] is None
    assert second == {
        "ts": second["ts"],
        "level": "warning",
        "event": "job.started",
        "logger": "protolens.test",
        "job_id": "j1",
        "tenant": "acme",
        "trace_id": "t" * 32,
        "targets": 3,
        "model": "m",
    }
    assert second["ts"].endswith("Z") and "T" in second["ts"]


def test_bind_nests_and_restores():
    with bind(tenant="a", trace_id="x"):
        with bind(job_id="j", tenant="b", ignored=None):
            assert bound_fields() == {"tenant": "b", "trace_id": "x", "job_id": "j"}
        assert bound_fields() == {"tenant": "a", "trace_id": "x"}
    assert bound_fields() == {}


async def test_asyncio_tasks_keep_their_own_fields(stream):
    log = logging.getLogger("protolens.test")

    async def job(job_id: str) -> None:
        with bind(job_id=job_id):
            await asyncio.sleep(0.01)
            log.info("job.finished")

    with bind(trace_id="trace-1"):
        await asyncio.gather(job("a"), job("b"), job("c"))
    got = {(r["job_id"], r["trace_id"]) for r in lines(stream)}
    assert got == {("a", "trace-1"), ("b", "trace-1"), ("c", "trace-1")}


def test_thread_started_with_copied_context_keeps_fields(stream):
    log = logging.getLogger("protolens.test")
    with bind(job_id="j9", tenant="t"):
        ctx = contextvars.copy_context()
    thread = threading.Thread(target=ctx.run, args=(log.info, "engine.step"))
    thread.start()
    thread.join()
    [record] = lines(stream)
    assert (record["job_id"], record["tenant"]) == ("j9", "t")


def test_exception_is_in_the_same_line(stream):
    log = logging.getLogger("protolens.test")
    try:
        raise ValueError("bad target")
    except ValueError:
        log.exception("job.failed")
    assert len(stream.getvalue().splitlines()) == 1
    [record] = lines(stream)
    assert record["exc_type"] == "ValueError"
    assert "bad target" in record["exc"]


def test_configure_twice_keeps_one_handler():
    a, b = io.StringIO(), io.StringIO()
    configure_logging("INFO", stream=a)
    handler = configure_logging("INFO", stream=b)
    try:
        logging.getLogger("protolens.test").info("once")
        assert a.getvalue() == ""
        assert len(b.getvalue().splitlines()) == 1
    finally:
        logging.getLogger().removeHandler(handler)


def test_text_mode_is_readable():
    buf = io.StringIO()
    handler = configure_logging("INFO", json=False, stream=buf)
    try:
        with bind(job_id="j1"):
            logging.getLogger("protolens.test").info("job.started", extra={"n": 2})
    finally:
        logging.getLogger().removeHandler(handler)
    assert "job.started" in buf.getvalue() and "job_id=j1" in buf.getvalue()
    assert "n=2" in buf.getvalue()


def test_trace_id_from_metadata():
    tid = "4bf92f3577b34da6a3ce929d0e0e4736"
    assert trace_id_from_metadata([("traceparent", f"00-{tid}-00f067aa0ba902b7-01")]) == tid
    assert trace_id_from_metadata([("x-request-id", "req-42")]) == "req-42"
    # invalid traceparent (all-zero trace id) falls through to a fresh id
    fresh = trace_id_from_metadata([("traceparent", f"00-{'0' * 32}-00f067aa0ba902b7-01")])
    assert len(fresh) == 32 and fresh != "0" * 32
    assert len(trace_id_from_metadata(None)) == 32
    assert new_trace_id() != new_trace_id()
