"""CancelJob racing a job's end (real gRPC, real Redis, a real in-process worker).

A tenant may cancel at any moment: while the job waits, while it runs, while the worker
stores its result, or just after it ended. Whatever the moment, the cancel answers the
job or FAILED_PRECONDITION (already finished), never INTERNAL; the job ends once, in
one consistent state (SUCCEEDED with its prototype, or CANCELLED with none); its watch
ends with that one final event; and no queue entry is left pending for a worker.
"""

from __future__ import annotations

import asyncio

import grpc
from protolens.v1 import common_pb2, job_pb2
from protolens.v1 import service_pb2 as pb
from protolens_server.api.server import ApiServer
from protolens_server.config import Settings
from protolens_server.queue.delivery import GROUP
from protolens_server.worker.worker import Worker

S = grpc.StatusCode
FINAL = {job_pb2.JOB_STATE_SUCCEEDED, job_pb2.JOB_STATE_CANCELLED}
# from before the worker takes the job, through its steps and its final writes, to after
# it ended (measured here: all three of cancelled, "cancel answered but it finished" and
# FAILED_PRECONDITION occur)
DELAYS = (0.0, 0.002, 0.01, 0.03, 0.06, 0.1, 0.2, 0.8)


def _request(seed: int) -> pb.CreatePrototypeJobRequest:
    target = common_pb2.Target(classes=[common_pb2.ClassRef(name="banana")])
    req = pb.CreatePrototypeJobRequest(model="tiny", targets=[target], seed=seed)
    req.config.steps = 6
    return req


async def _cancel(stub, name: str, delay: float) -> grpc.StatusCode:
    await asyncio.sleep(delay)
    try:
        await stub.CancelJob(pb.CancelJobRequest(name=name))
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return S.OK


async def test_a_cancel_at_any_moment_ends_the_job_once_and_consistently(
    api: ApiServer, stub, api_settings: Settings
) -> None:
    outcomes: dict[str, tuple[grpc.StatusCode, int]] = {}
    async with Worker(api_settings, name="w-race") as worker:
        await worker.run_once(block_ms=10)  # warm: the model loaded before the races
        for seed, delay in enumerate(DELAYS * 3):
            name = (await stub.CreatePrototypeJob(_request(1000 + seed))).job.name
            canceller = asyncio.ensure_future(_cancel(stub, name, delay))
            await worker.run_once(block_ms=50)
            code = await canceller
            state = (await stub.GetJob(pb.GetJobRequest(name=name))).job.state
            outcomes[name] = (code, state)
        for _ in range(3):  # anything handed back by a cancel mid-formation
            await worker.run_once(block_ms=10)
    seen = set()
    for name, (code, _) in outcomes.items():
        assert code in (S.OK, S.FAILED_PRECONDITION), (name, code)
        job = (await stub.GetJob(pb.GetJobRequest(name=name))).job
        assert job.state in FINAL, (name, job.state)
        if job.state == job_pb2.JOB_STATE_SUCCEEDED:
            assert len(job.prototypes) == 1 and code in (S.OK, S.FAILED_PRECONDITION)
            png = await stub.GetPrototype(pb.GetPrototypeRequest(name=f"{name}/prototypes/0"))
            assert png.prototype.png
        else:
            assert not job.prototypes and code == S.OK
        events = [e async for e in stub.WatchJob(pb.WatchJobRequest(name=name), timeout=10)]
        finals = [e.state for e in events if e.state in FINAL | {job_pb2.JOB_STATE_FAILED}]
        assert finals == [job.state], (name, [e.state for e in events])
        seen.add(job.state)
    for priority in range(3):
        stream = api.queue.keys.stream(priority)
        if await api.queue.redis.exists(stream):
            pending = await api.queue.redis.xpending(stream, GROUP)
            assert pending["pending"] == 0, (stream, pending)
    assert seen == FINAL, seen  # the delays reached both sides of the race
