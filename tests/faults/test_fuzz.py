"""Fuzz every RPC with random and malformed messages: the server never crashes and answers
only documented status codes (docs/service.md, api/errors.py)."""

from __future__ import annotations

import asyncio

import grpc
from faults_support import SOAK
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from protolens.v1 import admin_pb2, service_pb2

S = grpc.StatusCode
DOCUMENTED = {
    S.OK, S.INVALID_ARGUMENT, S.NOT_FOUND, S.FAILED_PRECONDITION, S.RESOURCE_EXHAUSTED,
    S.UNAUTHENTICATED, S.PERMISSION_DENIED, S.UNAVAILABLE, S.CANCELLED, S.DEADLINE_EXCEEDED,
}  # fmt: skip
METHODS = [
    ("/protolens.v1.ProtolensService/" + m.name, m.input_type._concrete_class, m.server_streaming)
    for m in service_pb2.DESCRIPTOR.services_by_name["ProtolensService"].methods
] + [
    ("/protolens.v1.AdminService/" + m.name, m.input_type._concrete_class, m.server_streaming)
    for m in admin_pb2.DESCRIPTOR.services_by_name["AdminService"].methods
]
EXAMPLES = 2000 if SOAK else 300

texts = st.text(max_size=300) | st.sampled_from(
    ["jobs/x", "jobs/", "jobs/../../etc", "models/tiny", "tiny", "jobs/a/prototypes/-1", "\x00"]
)


def _filled(cls, data) -> bytes:
    """A message of ``cls`` with random values in its scalar fields, serialised."""
    msg = cls()
    for field in cls.DESCRIPTOR.fields:
        if field.is_repeated or field.message_type is not None:
            continue
        kind = field.type
        try:
            if kind == field.TYPE_STRING:
                setattr(msg, field.name, data.draw(texts))
            elif kind in (field.TYPE_INT32, field.TYPE_INT64, field.TYPE_ENUM):
                setattr(msg, field.name, data.draw(st.integers(-(2**31), 2**31 - 1)))
            elif kind == field.TYPE_BOOL:
                setattr(msg, field.name, data.draw(st.booleans()))
            elif kind == field.TYPE_DOUBLE:
                setattr(msg, field.name, data.draw(st.floats(allow_nan=True)))
        except (ValueError, TypeError):
            pass
    return msg.SerializeToString()


def test_fuzz_every_rpc(api, report) -> None:
    address = f"127.0.0.1:{api.port}"
    tried = {"n": 0}
    codes: set[str] = set()
    loop = asyncio.get_event_loop_policy().get_event_loop()

    async def call(channel, method: str, streaming: bool, payload: bytes) -> S:
        identity = lambda b: b  # noqa: E731 (raw bytes on the wire)
        try:
            if streaming:
                rpc = channel.unary_stream(method, request_serializer=identity,
                                           response_deserializer=identity)  # fmt: skip
                async for _ in rpc(payload, timeout=5):
                    pass
            else:
                rpc = channel.unary_unary(method, request_serializer=identity,
                                          response_deserializer=identity)  # fmt: skip
                await rpc(payload, timeout=5)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return S.OK

    async def run(method, streaming, payload) -> S:
        async with grpc.aio.insecure_channel(address) as channel:
            return await call(channel, method, streaming, payload)

    @settings(max_examples=EXAMPLES, deadline=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(data=st.data())
    def fuzz(data) -> None:
        method, cls, streaming = data.draw(st.sampled_from(METHODS))
        malformed = data.draw(st.booleans())
        payload = data.draw(st.binary(max_size=2000)) if malformed else _filled(cls, data)
        code = loop.run_until_complete(run(method, streaming, payload))
        tried["n"] += 1
        codes.add(code.name)
        assert code in DOCUMENTED, (method, payload[:80], code)

    fuzz()

    async def healthy() -> int:
        async with grpc.aio.insecure_channel(address) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            return reply.status

    assert loop.run_until_complete(healthy()) == health_pb2.HealthCheckResponse.SERVING
    report(
        f"fuzz: random and malformed messages to all {len(METHODS)} RPCs (hypothesis)",
        f"server kept SERVING; codes seen: {', '.join(sorted(codes))}",
        fuzzed=tried["n"],
    )
