"""Every row of the error table, and each bad input over real gRPC: code, reason, field."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from protolens import AsyncClient, Target
from protolens import errors as sdk
from protolens.v1 import checks_pb2, checks_pb2_grpc, common_pb2, service_pb2_grpc
from protolens.v1 import service_pb2 as pb
from protolens_server import errors as domain
from protolens_server.api.errors import ERROR_TABLE, INTERNAL_MESSAGE, to_rpc_error
from protolens_server.api.server import start_server
from protolens_server.config import Settings

S = grpc.StatusCode
# (error, expected code, expected reason): one per table row.
TABLE_CASES = [
    (domain.InvalidArgument("config.lr", "bad"), S.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
    (domain.UnknownClass("targets[0]", "no"), S.INVALID_ARGUMENT, "UNKNOWN_CLASS"),
    (domain.ReferenceSetError("reference_set", "x"), S.INVALID_ARGUMENT, "BAD_REFERENCE_SET"),
    (domain.NotFound("gone"), S.NOT_FOUND, "NOT_FOUND"),
    (domain.ModelNotFound("no model"), S.NOT_FOUND, "MODEL_NOT_FOUND"),
    (domain.JobNotFound("no job"), S.NOT_FOUND, "JOB_NOT_FOUND"),
    (domain.CheckNotFound("no check"), S.NOT_FOUND, "CHECK_NOT_FOUND"),
    (domain.InvalidModel("broken"), S.FAILED_PRECONDITION, "INVALID_MODEL"),
    (domain.AlreadyExists("used", job="j1"), S.ALREADY_EXISTS, "ALREADY_EXISTS"),
    (domain.QueueFull("full", retry_after_s=2.5), S.RESOURCE_EXHAUSTED, "QUEUE_FULL"),
    (domain.FailedPrecondition("done"), S.FAILED_PRECONDITION, "FAILED_PRECONDITION"),
    (domain.Unauthenticated("no key"), S.UNAUTHENTICATED, "UNAUTHENTICATED"),
    (
        domain.QuotaExceeded("slow down", quota="requests_per_second", limit=5),
        S.RESOURCE_EXHAUSTED,
        "QUOTA_EXCEEDED",
    ),
    (domain.PermissionDenied("not admin"), S.PERMISSION_DENIED, "PERMISSION_DENIED"),
    (domain.ServerBusy("overloaded", limit="16"), S.RESOURCE_EXHAUSTED, "SERVER_BUSY"),
    (domain.GenerationCancelled("stop"), S.CANCELLED, "CANCELLED"),
    (domain.GenerationDiverged("nan"), S.ABORTED, "DIVERGED"),
    (domain.ProtolensError("odd"), S.INTERNAL, "PROTOLENS_ERROR"),
]


def test_table_cases_cover_every_domain_row() -> None:
    covered = {type(e) for e, _, _ in TABLE_CASES}
    domain_rows = {c for c in ERROR_TABLE if issubclass(c, domain.ProtolensError)}
    assert covered == domain_rows


@pytest.mark.parametrize(("error", "code", "reason"), TABLE_CASES, ids=lambda v: type(v).__name__)
def test_error_table_row(error: domain.ProtolensError, code: grpc.StatusCode, reason: str) -> None:
    mapped = to_rpc_error(error)
    assert (mapped.code, mapped.reason) == (code, reason)
    assert mapped.message == error.message
    assert mapped.metadata == error.metadata
    status = mapped.to_status()
    assert status.code == code


def test_unknown_error_is_internal_and_hides_details(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        mapped = to_rpc_error(KeyError("secret internals"), "GetJob")
    assert (mapped.code, mapped.reason, mapped.message) == (
        grpc.StatusCode.INTERNAL,
        "INTERNAL",
        INTERNAL_MESSAGE,
    )
    assert "secret" not in mapped.message
    assert any(r.exc_info for r in caplog.records), "traceback must be logged"


# --- the same rows, reached through real RPCs --------------------------------------


async def _call_error(coro) -> sdk.ApiError:
    with pytest.raises(sdk.ProtolensError) as info:
        await coro
    return info.value


IA, REF = "INVALID_ARGUMENT", "BAD_REFERENCE_SET"
RPC_CASES = [
    # (id, create kwargs, reason, field)
    ("bad_config", {"config": {"steps": -1}}, IA, "config.steps"),
    ("too_many_steps", {"config": {"steps": 501}}, IA, "config.steps"),
    ("bad_lr", {"config": {"lr": -1.0}}, IA, "config.lr"),
    ("bad_transforms", {"config": {"transforms": "huge"}}, IA, "config.transforms"),
    ("bad_copies", {"config": {"transform_copies": 0}}, IA, "config.transform_copies"),
    # 4 copies x 256 steps (the default max_steps) = 1024 passes > this server's 500
    ("copies_over_budget", {"config": {"transform_copies": 4}}, IA, "config.transform_copies"),
    ("class_out_of_range", {"targets": [5]}, "UNKNOWN_CLASS", "targets[0].classes[0]"),
    ("unknown_class_name", {"targets": [1, "durian"]}, "UNKNOWN_CLASS", "targets[1].classes[0]"),
    ("no_targets", {"targets": []}, IA, "targets"),
    ("too_many_targets", {"targets": [0, 1, 2, 3, 4]}, IA, "targets"),
    ("hybrid_of_one", {"targets": [Target((1,), "hybrid")]}, IA, "targets[0]"),
    ("too_many_prototypes", {"prototypes_per_target": 65}, IA, "config.prototypes"),
    ("negative_seed", {"seed": -1}, IA, "seed"),
    ("long_request_id", {"request_id": "r" * 129}, IA, "request_id"),
    ("unknown_reference_set", {"reference_set": "nope"}, REF, "reference_set"),
    ("reference_set_as_path", {"reference_set": "../etc"}, REF, "reference_set"),
    ("unusable_reference_set", {"reference_set": "empty"}, REF, "reference_set"),
    ("unknown_model", {"model": "nope"}, "MODEL_NOT_FOUND", ""),
    ("model_as_path", {"model": "/etc/passwd"}, IA, "model"),
]


@pytest.mark.parametrize(
    ("kwargs", "reason", "field"), [c[1:] for c in RPC_CASES], ids=[c[0] for c in RPC_CASES]
)
async def test_bad_create_request(address: str, kwargs: dict, reason: str, field: str) -> None:
    request = {"model": "tiny", "targets": [1], **kwargs}
    expected = sdk.NotFoundError if reason.endswith("NOT_FOUND") else sdk.InvalidArgumentError
    async with AsyncClient(address) as client:
        error = await _call_error(client.create_prototype_job(**request))
        assert type(error) is expected, error
        assert (error.reason, error.field) == (reason, field), error
        assert error.message and "Traceback" not in error.message and "/tmp" not in error.message
        # ... and the server keeps serving.
        job = await client.create_prototype_job("tiny", [1], config={"steps": 3})
        assert job.state == "QUEUED"


async def test_job_not_found(address: str) -> None:
    async with AsyncClient(address) as client:
        for call in (client.get_job, client.cancel_job, client.wait):
            error = await _call_error(call("jobs/0123456789ab"))
            assert isinstance(error, sdk.NotFoundError) and error.reason == "JOB_NOT_FOUND"
        error = await _call_error(client.get_prototype("0123456789ab", 0))
        assert error.reason == "JOB_NOT_FOUND"


async def test_malformed_names_are_invalid_argument(stub) -> None:
    for call, request in (
        (stub.GetJob, pb.GetJobRequest(name="jobs/a/b")),
        (stub.GetPrototype, pb.GetPrototypeRequest(name="jobs/a/images/x")),
        (stub.GetModel, pb.GetModelRequest(name="")),
        # a digit str.isdigit() admits and int() refuses (the fuzz suite found it INTERNAL)
        (stub.ListModels, pb.ListModelsRequest(page_token="\u00b9")),
        (stub.ListModels, pb.ListModelsRequest(page_token="x1")),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(request)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_cancel_finished_job_is_failed_precondition(address: str) -> None:
    async with AsyncClient(address) as client:
        job = await client.create_prototype_job("tiny", [2], config={"steps": 3})
        assert (await client.cancel_job(job)).state == "CANCELLED"
        error = await _call_error(client.cancel_job(job))
        assert isinstance(error, sdk.FailedPreconditionError)
        assert error.reason == "FAILED_PRECONDITION"
        # A prototype of a job that never succeeded: FAILED_PRECONDITION too.
        error = await _call_error(client.get_prototype(job, 0))
        assert isinstance(error, sdk.FailedPreconditionError)


async def test_queue_full_is_resource_exhausted_with_retry_hint(api_settings: Settings) -> None:
    settings = api_settings.model_copy(update={"max_queued_jobs": 1})
    server, port = await start_server(settings)
    try:
        async with AsyncClient(f"127.0.0.1:{port}") as client:
            await client.create_prototype_job("tiny", [1], config={"steps": 3})
            error = await _call_error(client.create_prototype_job("tiny", [2], config={"steps": 3}))
            assert isinstance(error, sdk.ResourceExhaustedError)
            assert error.reason == "QUEUE_FULL" and error.retry_after and error.retry_after >= 1
        # The rich status carries RetryInfo as well (raw channel, no SDK).
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = service_pb2_grpc.ProtolensServiceStub(channel).CreatePrototypeJob(
                pb.CreatePrototypeJobRequest(
                    model="tiny",
                    targets=[common_pb2.Target(classes=[common_pb2.ClassRef(index=3)])],
                )
            )
            with pytest.raises(grpc.aio.AioRpcError):
                await call
            details = await _rich_details(call)
            kinds = {d.DESCRIPTOR.full_name for d in details}
            assert {"google.rpc.ErrorInfo", "google.rpc.RetryInfo"} <= kinds
    finally:
        await server.stop(grace=0)


async def _rich_details(call) -> list:
    trailing = await call.trailing_metadata()
    raw = dict(trailing)["grpc-status-details-bin"]
    from google.rpc import status_pb2

    status = status_pb2.Status.FromString(raw)
    out = []
    for any_detail in status.details:
        for cls in (error_details_pb2.ErrorInfo, error_details_pb2.RetryInfo):
            msg = cls()
            if any_detail.Unpack(msg):
                out.append(msg)
                if isinstance(msg, error_details_pb2.ErrorInfo):
                    assert msg.domain == "protolens"
    return out


async def test_broken_registered_model_is_failed_precondition(
    api_settings: Settings, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    store.mkdir()
    (store / "broken.pt").write_bytes(b"this is not a TorchScript archive")
    settings = api_settings.model_copy(update={"model_store": store})
    server, port = await start_server(settings)
    try:
        async with AsyncClient(f"127.0.0.1:{port}") as client:
            error = await _call_error(client.create_prototype_job("broken", [0]))
            assert isinstance(error, sdk.FailedPreconditionError), error
            assert error.reason == "INVALID_MODEL"
            assert "not a TorchScript file" in error.message
            # GetModel and ListModels answer: the model is listed as UNUSABLE, with why
            model = await client.get_model("broken")
            assert model.state == "UNUSABLE" and "not a TorchScript file" in model.unusable_reason
            assert [m.state for m in await client.list_models()] == ["UNUSABLE"]
    finally:
        await server.stop(grace=0)


async def test_unusable_models_name_their_file_relative_to_the_store(
    api_settings: Settings, tiny_store: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No tenant reads the server's store path: not in ListModels/GetModel (reason, source),
    nor in the errors of jobs and checks on an UNUSABLE model; the operator's log has it."""
    store = tmp_path / "secret-store-location"
    store.mkdir()
    (store / "tiny.pt").write_bytes((tiny_store / "tiny.pt").read_bytes())
    (store / "broken.pt").write_bytes(b"this is not a TorchScript archive")
    (store / "twofiles" / "1").mkdir(parents=True)
    for f in ("a.pt", "b.pt"):
        (store / "twofiles" / "1" / f).write_bytes(b"x")
    settings = api_settings.model_copy(update={"model_store": store, "model_inspect_wait_s": 30})
    server, port = await start_server(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = service_pb2_grpc.ProtolensServiceStub(channel)
            checks = checks_pb2_grpc.CheckServiceStub(channel)
            listed = {m.name: m for m in (await stub.ListModels(pb.ListModelsRequest())).models}
            got = (await stub.GetModel(pb.GetModelRequest(name="models/broken"))).model
            texts = [got.source, got.unusable_reason]
            texts += [m.source for m in listed.values()]
            texts += [m.unusable_reason for m in listed.values()]
            assert got.unusable_reason == "broken.pt: not a TorchScript file", got
            assert got.source == "file:broken.pt"
            assert "twofiles/1/" in listed["models/twofiles@1"].unusable_reason
            target = common_pb2.Target(classes=[common_pb2.ClassRef(index=0)])
            for call in (
                stub.CreatePrototypeJob(
                    pb.CreatePrototypeJobRequest(model="broken", targets=[target])
                ),
                checks.StartCheck(checks_pb2.StartCheckRequest(model="broken", classes=["0"])),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await call
                assert info.value.code() == S.FAILED_PRECONDITION, info.value.details()
                assert "broken.pt: not a TorchScript file" in info.value.details()
                texts.append(info.value.details())
    finally:
        await server.stop(grace=0)
    leaked = [t for t in texts if str(tmp_path) in t or "secret-store-location" in t]
    assert not leaked, leaked
    logged = [getattr(r, "reason", "") for r in caplog.records if r.msg == "models.unusable"]
    assert any(str(store / "broken.pt") in r for r in logged), logged  # the operator's log


async def test_unexpected_error_is_internal_and_server_keeps_serving(
    api_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    calls = {"n": 0}

    def flaky_tenant(context) -> str:  # the auth seam failing unexpectedly, once
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyError("secret internals")
        return "default"

    server, port = await start_server(api_settings, tenant_resolver=flaky_tenant)
    try:
        async with AsyncClient(f"127.0.0.1:{port}") as client:
            with caplog.at_level(logging.ERROR):
                error = await _call_error(client.list_models())
            assert isinstance(error, sdk.InternalError)
            assert (error.reason, error.message) == ("INTERNAL", INTERNAL_MESSAGE)
            assert "secret" not in str(error)
            assert any("secret internals" in str(r.exc_info) for r in caplog.records)
            assert [m.id for m in await client.list_models()] == ["tiny"]
    finally:
        await server.stop(grace=0)


async def test_redis_down_is_unavailable_and_health_follows(
    api_settings: Settings, redis_server_factory
) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    redis = redis_server_factory()
    settings = api_settings.model_copy(update={"redis_url": redis.url})
    server, port = await start_server(settings, sample_interval_s=0.1)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            redis.stop("kill")
            async with AsyncClient(f"127.0.0.1:{port}", timeout=10) as client:
                error = await _call_error(client.get_job("0123456789ab"))
            assert isinstance(error, sdk.ConnectionError)
            assert error.reason == "BACKEND_UNAVAILABLE"
            for _ in range(50):
                reply = await health.Check(health_pb2.HealthCheckRequest())
                if reply.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                    break
                await asyncio.sleep(0.1)
            assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        await server.stop(grace=0)
