"""A server stream closed from another context (the client stopped it early) ends quietly.

gRPC closes an abandoned server-streaming handler with ``aclose()`` from a context
other than the one that ran it; the interceptor's context variables (the principal,
the log fields) must not raise "created in a different Context" there.
"""

from __future__ import annotations

import asyncio
import contextvars

from protolens_server.api.interceptors import ServiceInterceptor
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
