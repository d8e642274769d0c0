"""Hostile inputs the fuzzers do not build (real gRPC, real Redis, the tiny model store).

A CreateIsolationJob image is decoded by the API before anything is queued. A PNG whose
header declares 100,000 x 100,000 pixels, a flat 9,000 x 9,000 one (80 KB, 81 megapixels)
and a 1 x 200,000 strip (a few hundred bytes; fitting its 1-pixel side to the model's input
made a 66-megapixel intermediate) are INVALID_ARGUMENT naming the limit, before any pixel
is decoded; odd but sane images (16-bit, CMYK, palette, animated) are accepted.

A WatchJob cursor is a Redis stream id. Special ids (``$``, ``>``, ``-``, ``+``) and
malformed ones were INTERNAL, and ``$`` held open stopped the API process's one shared
event reader: no watch on that process got another live event. Now each is
INVALID_ARGUMENT, and the other watches go on.

A page token of ListJobs/ListChecks is the last id of the previous page. Garbage tokens
were read as a position in the index and answered a page (the first, or none); now
each is INVALID_ARGUMENT saying it is not a token this server issued.
"""

from __future__ import annotations

import asyncio
import io
import struct
import zlib

import grpc
import numpy as np
import pytest
from PIL import Image
from protolens import AsyncClient
from protolens import errors as sdk
from protolens.v1 import checks_pb2, checks_pb2_grpc, common_pb2, job_pb2, units_pb2
from protolens.v1 import service_pb2 as pb

S = grpc.StatusCode


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _flat_png(width: int, height: int, *, rows: int | None = None) -> bytes:
    """A grayscale PNG of zeros, built row by row (never held decoded here); ``rows``
    fewer than ``height`` leaves it truncated (only the header is honest)."""
    pack = zlib.compressobj(9)
    row = b"\x00" * (width + 1)
    body = b"".join(pack.compress(row) for _ in range(height if rows is None else rows))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", body + pack.flush())
        + _chunk(b"IEND", b"")
    )


def _saved(image: Image.Image, fmt: str, **options: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


_NOISE = _saved(
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 20, 3), dtype=np.uint8)),
    "PNG",
)


def _request(image: bytes) -> pb.CreateIsolationJobRequest:
    req = pb.CreateIsolationJobRequest(
        model="tiny", image=image, target=common_pb2.ClassRef(name="apple")
    )
    req.config.steps = 2
    return req


