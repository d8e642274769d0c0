"""Resource names (``protolens.names``): one rule for the SDK and the API."""

from __future__ import annotations

import re

import grpc
import pytest
from protolens import names
from protolens.errors import InvalidArgumentError, from_rpc_error
from protolens.v1 import checks_pb2, checks_pb2_grpc
from protolens.v1 import service_pb2 as pb


@pytest.mark.parametrize(
    ("collection", "given", "expected"),
    [
        (names.JOBS, "abc", "abc"),
        (names.JOBS, "jobs/abc", "abc"),
        (names.CHECKS, "checks/c1", "c1"),
        (names.API_KEYS, "apiKeys/0123", "0123"),
        (names.MODELS, "models/models:/vision/2", "models:/vision/2"),  # a registry reference
    ],
)
def test_ids_and_names_round_trip(collection: names.Collection, given: str, expected: str) -> None:
    assert collection.parse(given) == expected
    assert collection.name(given) == collection.name(expected) == f"{collection.prefix}/{expected}"
    assert collection.id(collection.name(expected)) == expected


@pytest.mark.parametrize(
    ("collection", "given"),
    [(names.JOBS, ""), (names.JOBS, "jobs/"), (names.JOBS, "jobs/a/b"), (names.CHECKS, "x/y")],
)
def test_a_name_that_does_not_fit_says_the_form(collection: names.Collection, given: str) -> None:
    with pytest.raises(names.ResourceNameError) as info:
        collection.parse(given)
    assert str(info.value) == f"expected '{collection.pattern}', got {given!r}"


def test_prototype_names() -> None:
    assert names.prototype_name("abc", 2) == names.prototype_name("jobs/abc", 2)
    assert names.prototype_of(names.prototype_name("abc", 2)) == ("abc", 2)
    for bad in (
        "jobs/abc/prototypes/x",
        "jobs//prototypes/1",
        "jobs/a/images/1",
        "jobs/a/prototypes/²",
    ):
        with pytest.raises(names.ResourceNameError, match=re.escape(names.PROTOTYPE_PATTERN)):
            names.prototype_of(bad)


async def test_every_rpc_that_reads_a_name_answers_a_bad_one_alike(stub, address: str) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        checks = checks_pb2_grpc.CheckServiceStub(channel)
        cases = [
            (stub.GetJob, pb.GetJobRequest(name="jobs/a/b"), "jobs/{job}"),
            (stub.CancelJob, pb.CancelJobRequest(name="jobs/a/b"), "jobs/{job}"),
            (stub.GetPrototype, pb.GetPrototypeRequest(name="jobs/a"), names.PROTOTYPE_PATTERN),
            (checks.GetCheck, checks_pb2.GetCheckRequest(name="checks/"), "checks/{check}"),
            (checks.CancelCheck, checks_pb2.CancelCheckRequest(name="a/b"), "checks/{check}"),
        ]
        for call, request, pattern in cases:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call(request)
            exc = info.value
            assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, call
            assert exc.details() == f"name: expected '{pattern}', got {request.name!r}"
            error = from_rpc_error(exc)  # the SDK reads the ErrorInfo
            assert isinstance(error, InvalidArgumentError)
            assert (error.reason, error.field) == ("INVALID_ARGUMENT", "name")
