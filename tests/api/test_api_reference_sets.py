"""A large reference set must not slow every caller (real gRPC, real Redis, tiny model).

Each CreatePrototypeJob naming a reference set walked and stat-ed every file of its
folder on the API's request threads, even when the answer was cached: with 100,000
files each later request took ~2 s, and a plain request of another caller waited
16.5 s behind 8 of them (2 request threads). Now a set is walked in the API's own walk
threads, once per folder at a time (concurrent requests share the walk), its answer is
reused for ``reference_walk_ttl_s``, and a folder over ``max_reference_files`` is
refused before it is walked.
"""

from __future__ import annotations

import asyncio
import io
import threading
import time
from pathlib import Path

import grpc
import pytest
from PIL import Image
from protolens.v1 import common_pb2
from protolens.v1 import service_pb2 as pb
from protolens_server.api.server import ApiServer, start_server
from protolens_server.config import Settings

S = grpc.StatusCode
_PNG = io.BytesIO()
Image.new("RGB", (20, 20), (90, 120, 30)).save(_PNG, "PNG")


def _write_set(folder: Path, classes: tuple[int, ...], per_class: int) -> None:
    for c in classes:
        (folder / str(c)).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (folder / str(c) / f"{i:04d}.png").write_bytes(_PNG.getvalue())


def _request(seed: int, cls: int = 1, reference_set: str = "big") -> pb.CreatePrototypeJobRequest:
    target = common_pb2.Target(classes=[common_pb2.ClassRef(index=cls)])
    req = pb.CreatePrototypeJobRequest(
        model="tiny", targets=[target], seed=seed, reference_set=reference_set
    )
    req.config.steps = 2
    return req


async def _digest(api: ApiServer, reply: pb.CreatePrototypeJobResponse) -> str:
    """The reference digest the API put in the job's spec (and so in its cache key)."""
    record = await api.queue.get(reply.job.name.removeprefix("jobs/"))
    return record.spec.reference_digest


@pytest.fixture
def big_set(api_settings: Settings) -> Path:
    """300 files: 3 classes of 100 (what a walk stats and reads)."""
    assert api_settings.reference_root is not None
    folder = api_settings.reference_root / "big"
    _write_set(folder, (1, 2, 3), 100)
    return folder


async def test_concurrent_requests_for_one_set_share_one_walk_off_the_request_threads(
    api: ApiServer, stub, big_set: Path
) -> None:
    refs = api.references
    assert refs is not None and api.pool is not None and api.pool.threads == 2
    started, release = threading.Event(), threading.Event()

    def held(folder: Path) -> None:  # in the walk thread: hold the walk until released
        started.set()
        release.wait(30)

    refs.on_walk = held
    walks_before = refs.walks
    calls = [asyncio.ensure_future(stub.CreatePrototypeJob(_request(seed))) for seed in range(8)]
    try:
        assert await asyncio.to_thread(started.wait, 10)
        # 8 requests wait for the one walk, which is held: a request without a reference
        # set is still answered (no request thread is held by the waiting ones)
        plain = await asyncio.wait_for(stub.CreatePrototypeJob(_request(99, reference_set="")), 10)
        assert plain.job.name.startswith("jobs/")
        assert not any(c.done() for c in calls) and not release.is_set()
    finally:
        release.set()
    replies = await asyncio.wait_for(asyncio.gather(*calls), 30)
    assert refs.walks - walks_before == 1  # one walk for all 8
    digests = {await _digest(api, r) for r in replies}
    assert len(digests) == 1 and "" not in digests
    # answered from that walk while it is fresh: no walk, no stat
    again = await stub.CreatePrototypeJob(_request(100))
    assert await _digest(api, again) in digests and refs.walks - walks_before == 1


async def test_a_changed_set_is_noticed_after_the_ttl(api: ApiServer, stub, big_set: Path) -> None:
    refs = api.references
    assert refs is not None
    refs.ttl_s = 3600.0
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.CreatePrototypeJob(_request(1, cls=4))
    assert info.value.code() == S.INVALID_ARGUMENT
    assert "has no images of class 4" in info.value.details()
    walks = refs.walks
    _write_set(big_set, (4,), 3)
    (big_set / "1" / "0000.png").write_bytes(_PNG.getvalue() + b"\0")  # rewritten in place
    with pytest.raises(grpc.aio.AioRpcError):  # within the TTL: the walk's answer
        await stub.CreatePrototypeJob(_request(2, cls=4))
    assert refs.walks == walks
    refs.ttl_s = 0.2
    await asyncio.sleep(0.3)
    made = await stub.CreatePrototypeJob(_request(3, cls=4))  # after it: walked again
    assert made.job.name.startswith("jobs/") and refs.walks == walks + 1
    digest = await _digest(api, made)
    # a file rewritten in place (its folder's mtime unchanged) changes the digest too
    time.sleep(0.01)
    (big_set / "1" / "0001.png").write_bytes(_PNG.getvalue() + b"\1")
    await asyncio.sleep(0.3)
    changed = await stub.CreatePrototypeJob(_request(4, cls=4))
    assert await _digest(api, changed) != digest


async def test_a_folder_over_max_reference_files_is_refused_before_its_walk(
    api_settings: Settings, big_set: Path
) -> None:
    from protolens.v1 import service_pb2_grpc

    settings = api_settings.model_copy(update={"max_reference_files": 250})
    server, port = await start_server(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = service_pb2_grpc.ProtolensServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.CreatePrototypeJob(_request(1))
            assert info.value.code() == S.INVALID_ARGUMENT
            assert "reference set 'big' has more than 250 files" in info.value.details()
            assert "max_reference_files" in info.value.details()
            assert str(big_set) not in info.value.details()
    finally:
        await server.stop(grace=0)