@pytest.mark.parametrize(
    ("image", "says"),
    [
        (_flat_png(100_000, 100_000, rows=1), "declares over 40,000,000 pixels"),
        (_flat_png(9_000, 9_000), "is 9000x9000 pixels; at most 40,000,000"),
        (_flat_png(1, 200_000), "crop it nearer to square"),
        (_NOISE[: len(_NOISE) // 2], "not a readable image"),
        (b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>', "image format"),
    ],
    ids=["declares_10g_pixels", "flat_81_megapixels", "strip_1x200000", "truncated", "svg"],
)
async def test_image_bombs_and_non_images_are_invalid_argument(
    stub, image: bytes, says: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.CreateIsolationJob(_request(image))
    assert info.value.code() == S.INVALID_ARGUMENT, info.value.details()
    assert info.value.details().startswith("image: ") and says in info.value.details()
    assert "\\x" not in info.value.details()  # the bytes are never echoed back
    ok = await stub.CreateIsolationJob(_request(_saved(Image.new("RGB", (20, 20)), "PNG")))
    assert ok.job.name.startswith("jobs/")  # and the server goes on


@pytest.mark.parametrize(
    "image",
    [
        _saved(Image.fromarray(np.arange(400, dtype=np.uint16).reshape(20, 20) * 100), "PNG"),
        _saved(Image.new("CMYK", (20, 20), (0, 255, 0, 0)), "JPEG"),
        _saved(Image.new("P", (20, 20), 3), "PNG"),
        _saved(
            Image.new("RGB", (20, 20)),
            "GIF",
            save_all=True,
            append_images=[Image.new("RGB", (20, 20), (255, 0, 0))] * 4,
        ),
        _saved(Image.new("RGBA", (1, 300)), "PNG"),
    ],
    ids=["16_bit", "cmyk_jpeg", "palette", "animated_gif", "strip_1x300"],
)
async def test_odd_but_sane_images_are_accepted(stub, image: bytes) -> None:
    made = await stub.CreateIsolationJob(_request(image))
    assert made.job.name.startswith("jobs/")


async def _queued_job(stub, seed: int) -> str:
    target = common_pb2.Target(classes=[common_pb2.ClassRef(name="apple")])
    req = pb.CreatePrototypeJobRequest(model="tiny", targets=[target], seed=seed)
    req.config.steps = 2
    return (await stub.CreatePrototypeJob(req)).job.name  # no worker here: it stays QUEUED


@pytest.mark.parametrize(
    "cursor",
    ["$", ">", "-", "+", "abc", "1-99999999999999999999", "18446744073709551616-0", "\0", "1-"],
)
async def test_a_watch_cursor_that_is_no_event_id_is_invalid_argument(stub, cursor: str) -> None:
    job = await _queued_job(stub, seed=1)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in stub.WatchJob(pb.WatchJobRequest(name=job, cursor=cursor), timeout=10):
            pass
    assert info.value.code() == S.INVALID_ARGUMENT, info.value.details()
    assert info.value.details().startswith("cursor: ")


async def test_a_hostile_cursor_leaves_other_watches_their_live_events(stub) -> None:
    hostile_job, job = await _queued_job(stub, seed=2), await _queued_job(stub, seed=3)
    hostile = stub.WatchJob(pb.WatchJobRequest(name=hostile_job, cursor="$"), timeout=20)
    hostile_ended = asyncio.ensure_future(hostile.code())
    await asyncio.sleep(0.5)  # held open (before the fix) while the other watch runs
    watch = stub.WatchJob(pb.WatchJobRequest(name=job), timeout=20)
    first = await anext(aiter(watch))  # a past event: read directly
    assert first.state == job_pb2.JOB_STATE_QUEUED
    await stub.CancelJob(pb.CancelJobRequest(name=job))
    live = await asyncio.wait_for(anext(aiter(watch)), 10)  # a live event: the shared reader
    assert live.state == job_pb2.JOB_STATE_CANCELLED
    assert await asyncio.wait_for(hostile_ended, 10) == S.INVALID_ARGUMENT


GARBAGE_TOKENS = [
    "abc",
    "zzzz",
    "0" * 23,
    "0" * 25,
    "G" * 24,
    "0123456789ABCDEF01234567",
    "(",
    "+",
    "-",
    "\0",
]


@pytest.mark.parametrize("token", GARBAGE_TOKENS)
async def test_a_page_token_this_server_never_issued_is_invalid_argument(
    stub, address: str, token: str
) -> None:
    for seed in (11, 12, 13):
        await _queued_job(stub, seed)
    first = await stub.ListJobs(pb.ListJobsRequest(page_size=2))
    rest = await stub.ListJobs(pb.ListJobsRequest(page_size=2, page_token=first.next_page_token))
    assert len(first.jobs) == 2 and len(rest.jobs) == 1  # issued tokens still page
    async with grpc.aio.insecure_channel(address) as channel:
        checks = checks_pb2_grpc.CheckServiceStub(channel)
        calls = (
            stub.ListJobs(pb.ListJobsRequest(page_token=token)),
            checks.ListChecks(checks_pb2.ListChecksRequest(page_token=token)),
        )
        if not token.isdigit():  # ListModels' tokens are offsets: digits are its own
            calls += (stub.ListModels(pb.ListModelsRequest(page_token=token)),)
        for call in calls:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call
            assert info.value.code() == S.INVALID_ARGUMENT, info.value.details()
            details = info.value.details()
            assert details.startswith("page_token: not a page token this server issued")
            assert "start without a token" in details


@pytest.mark.parametrize("baseline", ["../tiny", "tiny\0", "/etc/passwd", "t" * 300, "tiny@../1"])
async def test_a_bad_check_baseline_names_the_baseline_field(address: str, baseline: str) -> None:
    """A check's baseline is resolved as a model; its errors said ``model: '../tiny' is not
    a model name`` (field ``model``), pointing the caller at the field that was right."""
    async with AsyncClient(address) as client:
        with pytest.raises(sdk.InvalidArgumentError) as info:
            await client.start_check("tiny", baseline=baseline, classes=["apple"])
    assert info.value.field == "baseline", info.value
    assert str(info.value).startswith("baseline: ") and "not a model name" in str(info.value)


@pytest.mark.parametrize("value", [1e20, 1e-30, 1e39, 1e-320, -1e300])
async def test_a_direction_float32_cannot_normalise_is_invalid_argument(stub, value: float) -> None:
    """A direction is normalised to unit length in the activations' float32: five values
    of 1e20 became all zeros (a constant objective: the job ran and made a meaningless
    picture), 1e-30 inf, 1e39 and 1e-320 NaN. Its scale means nothing, so one outside
    1e-6..1e6 is refused at the door, saying to rescale it; an ordinary one is queued."""
    term = units_pb2.UnitTerm(
        layer="logits", unit=units_pb2.UNIT_KIND_DIRECTION, direction=[value] * 5
    )
    req = pb.CreatePrototypeJobRequest(model="tiny", targets=[common_pb2.Target(units=[term])])
    req.config.steps = 2
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.CreatePrototypeJob(req)
    assert info.value.code() == S.INVALID_ARGUMENT, info.value.details()
    assert "target.direction" in info.value.details() and "scale it" in info.value.details()
    del req.targets[0].units[0].direction[:]
    req.targets[0].units[0].direction.extend([2e5, -1.0, 0.0, 3e-7, 1.0])
    assert (await stub.CreatePrototypeJob(req)).job.name.startswith("jobs/")


async def test_a_direction_on_a_channel_term_is_invalid_argument(stub) -> None:
    """A term whose unit kind is left unset is a channel; its ``direction`` was ignored, so
    a caller who forgot ``unit`` got channel 0's picture for their direction, queued."""
    term = units_pb2.UnitTerm(layer="logits", direction=[1.0, 0.0, 0.0, 0.0, 0.0])
    req = pb.CreatePrototypeJobRequest(model="tiny", targets=[common_pb2.Target(units=[term])])
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.CreatePrototypeJob(req)
    assert info.value.code() == S.INVALID_ARGUMENT
    assert "target.direction: only a direction term has one (this is a channel)" in (
        info.value.details()
    )
