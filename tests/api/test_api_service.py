"""The service surface over a real aio server: health, reflection, limits, jobs, watch, metrics."""

from __future__ import annotations

import asyncio
import dataclasses
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from protolens import AsyncClient
from protolens import errors as sdk
from protolens.v1 import common_pb2, service_pb2_grpc
from protolens.v1 import service_pb2 as pb
from protolens_server import metrics
from protolens_server.api.server import SERVICE_NAME

SERVICES = (SERVICE_NAME, "protolens.v1.CheckService", "protolens.v1.AdminService")


async def test_health_serves_overall_and_service(address: str) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", *SERVICES):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_reflection_lists_and_describes_the_service(address: str) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE_NAME),
        ]
        replies = [r async for r in stub.ServerReflectionInfo(iter(requests))]
    names = {s.name for s in replies[0].list_services_response.service}
    assert {*SERVICES, "grpc.health.v1.Health"} <= names
    assert replies[1].file_descriptor_response.file_descriptor_proto


async def test_message_size_limit_is_enforced_and_server_keeps_serving(address: str) -> None:
    # api_settings caps messages at 256 KiB; a bigger request is refused by gRPC itself.
    async with grpc.aio.insecure_channel(
        address, options=[("grpc.max_send_message_length", 8 * 1024 * 1024)]
    ) as channel:
        stub = service_pb2_grpc.ProtolensServiceStub(channel)
        big = pb.CreatePrototypeJobRequest(model="tiny", request_id="x" * (300 * 1024))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.CreatePrototypeJob(big)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        reply = await stub.ListModels(pb.ListModelsRequest())
        assert [m.name for m in reply.models] == ["models/tiny"]


async def test_models_list_and_get(address: str) -> None:
    async with AsyncClient(address) as client:
        (listed,) = await client.list_models()
        model = await client.get_model("models/tiny")
    assert dataclasses.replace(listed, layers=model.layers) == model  # layers: GetModel only
    assert [(layer.name, layer.shape) for layer in model.layers] == [("logits", (5,))]
    assert model.id == "tiny" and model.num_classes == 5 and model.class_names[2] == "cherry"
    assert (model.input_spec.height, model.input_spec.width) == (16, 16)
    assert model.format == "torchscript" and len(model.digest) == 64


async def test_create_get_list_cancel_and_watch(address: str) -> None:
    async with AsyncClient(address) as client:
        job = await client.create_prototype_job(
            "tiny",
            ["banana", ("apple", "date")],
            prototypes_per_target=2,
            config={"steps": 7, "lr": 0.1},
            seed=5,
            priority="high",
        )
        assert job.outcome == "queued" and job.state == "QUEUED"
        assert [t.kind for t in job.targets] == ["prototype", "hybrid"]
        assert job.targets[1].class_names == ("apple", "date")
        assert job.config["steps"] == 7 and job.config["lr"] == 0.1
        assert job.config["transforms"] == "medium"  # unset fields: engine defaults
        assert (job.prototypes_per_target, job.seed, job.priority) == (2, 5, "high")
        assert job.progress.total_steps == 7 and job.create_time is not None

        assert await client.get_job(job.id) == await client.get_job(job.name)
        other = await client.create_prototype_job("tiny", [0], config={"steps": 3})
        page, token = await client.list_jobs(page_size=1)
        assert [j.id for j in page] == [other.id] and token
        page2, token2 = await client.list_jobs(page_size=1, page_token=token)
        assert ([j.id for j in page2] == [job.id] and token2 == "") or page2[0].id == job.id

        events = client.watch_job(job)
        first = await anext(events)
        assert first.state == "QUEUED" and first.cursor
        cancelled = await client.cancel_job(job)
        assert cancelled.state == "CANCELLED" and cancelled.error.reason == "CANCELLED"
        rest = [e async for e in events]
        assert rest[-1].state == "CANCELLED"
        # Resume after the first event: the same tail again.
        resumed = [e async for e in client.watch_job(job, cursor=first.cursor)]
        assert [e.state for e in resumed] == [e.state for e in rest]
        with pytest.raises(sdk.JobFailedError) as info:
            await client.wait(job, timeout=10)
        assert info.value.job.state == "CANCELLED"


