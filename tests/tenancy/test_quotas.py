"""Per-tenant quotas over real gRPC with real keys: RESOURCE_EXHAUSTED with a retry hint."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from protolens.v1 import checks_pb2, checks_pb2_grpc, common_pb2, service_pb2_grpc
from protolens.v1 import service_pb2 as pb
from protolens_server.api.auth import ApiKeyStore
from protolens_server.api.server import start_server
from protolens_server.config import Settings
from protolens_server.errors import InvalidArgument
from protolens_server.quotas import load_quotas
from rpc_details import status_details
from tenancy_support import bearer

TENANTS = """
defaults:
  max_queued_jobs: 50
  requests_per_second: 0
tenants:
  alpha:
    max_queued_jobs: 2
    max_target_steps: 12
  beta:
    requests_per_second: 5
"""


@pytest.fixture
async def quota_api(keyed_settings: Settings, tmp_path: Path) -> AsyncIterator[tuple]:
    path = tmp_path / "tenants.yaml"
    path.write_text(TENANTS)
    settings = keyed_settings.model_copy(update={"tenants_file": path})
    api, port = await start_server(settings, sample_interval_s=0.2)
    try:
        store = ApiKeyStore(api.queue.redis, api.queue.keys)
        keys = {t: (await store.create(t))[1] for t in ("alpha", "beta")}
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield service_pb2_grpc.ProtolensServiceStub(channel), keys
    finally:
        await api.stop(grace=0)


def _request(seed: int, n_targets: int = 1, steps: int = 2) -> pb.CreatePrototypeJobRequest:
    req = pb.CreatePrototypeJobRequest(
        model="tiny",
        targets=[
            common_pb2.Target(classes=[common_pb2.ClassRef(index=i)]) for i in range(n_targets)
        ],
        seed=seed,
    )
    req.config.steps = steps
    return req


async def test_queued_jobs_quota_is_per_tenant(quota_api) -> None:
    stub, keys = quota_api
    alpha, beta = bearer(keys["alpha"]), bearer(keys["beta"])
    for seed in range(2):
        await stub.CreatePrototypeJob(_request(seed), metadata=alpha)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.CreatePrototypeJob(_request(2), metadata=alpha)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = status_details(info.value)
    assert details["ErrorInfo"].reason == "QUOTA_EXCEEDED"
    assert details["ErrorInfo"].metadata["quota"] == "max_queued_jobs"
    assert details["RetryInfo"].retry_delay.seconds >= 1
    # beta is not affected by alpha's quota
    for seed in range(3):
        await stub.CreatePrototypeJob(_request(100 + seed), metadata=beta)
        await asyncio.sleep(0.25)  # stay under beta's 5 requests per second


async def test_job_size_quota_says_so_without_a_retry_hint(quota_api) -> None:
    stub, keys = quota_api
    alpha = bearer(keys["alpha"])
    await stub.CreatePrototypeJob(_request(1, n_targets=2, steps=6), metadata=alpha)  # 12: ok
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.CreatePrototypeJob(_request(2, n_targets=3, steps=6), metadata=alpha)  # 18
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_target_steps" in info.value.details()
    details = status_details(info.value)
    assert details["ErrorInfo"].metadata["quota"] == "max_target_steps"
    assert "RetryInfo" not in details


async def test_a_job_is_capped_by_default_and_told_what_fits(keyed_settings: Settings) -> None:
    """Without a tenants file, one request could ask a worker for 1,000 targets x 64
    prototypes x 10,000 steps (the other limits' maxima): it was QUEUED. The built-in
    max_target_steps admits the largest job of default configs and refuses that one,
    saying what would fit."""
    settings = keyed_settings.model_copy(update={"max_steps": 10_000, "max_targets_per_job": 1000})
    api, port = await start_server(settings, sample_interval_s=0.2)
    try:
        key = (await ApiKeyStore(api.queue.redis, api.queue.keys).create("alpha"))[1]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = service_pb2_grpc.ProtolensServiceStub(channel)
            fits = _request(1, n_targets=5, steps=0)  # 1,000 targets at the default budget
            fits.targets.extend(fits.targets[i % 5] for i in range(995))
            assert (await stub.CreatePrototypeJob(fits, metadata=bearer(key))).job.name
            huge = _request(2, n_targets=5, steps=10_000)
            huge.targets.extend(huge.targets[i % 5] for i in range(995))
            huge.prototypes_per_target = 64
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.CreatePrototypeJob(huge, metadata=bearer(key))
    finally:
        await api.stop(grace=0)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    message = info.value.details()
    assert message.startswith(
        "1000 targets x 64 prototypes x 10000 steps (config.steps) = 640,000,000 target-steps;"
        " your quota max_target_steps is 256,000: split it into jobs of at most 25 targets x"
        " prototypes each or lower config.steps to 4 or less"
    ), message
    assert status_details(info.value)["ErrorInfo"].metadata["limit"] == "256000"


async def test_running_checks_are_capped_per_tenant(keyed_settings: Settings) -> None:
    """Each running registry check is a task of the API polling its jobs every 0.2 s: one
    tenant's 300 checks (300 StartCheck calls; no worker free) made another tenant's GetJob
    p50 143 ms, p99 1.3 s (2.8 ms without). A tenant's checks running on one API process
    are capped (max_checks_per_tenant): the next is RESOURCE_EXHAUSTED naming the limit,
    another tenant is not affected, and an ended check frees its place."""
    settings = keyed_settings.model_copy(update={"max_checks_per_tenant": 3})
    api, port = await start_server(settings, sample_interval_s=0.2)
    try:
        store = ApiKeyStore(api.queue.redis, api.queue.keys)
        keys = {t: (await store.create(t))[1] for t in ("alpha", "beta")}
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = checks_pb2_grpc.CheckServiceStub(channel)

            def start(seed: int) -> checks_pb2.StartCheckRequest:
                request = checks_pb2.StartCheckRequest(model="tiny", classes=["apple"], seed=seed)
                request.config.steps = 3
                return request

            alpha, beta = bearer(keys["alpha"]), bearer(keys["beta"])
            names = [
                (await stub.StartCheck(start(seed), metadata=alpha)).check.name for seed in range(3)
            ]  # no worker: they keep running
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.StartCheck(start(3), metadata=alpha)
            assert (await stub.StartCheck(start(3), metadata=beta)).check.name
            await stub.CancelCheck(checks_pb2.CancelCheckRequest(name=names[0]), metadata=alpha)
            for _ in range(100):  # its driver notices the cancel within a poll
                try:
                    await stub.StartCheck(start(4), metadata=alpha)
                    break
                except grpc.aio.AioRpcError:
                    await asyncio.sleep(0.1)
            else:
                raise AssertionError("a cancelled check never freed its place")
    finally:
        await api.stop(grace=0)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert info.value.details().startswith(
        "you have 3 checks running on this server (limit max_checks_per_tenant=3)"
    ), info.value.details()
    details = status_details(info.value)
    assert details["ErrorInfo"].metadata["quota"] == "max_checks_per_tenant"
    assert "RetryInfo" in details


async def test_requests_per_second_quota_then_recovery(quota_api) -> None:
    """beta: 5 requests/s. A burst of one second's worth passes, then the steady rate;
    the retry hint is the time until the next call is admitted, and it is exact."""
    stub, keys = quota_api
    beta, alpha = bearer(keys["beta"]), bearer(keys["alpha"])
    for _ in range(12):  # alpha has no rate quota
        await stub.ListJobs(pb.ListJobsRequest(), metadata=alpha)
    codes = []
    start = time.monotonic()
    for _ in range(12):
        try:
            await stub.ListJobs(pb.ListJobsRequest(), metadata=beta)
            codes.append(grpc.StatusCode.OK)
        except grpc.aio.AioRpcError as exc:
            codes.append(exc.code())
            last = exc
    elapsed = time.monotonic() - start
    assert codes[:5] == [grpc.StatusCode.OK] * 5  # the burst
    # then at most the steady rate (one per 0.2 s) over the time the loop took
    assert codes.count(grpc.StatusCode.OK) <= 5 + int(elapsed / 0.2) + 1
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
    hint = status_details(last)["RetryInfo"].retry_delay
    delay = hint.seconds + hint.nanos / 1e9
    assert 0 < delay <= 0.2
    await asyncio.sleep(delay + 0.01)  # honouring the hint is enough: no full second
    await stub.ListJobs(pb.ListJobsRequest(), metadata=beta)
    with pytest.raises(grpc.aio.AioRpcError) as again:  # ... for exactly one call
        await stub.ListJobs(pb.ListJobsRequest(), metadata=beta)
    assert again.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_tenants_file_errors_name_the_file_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("defaults:\n  max_queued_jobs: -1\n")
    with pytest.raises(InvalidArgument, match="max_queued_jobs"):
        load_quotas(bad)
    bad.write_text("tenants:\n  a:\n    max_queud_jobs: 3\n")
    with pytest.raises(InvalidArgument, match="max_queud_jobs"):
        load_quotas(bad)
    with pytest.raises(InvalidArgument, match="cannot read"):
        load_quotas(tmp_path / "missing.yaml")
    # a tenant name no caller can have (upper case, a space, a trailing newline) was
    # accepted and silently never applied: the typo'd tenant ran on the defaults
    for name in ("Vision-Team", "vision team", '"vision\\n"', "-x"):
        bad.write_text(f"tenants:\n  {name}:\n    max_queued_jobs: 3\n")
        with pytest.raises(InvalidArgument, match="is not a tenant name") as info:
            load_quotas(bad)
        assert str(bad) in str(info.value) and "a-z 0-9" in str(info.value)
    quotas = load_quotas(None)
    assert quotas.for_tenant("anyone").max_queued_jobs == 10_000
