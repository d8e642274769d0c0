"""The SDK's watch over a real aio server that goes away: it resumes, or gives up clearly.

The full fault (a real restart on the same port while four clients watch a running
job) is tests/faults/test_faults.py::test_api_restart_while_clients_watch; these
cover the policy's edges: giving up, turning it off, the caller's timeout, codes
that are not retried, and a watch that never opened.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from protolens import AsyncClient, Client
from protolens import errors as sdk
from protolens.client import WatchRetry
from protolens_server.api.server import start_server
from protolens_server.api.stack import free_port
from protolens_server.config import Settings

QUICK = WatchRetry(attempts=3, backoff_s=0.05, max_backoff_s=0.1)


async def _queued_job(address: str) -> str:
    async with AsyncClient(address) as client:  # no worker here: the job stays QUEUED
        return (await client.create_prototype_job("tiny", [1], config={"steps": 3})).name


async def test_async_watch_gives_up_with_the_cursor_to_resume_at(api_settings: Settings) -> None:
    api, port = await start_server(api_settings, sample_interval_s=0.2)
    address = f"127.0.0.1:{port}"
    job = await _queued_job(address)
    async with AsyncClient(address, watch_retry=QUICK) as client:
        events = client.watch_job(job)
        first = await anext(events)
        await api.stop(grace=0)  # and it never comes back
        started = time.monotonic()
        with pytest.raises(sdk.ConnectionError) as info:
            await anext(events)
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert "gave up reconnecting the watch after 3 tries" in message, message
    assert f"resume with cursor={first.cursor!r}" in message and first.state == "QUEUED"


def _sync_watch(address: str, job: str, retry: WatchRetry, timeout: float | None, stop) -> float:
    with Client(address, watch_retry=retry) as client:
        events = client.watch_job(job, timeout=timeout)
        assert next(events).state == "QUEUED"
        stop()
        started = time.monotonic()
        with pytest.raises(sdk.ConnectionError) as info:
            next(events)
        assert "service unavailable" in str(info.value)
        return time.monotonic() - started


async def test_sync_watch_resume_can_be_turned_off(api_settings: Settings) -> None:
    api, port = await start_server(api_settings, sample_interval_s=0.2)
    address = f"127.0.0.1:{port}"
    job = await _queued_job(address)
    loop = asyncio.get_running_loop()

    def stop() -> None:
        asyncio.run_coroutine_threadsafe(api.stop(grace=0), loop).result(10)

    spent = await asyncio.to_thread(_sync_watch, address, job, WatchRetry(attempts=0), None, stop)
    assert spent < 1.0  # no reconnection tries at all


async def test_sync_watch_never_retries_past_the_callers_timeout(api_settings: Settings) -> None:
    api, port = await start_server(api_settings, sample_interval_s=0.2)
    address = f"127.0.0.1:{port}"
    job = await _queued_job(address)
    loop = asyncio.get_running_loop()

    def stop() -> None:
        asyncio.run_coroutine_threadsafe(api.stop(grace=0), loop).result(10)

    patient = WatchRetry(attempts=100, backoff_s=0.1, max_backoff_s=0.5, give_up_after_s=600)
    spent = await asyncio.to_thread(_sync_watch, address, job, patient, 1.5, stop)
    assert spent < 1.5  # the default 60 s of retries is cut by timeout=1.5 (from the start)


async def test_errors_other_than_unavailable_and_a_watch_that_never_opened_fail_at_once(
    address: str,
) -> None:
    async with AsyncClient(address) as client:
        started = time.monotonic()
        with pytest.raises(sdk.NotFoundError):
            async for _ in client.watch_job("jobs/0123456789ab"):
                pass
    async with AsyncClient(f"127.0.0.1:{free_port()}") as client:  # nobody listens there
        with pytest.raises(sdk.ConnectionError) as info:
            async for _ in client.watch_job("jobs/0123456789ab"):
                pass
    assert "gave up" not in str(info.value)
    assert time.monotonic() - started < 5  # not the minute of retries a lost watch gets


def test_watch_retry_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="max_backoff_s"):
        WatchRetry(backoff_s=2, max_backoff_s=1)
    with pytest.raises(ValueError, match="attempts"):
        WatchRetry(attempts=-1)
