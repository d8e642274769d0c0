"""Odd and oversized requests get INVALID_ARGUMENT naming what to fix (real gRPC, real Redis).

Class names that are digits of another script (``²``) or thousands of digits long,
config floats that are infinite or absurd, requests over the size limits (bytes,
classes per target, class references per job, policy bytes, YAML aliases); a
missing check answers CHECK_NOT_FOUND; the SDK and the CLI say so in one line.
"""

from __future__ import annotations

import asyncio
import math

import grpc
import pytest
from protolens import AsyncClient
from protolens import errors as sdk
from protolens.cli import main as cli_main
from protolens.v1 import checks_pb2, checks_pb2_grpc, common_pb2
from protolens.v1 import service_pb2 as pb

S = grpc.StatusCode


def _request(*targets: common_pb2.Target, **config: float) -> pb.CreatePrototypeJobRequest:
    req = pb.CreatePrototypeJobRequest(model="tiny", targets=list(targets))
    req.config.steps = 2
    for key, value in config.items():
        setattr(req.config, key, value)
    return req


def _names(*names: str) -> common_pb2.Target:
    return common_pb2.Target(classes=[common_pb2.ClassRef(name=n) for n in names])


async def _refused(call, request) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(request)
    return info.value


@pytest.mark.parametrize(
    ("name", "reason", "says"),
    [
        ("²", "UNKNOWN_CLASS", "unknown class '²'"),
        ("٣", "UNKNOWN_CLASS", "unknown class"),  # an Arabic-Indic digit
        ("9" * 40, "UNKNOWN_CLASS", "out of range"),
        ("9" * 5000, "INVALID_ARGUMENT", "at most 256"),
    ],
    ids=["superscript", "arabic_digit", "forty_digits", "5000_digits"],
)
async def test_odd_class_names_are_invalid_argument(stub, name: str, reason: str, says: str):
    error = await _refused(stub.CreatePrototypeJob, _request(_names(name)))
    assert error.code() == S.INVALID_ARGUMENT, error
    assert says in error.details() and "targets[0].classes[0]" in error.details()
    info = dict(error.trailing_metadata() or ())
    assert info  # the rich status came back (not a bare INTERNAL)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("hf_penalty", math.inf),
        ("blur_sigma", math.inf),
        ("diversity", math.inf),
        ("bn_prior", 1e308),
        ("lr", math.nan),
        ("hf_penalty", -math.inf),
        ("start_value", math.nan),
    ],
)
async def test_non_finite_and_absurd_floats_are_refused(stub, field: str, value: float) -> None:
    error = await _refused(stub.CreatePrototypeJob, _request(_names("apple"), **{field: value}))
    assert error.code() == S.INVALID_ARGUMENT
    assert error.details().startswith(f"config.{field}:"), error.details()


async def test_size_limits_name_the_setting(api_settings) -> None:
    from protolens.v1 import service_pb2_grpc
    from protolens_server.api.server import start_server

    settings = api_settings.model_copy(
        update={
            "max_targets_per_job": 1000,
            "max_class_refs_per_job": 4096,
            "max_request_bytes": 200_000,
        }
    )
    server, port = await start_server(settings, sample_interval_s=0.2)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = service_pb2_grpc.ProtolensServiceStub(channel)
            many = _names(*(["apple", "banana"] * 9))  # 18 > max_classes_per_target (16)
            error = await _refused(stub.CreatePrototypeJob, _request(many))
            assert error.code() == S.INVALID_ARGUMENT, error
            assert "targets[0].classes: 18 classes" in error.details()
            assert "max_classes_per_target" in error.details()

            big = _request(_names("apple"))
            big.reference_set = "r" * 200_001
            error = await _refused(stub.CreatePrototypeJob, big)
            assert error.code() == S.INVALID_ARGUMENT and "max_request_bytes" in error.details()

            # The request: 1,000 hybrid targets of ten class names (about 130 KB).
            names = ["apple", "banana", "cherry", "date", "elderberry"] * 2
            request = _request(*(_names(*names) for _ in range(1000)))
            loop = asyncio.get_running_loop()
            started = loop.time()
            error = await _refused(stub.CreatePrototypeJob, request)
            assert error.code() == S.INVALID_ARGUMENT
            assert "10000 class references" in error.details()
            assert "max_class_refs_per_job" in error.details()
            assert loop.time() - started < 5.0  # refused before resolving any class
    finally:
        await server.stop(grace=0)


async def test_check_limits_and_missing_check(address: str) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        checks = checks_pb2_grpc.CheckServiceStub(channel)
        error = await _refused(checks.GetCheck, checks_pb2.GetCheckRequest(name="checks/nope"))
        assert error.code() == S.NOT_FOUND and "check 'nope' not found" in error.details()
        assert b"CHECK_NOT_FOUND" in dict(error.trailing_metadata())["grpc-status-details-bin"]
        big = checks_pb2.StartCheckRequest(model="tiny", policy_yaml="# x\n" * 20_000)
        error = await _refused(checks.StartCheck, big)
        assert error.code() == S.INVALID_ARGUMENT and "max_policy_bytes" in error.details()
        long_name = checks_pb2.StartCheckRequest(model="tiny", classes=["apple", "x" * 5000])
        error = await _refused(checks.StartCheck, long_name)
        assert error.code() == S.INVALID_ARGUMENT and "classes[1]" in error.details()
        bomb = "a: &a [1, 2, 3]\nb: [*a, *a, *a]\n"
        error = await _refused(
            checks.StartCheck, checks_pb2.StartCheckRequest(model="tiny", policy_yaml=bomb)
        )
        assert error.code() == S.INVALID_ARGUMENT and "aliases" in error.details()
    async with AsyncClient(address) as client:
        with pytest.raises(sdk.NotFoundError) as info:
            await client.get_check("checks/nope")
        assert info.value.reason == "CHECK_NOT_FOUND"


async def test_sdk_and_cli_say_one_line(address: str, capsys: pytest.CaptureFixture) -> None:
    async with AsyncClient(address) as client:
        for bad in ("²", "9" * 5000):
            with pytest.raises(sdk.InvalidArgumentError) as info:
                await client.create_prototype_job("tiny", [bad], config={"steps": 2})
            assert info.value.field == "targets[0].classes[0]", info.value
        with pytest.raises(sdk.InvalidArgumentError) as info:
            await client.create_prototype_job("tiny", [2**40], config={"steps": 2})
        assert "out of range" in info.value.message
        with pytest.raises(sdk.InvalidArgumentError) as info:
            await client.create_prototype_job("tiny", [1], config={"hf_penalty": math.inf})
        assert info.value.field == "config.hf_penalty"
    for target, says in (("²", "UNKNOWN_CLASS: targets[0].classes[0]"),
                         ("9" * 5000, "INVALID_ARGUMENT: targets[0].classes[0]")):  # fmt: skip
        argv = ["submit", "--address", address, "--model", "tiny", "--target", target]
        code = await asyncio.to_thread(cli_main, argv)
        err = capsys.readouterr().err
        assert code == 1 and err.startswith(f"protolens: {says}") and err.count("\n") == 1, err
    argv = ["submit", "--address", address, "--model", "tiny", "--target", "1"]
    code = await asyncio.to_thread(cli_main, [*argv, "--config", "blur_sigma=Infinity"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("protolens: INVALID_ARGUMENT: config.blur_sigma"), err
