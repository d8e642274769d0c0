"""What a caller sends cannot name files or exceed the limits (real gRPC, real keys).

The loaders' own guarantees (.mar handlers never run, weights_only state dicts)
are tested in tests/models; here: the API refuses paths for models and
reference sets, and every caller-sized field has a limit with a clear answer.
"""

from __future__ import annotations

import grpc
from protolens.v1 import common_pb2
from protolens.v1 import service_pb2 as pb
from tenancy_support import Keyed

S = grpc.StatusCode


def _request(**fields) -> pb.CreatePrototypeJobRequest:
    req = pb.CreatePrototypeJobRequest(
        model=fields.pop("model", "tiny"),
        targets=fields.pop("targets", [common_pb2.Target(classes=[common_pb2.ClassRef(index=1)])]),
        **fields,
    )
    req.config.steps = 2
    return req


async def _refused(keyed: Keyed, request, tenant: str = "alpha") -> grpc.aio.AioRpcError:
    try:
        await keyed.jobs.CreatePrototypeJob(request, metadata=keyed.md(tenant))
    except grpc.aio.AioRpcError as exc:
        return exc
    raise AssertionError(f"accepted: {request}")


async def test_models_and_reference_sets_only_by_registered_name(keyed: Keyed, tiny_store) -> None:
    for model in (
        str(tiny_store / "tiny.pt"),
        "../tiny",
        "tiny.pt",
        "models/../../etc/passwd",
        "/etc/passwd",
        "file:///etc/passwd",
        "models:/tiny/1",
    ):
        exc = await _refused(keyed, _request(model=model))
        assert exc.code() in (S.NOT_FOUND, S.INVALID_ARGUMENT), (model, exc.code())
    for ref in ("../refs", "/etc", "empty/../../x", str(tiny_store)):
        exc = await _refused(keyed, _request(reference_set=ref))
        assert exc.code() in (S.NOT_FOUND, S.INVALID_ARGUMENT), (ref, exc.code())


async def test_every_caller_sized_field_has_a_limit(keyed: Keyed) -> None:
    many = [common_pb2.Target(classes=[common_pb2.ClassRef(index=i % 5)]) for i in range(5)]
    cases = [
        (_request(targets=many), S.INVALID_ARGUMENT, "targets"),  # max_targets_per_job = 4
        (_request(request_id="r" * 300), S.INVALID_ARGUMENT, "request_id"),
        (_request(prototypes_per_target=10_000), S.INVALID_ARGUMENT, "prototypes"),
        (_request(model="m" * 5000), S.INVALID_ARGUMENT, "model"),
    ]
    for request, code, field in cases:
        exc = await _refused(keyed, request)
        assert exc.code() == code, (field, exc.code(), exc.details())
        assert field in exc.details()
    too_many_steps = _request()
    too_many_steps.config.steps = 10_000  # max_steps = 500
    exc = await _refused(keyed, too_many_steps)
    assert exc.code() == S.INVALID_ARGUMENT and "steps" in exc.details()
    bad_lr = _request()
    bad_lr.config.lr = float("nan")
    exc = await _refused(keyed, bad_lr)
    assert exc.code() == S.INVALID_ARGUMENT
    # Larger than max_message_bytes (256 KiB here): refused by gRPC before any code runs.
    huge = _request(request_id="x" * (300 * 1024))
    exc = await _refused(keyed, huge)
    assert exc.code() == S.RESOURCE_EXHAUSTED
    # and the server is fine afterwards
    reply = await keyed.jobs.ListModels(pb.ListModelsRequest(), metadata=keyed.md("alpha"))
    assert len(reply.models) == 1
