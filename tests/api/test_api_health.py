"""Health follows Redis within about a second: stopped, hung (SIGSTOP) and back again."""

from __future__ import annotations

import asyncio
import signal
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from protolens_server.api.server import start_server
from protolens_server.config import Settings

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _becomes(stub, status: int, timeout: float) -> float:
    """Seconds until the server's health is ``status`` (polled every 20 ms)."""
    start = time.monotonic()
    while True:
        reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
        if reply.status == status:
            return time.monotonic() - start
        assert time.monotonic() - start < timeout, f"health stayed {reply.status}"
        await asyncio.sleep(0.02)


async def test_health_follows_redis_within_a_second(redis_server_factory, tiny_store) -> None:
    redis = redis_server_factory()
    settings = Settings(
        redis_url=redis.url,
        grpc_port=0,
        model_store=tiny_store,
        builtin_models=False,
        insecure=True,
        shutdown_grace_s=0,
    )
    api, port = await start_server(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            await _becomes(stub, SERVING, 2)
            await asyncio.to_thread(redis.stop)  # stopped: connections refused
            assert await _becomes(stub, NOT_SERVING, 5) <= 1.0
            await asyncio.to_thread(redis.start)
            assert await _becomes(stub, SERVING, 5) <= 1.0
            assert redis.proc is not None
            redis.proc.send_signal(signal.SIGSTOP)  # hung: connections open, no answers
            try:
                assert await _becomes(stub, NOT_SERVING, 5) <= 1.0
            finally:
                redis.proc.send_signal(signal.SIGCONT)
            assert await _becomes(stub, SERVING, 5) <= 1.0
    finally:
        await api.stop(grace=0)
