"""Isolation over real gRPC with real keys: tenant beta tries every RPC on tenant alpha's jobs."""

from __future__ import annotations

import asyncio

import grpc
from protolens.v1 import common_pb2, job_pb2
from protolens.v1 import service_pb2 as pb
from protolens_server.worker.worker import Worker
from tenancy_support import Keyed

S = grpc.StatusCode


def _request(cls: int, request_id: str = "", seed: int = 0) -> pb.CreatePrototypeJobRequest:
    req = pb.CreatePrototypeJobRequest(
        model="tiny",
        targets=[common_pb2.Target(classes=[common_pb2.ClassRef(index=cls)])],
        request_id=request_id,
        seed=seed,
    )
    req.config.steps = 2
    return req


async def _error(call) -> grpc.aio.AioRpcError:
    try:
        result = await call
    except grpc.aio.AioRpcError as exc:
        return exc
    raise AssertionError(f"expected an error, got {result}")


async def _watch_error(stub, name: str, md) -> grpc.aio.AioRpcError:
    try:
        async for _ in stub.WatchJob(pb.WatchJobRequest(name=name), metadata=md):
            raise AssertionError("beta received an event of alpha's job")
    except grpc.aio.AioRpcError as exc:
        return exc
    raise AssertionError("watch ended without an error")


def _same_answer(a: grpc.aio.AioRpcError, b: grpc.aio.AioRpcError, job: str, other: str) -> None:
    """Another tenant's job and a job that never existed answer alike (no hint it exists)."""
    assert a.code() == b.code() == S.NOT_FOUND
    assert a.details().replace(job, "X") == b.details().replace(other, "X")


async def test_a_tenant_cannot_touch_another_tenants_jobs(keyed: Keyed, keyed_settings) -> None:
    jobs, alpha, beta = keyed.jobs, keyed.md("alpha"), keyed.md("beta")
    made = await jobs.CreatePrototypeJob(_request(1, "alpha-req-1"), metadata=alpha)
    queued = await jobs.CreatePrototypeJob(_request(2, seed=5), metadata=alpha)
    done_name, queued_name = made.job.name, queued.job.name
    ghost = "jobs/" + "0" * 24

    # get / cancel / watch / prototype on a queued job of alpha's
    for name in (queued_name, done_name):
        _same_answer(
            await _error(jobs.GetJob(pb.GetJobRequest(name=name), metadata=beta)),
            await _error(jobs.GetJob(pb.GetJobRequest(name=ghost), metadata=beta)),
            name.removeprefix("jobs/"),
            ghost.removeprefix("jobs/"),
        )
        cancel = await _error(jobs.CancelJob(pb.CancelJobRequest(name=name), metadata=beta))
        assert cancel.code() == S.NOT_FOUND
        assert (await _watch_error(jobs, name, beta)).code() == S.NOT_FOUND
        proto = await _error(
            jobs.GetPrototype(pb.GetPrototypeRequest(name=f"{name}/prototypes/0"), metadata=beta)
        )
        assert proto.code() == S.NOT_FOUND
    # beta's cancel did nothing: alpha's job is still queued
    still = await jobs.GetJob(pb.GetJobRequest(name=queued_name), metadata=alpha)
    assert still.job.state == made.job.state

    # list shows only one's own
    assert (await jobs.ListJobs(pb.ListJobsRequest(), metadata=beta)).jobs == []
    listed = await jobs.ListJobs(pb.ListJobsRequest(), metadata=alpha)
    assert sorted(j.name for j in listed.jobs) == sorted([done_name, queued_name])

    # run the jobs with a real worker; alpha can fetch the prototype, beta still cannot
    await jobs.CancelJob(pb.CancelJobRequest(name=queued_name), metadata=alpha)
    async with Worker(keyed_settings, name="w-iso") as worker:
        for _ in range(50):
            await worker.run_once(block_ms=100)
            got = await jobs.GetJob(pb.GetJobRequest(name=done_name), metadata=alpha)
            if got.job.state == job_pb2.JOB_STATE_SUCCEEDED:
                break
            await asyncio.sleep(0.05)
    name0 = f"{done_name}/prototypes/0"
    assert got.job.state == job_pb2.JOB_STATE_SUCCEEDED
    mine = await jobs.GetPrototype(pb.GetPrototypeRequest(name=name0), metadata=alpha)
    assert mine.prototype.png
    theirs = await _error(jobs.GetPrototype(pb.GetPrototypeRequest(name=name0), metadata=beta))
    assert theirs.code() == S.NOT_FOUND
    assert (await _watch_error(jobs, done_name, beta)).code() == S.NOT_FOUND

    # an identical request from beta is served from the cache, without alpha's identity
    again = await jobs.CreatePrototypeJob(_request(1, "beta-req-9"), metadata=beta)
    assert again.outcome == pb.CREATE_OUTCOME_CACHE_HIT
    assert again.job.name != done_name
    wire = again.SerializeToString()
    assert b"alpha" not in wire and b"alpha-req-1" not in wire
    assert again.job.request_id == "beta-req-9"
    theirs = await jobs.GetPrototype(
        pb.GetPrototypeRequest(name=f"{again.job.name}/prototypes/0"), metadata=beta
    )
    assert theirs.prototype.png == mine.prototype.png
    # and alpha still cannot see beta's copy
    other = await _error(jobs.GetJob(pb.GetJobRequest(name=again.job.name), metadata=alpha))
    assert other.code() == S.NOT_FOUND


async def test_dedup_join_across_tenants_hides_who_asked_first(keyed: Keyed) -> None:
    jobs, alpha, beta = keyed.jobs, keyed.md("alpha"), keyed.md("beta")
    first = await jobs.CreatePrototypeJob(
        _request(3, "alpha-secret-rid", seed=11),
        metadata=(*alpha, ("x-request-id", "alpha-trace-0001")),
    )
    joined = await jobs.CreatePrototypeJob(_request(3, "", seed=11), metadata=beta)
    assert joined.outcome == pb.CREATE_OUTCOME_DEDUP_JOIN
    wire = joined.SerializeToString()
    for secret in (b"alpha", b"alpha-secret-rid", b"alpha-trace-0001"):
        assert secret not in wire
    got = await jobs.GetJob(pb.GetJobRequest(name=joined.job.name), metadata=beta)
    assert b"alpha" not in got.SerializeToString()
    # beta cancelling detaches only beta; alpha's job stays queued
    await jobs.CancelJob(pb.CancelJobRequest(name=joined.job.name), metadata=beta)
    mine = await jobs.GetJob(pb.GetJobRequest(name=first.job.name), metadata=alpha)
    assert mine.job.state == first.job.state
    assert mine.job.request_id == "alpha-secret-rid"