async def test_request_id_replays_and_identical_requests_join(address: str) -> None:
    async with AsyncClient(address) as client:
        first = await client.create_prototype_job("tiny", [3], config={"steps": 9}, request_id="r1")
        again = await client.create_prototype_job("tiny", [3], config={"steps": 9}, request_id="r1")
        assert (again.id, again.outcome) == (first.id, "idempotent_replay")
        joined = await client.create_prototype_job("tiny", [3], config={"steps": 9})
        assert (joined.id, joined.outcome) == (first.id, "dedup_join")
        different = await client.create_prototype_job("tiny", [3], config={"steps": 9}, seed=1)
        assert different.id != first.id and different.outcome == "queued"


async def test_concurrent_identical_requests_make_one_job(address: str) -> None:
    async with AsyncClient(address) as client:
        jobs = await asyncio.gather(
            *(client.create_prototype_job("tiny", [4], config={"steps": 11}) for _ in range(8))
        )
    assert len({j.id for j in jobs}) == 1
    assert sorted(j.outcome for j in jobs) == ["dedup_join"] * 7 + ["queued"]


def _sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


async def test_rpc_metrics_move_and_endpoint_answers(address: str) -> None:
    ok = _sample("protolens_rpc_requests_total", method="GetModel", code="OK")
    missing = _sample("protolens_rpc_requests_total", method="GetModel", code="NOT_FOUND")
    count = _sample("protolens_rpc_duration_seconds_count", method="GetModel")
    async with AsyncClient(address) as client:
        await client.get_model("tiny")
        with pytest.raises(sdk.NotFoundError):
            await client.get_model("nope")
        await client.create_prototype_job("tiny", [1], config={"steps": 13})
    assert _sample("protolens_rpc_requests_total", method="GetModel", code="OK") == ok + 1
    assert _sample("protolens_rpc_requests_total", method="GetModel", code="NOT_FOUND") == (
        missing + 1
    )
    assert _sample("protolens_rpc_duration_seconds_count", method="GetModel") == count + 2
    await asyncio.sleep(0.5)  # the sampler (0.2 s in tests) refreshes the queue gauges
    assert _sample("protolens_queue_depth", priority="1") >= 1

    port = metrics.serve_metrics(0, addr="127.0.0.1")
    body = await asyncio.to_thread(
        lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    )
    text = body.decode()
    assert 'protolens_rpc_requests_total{code="OK",method="GetModel"}' in text
    assert "protolens_queue_depth" in text


async def test_unknown_enum_values_are_invalid_argument(stub) -> None:
    target = common_pb2.Target(classes=[common_pb2.ClassRef(index=1)])
    for request, field in (
        (pb.CreatePrototypeJobRequest(model="tiny", targets=[target], priority=9), "priority"),
        (
            pb.CreatePrototypeJobRequest(
                model="tiny",
                targets=[common_pb2.Target(classes=[common_pb2.ClassRef(index=1)], kind=7)],
            ),
            "targets[0].kind",
        ),
        (
            pb.CreatePrototypeJobRequest(
                model="tiny", targets=[common_pb2.Target(classes=[common_pb2.ClassRef()])]
            ),
            "targets[0].classes[0]",
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.CreatePrototypeJob(request)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in info.value.details()


async def test_extra_service_hook_shares_health_and_the_error_table(api_settings) -> None:
    from protolens_server.api.server import start_server
    from protolens_server.errors import JobNotFound

    async def lookup(request: bytes, context) -> bytes:
        raise JobNotFound("no such thing")

    def hook(server, queue, catalog, settings) -> str:
        handler = grpc.method_handlers_generic_handler(
            "test.Extra", {"Lookup": grpc.unary_unary_rpc_method_handler(lookup)}
        )
        server.add_generic_rpc_handlers((handler,))
        return "test.Extra"

    server, port = await start_server(api_settings, extra_services=[hook])
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="test.Extra")
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await channel.unary_unary("/test.Extra/Lookup")(b"")
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await server.stop(grace=0)
