"""A flood of calls that keeps the API's Redis pool busy, over real gRPC and a real Redis.

The API's connections are a bounded pool (``redis_max_connections``) that waits
``redis_pool_timeout_s`` for a free one. Here the pool is 2 connections with a 50 ms wait
and one tenant keeps 200 calls in flight; halfway through, Redis holds every client's
commands for half a second (``CLIENT PAUSE``), so the two connections stay busy and the
pool runs dry whatever the machine's speed (on a quiet machine a GET returns long before
the next call needs its connection, and the pool never ran dry without it):

- a call that found no connection is RESOURCE_EXHAUSTED ``SERVER_BUSY``, naming
  ``redis_max_connections``, with a RetryInfo: never UNAVAILABLE "the job store (Redis) is
  unreachable", which sent operators after a Redis that was fine;
- the watches opened before the flood live through it and end with their job: the one
  reader of the event streams has a connection of its own, where it used to take one from
  the pool every 250 ms and, when none came free in time, ended every watch of the process.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import grpc
import redis.asyncio as aioredis
from protolens.v1 import common_pb2, job_pb2, service_pb2_grpc
from protolens.v1 import service_pb2 as pb
from protolens_server.api.server import start_server
from protolens_server.config import Settings
from rpc_details import status_details

FLOOD_CALLS, FLOOD_S, WATCHES = 200, 2.0, 10
PAUSE_AFTER_S, PAUSE_MS = 0.5, 500  # Redis holds every client's commands this long


async def test_a_busy_pool_is_server_busy_and_ends_no_watch(api_settings: Settings) -> None:
    settings = api_settings.model_copy(
        update={"redis_max_connections": 2, "redis_pool_timeout_s": 0.05}
    )
    api, port = await start_server(settings, sample_interval_s=0.2)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = service_pb2_grpc.ProtolensServiceStub(channel)
            request = pb.CreatePrototypeJobRequest(
                model="tiny", targets=[common_pb2.Target(classes=[common_pb2.ClassRef(index=1)])]
            )
            job = (await stub.CreatePrototypeJob(request)).job.name  # no worker: QUEUED
            opened = [asyncio.Event() for _ in range(WATCHES)]

            async def watch(i: int) -> list[int]:
                states = []
                async for event in stub.WatchJob(pb.WatchJobRequest(name=job)):
                    states.append(event.state)
                    opened[i].set()
                return states

            watchers = [asyncio.create_task(watch(i)) for i in range(WATCHES)]
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in opened)), 30)
            # A watch's first event comes from its own catch-up reads (pooled connections,
            # where a dry pool ends it with SERVER_BUSY and the SDK resumes it); the claim
            # here is about watches waiting on the shared reader: wait until all are there.
            fanout = api.store.jobs.events
            # the shared reader's connection is its own, never one of the request pool's
            # (whether a dry pool would have ended the watches through it is a race)
            assert fanout.redis.connection_pool is not api.store.redis.connection_pool
            deadline = time.monotonic() + 30
            while fanout.watchers < WATCHES and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert fanout.watchers == WATCHES, fanout.watchers

            codes: Counter[str] = Counter()
            busy: list[grpc.aio.AioRpcError] = []
            end = time.monotonic() + FLOOD_S

            async def flood() -> None:
                while time.monotonic() < end:
                    try:
                        await stub.GetJob(pb.GetJobRequest(name=job))
                        codes["OK"] += 1
                    except grpc.aio.AioRpcError as exc:
                        codes[exc.code().name] += 1
                        busy.append(exc)

            async def stall_redis() -> None:
                await asyncio.sleep(PAUSE_AFTER_S)
                client = aioredis.from_url(settings.redis_url)
                try:
                    await client.execute_command("CLIENT", "PAUSE", PAUSE_MS, "ALL")
                finally:
                    await client.aclose()

            await asyncio.gather(stall_redis(), *(flood() for _ in range(FLOOD_CALLS)))
            assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}, codes
            assert codes["RESOURCE_EXHAUSTED"], f"the pool never ran dry: {codes}"
            error = busy[0]
            assert "redis_max_connections" in (error.details() or ""), error.details()
            details = status_details(error)
            assert details["ErrorInfo"].reason == "SERVER_BUSY"  # type: ignore[attr-defined]
            assert details["RetryInfo"].retry_delay.seconds == 1  # type: ignore[attr-defined]
            assert not any(w.done() for w in watchers), [w for w in watchers if w.done()]

            # the job ends: every watch gets its final event and ends normally
            await stub.CancelJob(pb.CancelJobRequest(name=job))
            finals = await asyncio.wait_for(asyncio.gather(*watchers), 30)
            assert all(states[-1] == job_pb2.JOB_STATE_CANCELLED for states in finals), finals
    finally:
        await api.stop(grace=0)
