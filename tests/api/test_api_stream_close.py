"""A server stream closed from another context (the client stopped it early) ends quietly.

gRPC closes an abandoned server-streaming handler with ``aclose()`` from a context
other than the one that ran it; the interceptor's context variables (the principal,
the log fields) must not raise "created in a different Context" there.
"""

from __future__ import annotations

import asyncio
import contextvars
import time

import grpc
from protolens.v1 import common_pb2, service_pb2_grpc
from protolens.v1 import service_pb2 as pb
from protolens_server import metrics
from protolens_server.api.interceptors import ServiceInterceptor
from protolens_server.api.server import start_server
from protolens_server.api.tenancy import Principal, current_tenant
from protolens_server.logging import bind, bound_fields


class _Context:
    def invocation_metadata(self) -> tuple:
        return ()

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"


async def test_stream_handler_closed_in_another_context_does_not_raise() -> None:
    seen: list[tuple[str, dict]] = []

    async def watch(request, context):  # a server-streaming behaviour
        while True:
            seen.append((current_tenant(), bound_fields()))
            yield request

    interceptor = ServiceInterceptor(lambda context: Principal("team-a"))
    handler = interceptor._stream(watch, "/protolens.v1.ProtolensService/WatchJob", False)
    stream = handler(object(), _Context())
    # first item in one task (its own context copy), as the gRPC server runs it ...
    first = await asyncio.create_task(stream.__anext__())
    assert first is not None and seen[0][0] == "team-a"
    # ... and the close in another context, as gRPC does for a cancelled stream
    await asyncio.create_task(stream.aclose(), context=contextvars.copy_context())


async def test_bind_in_a_generator_closed_elsewhere_does_not_raise() -> None:
    async def gen():
        with bind(job="j1"):
            while True:
                yield bound_fields()

    g = gen()
    assert (await asyncio.create_task(g.__anext__()))["job"] == "j1"
    await asyncio.create_task(g.aclose(), context=contextvars.copy_context())
    assert "job" not in bound_fields()


# --- a watch its caller cancels ends on the server too --------------------------------

SLOTS = 48  # the tenant's stream cap in this test: every round below fills it


async def _watch_then_cancel(stub, job: str) -> None:
    """Open a WatchJob, read its first event, cancel it (as Ctrl-C or a broken loop does)."""
    call = stub.WatchJob(pb.WatchJobRequest(name=job))
    async for _ in call:
        break
    call.cancel()


async def _until_no_watchers(within_s: float) -> None:
    """Wait until this process holds no stream slot and no subscription; fail after ``within_s``."""
    deadline = time.monotonic() + within_s
    for gauge, what in (("protolens_watchers", "subscribed"), ("protolens_streams_open", "open")):
        while metrics.REGISTRY.get_sample_value(gauge):
            assert time.monotonic() < deadline, (
                f"{metrics.REGISTRY.get_sample_value(gauge):.0f} watches still {what}"
                f" {within_s:.0f} s after their callers cancelled them"
            )
            await asyncio.sleep(0.05)


async def test_cancelled_watches_free_their_slots_and_subscriptions(
    api_settings, tiny_store
) -> None:
    """Cancelled watches end on the server at once: their slots free, nothing left subscribed.

    Before the fix most of them stayed open for as long as their job did (here: queued
    forever): a cancellation that reached the handler during one of its Redis reads was
    swallowed by redis-py (Python 3.11's reconnect path) and the handler went on to wait
    for events, holding the tenant's stream slot, so after a few rounds the tenant's
    every WatchJob was RESOURCE_EXHAUSTED with none open."""
    settings = api_settings.model_copy(update={"max_streams_per_tenant": SLOTS})
    api, port = await start_server(settings, sample_interval_s=0.2)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = service_pb2_grpc.ProtolensServiceStub(channel)
            request = pb.CreatePrototypeJobRequest(
                model="tiny", targets=[common_pb2.Target(classes=[common_pb2.ClassRef(index=1)])]
            )
            job = (await stub.CreatePrototypeJob(request)).job.name  # no worker: stays QUEUED
            for _ in range(3):  # each round opens and cancels as many watches as the cap
                await asyncio.gather(*(_watch_then_cancel(stub, job) for _ in range(SLOTS)))
                # A cancel reaches the server a moment after call.cancel() returns: the next
                # round may start once the server has ended them all (a bug held them open
                # for as long as the job, forever here).
                await _until_no_watchers(within_s=5)
            # and the tenant can watch again, up to its cap
            await asyncio.gather(*(_watch_then_cancel(stub, job) for _ in range(SLOTS)))
    finally:
        await api.stop(grace=0)
