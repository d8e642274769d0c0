"""Feature isolation through the service: CreateIsolationJob queues, a real worker runs it,
the job carries the probabilities and the RGBA image (mask as alpha); the same request is a
cache hit, another image is not; bad requests are INVALID_ARGUMENT; the CLI's --address."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from protolens import AsyncClient
from protolens import errors as sdk
from protolens.cli import main
from protolens_server.api.server import ApiServer
from protolens_server.config import Settings
from protolens_server.imageio import encode_png
from protolens_server.worker import Worker

CONFIG = {"steps": 8, "samples": 2}


def _photo(seed: int, size: int = 24) -> bytes:
    return encode_png(torch.rand(3, size, size, generator=torch.Generator().manual_seed(seed)))


async def test_isolation_job_runs_on_a_worker_and_is_cached(
    modes_address: str, modes_settings: Settings, modes_api: ApiServer
) -> None:
    async with AsyncClient(modes_address) as client:
        job = await client.create_isolation_job("tiny", _photo(1), "banana", config=CONFIG, seed=3)
        assert job.outcome == "queued" and job.isolation is not None
        queued = await modes_api.queue.get(job.name.rsplit("/", 1)[-1])
        fitted = modes_api.queue.blobs.get(queued.spec.image_key)  # the image: a blob
        assert queued.spec.image == "" and Image.open(io.BytesIO(fitted)).size == (16, 16)
        assert job.isolation.config["steps"] == 8 and job.isolation.config["sparsity"] == 2.0
        async with Worker(modes_settings, name="w-isolate") as worker:
            assert await worker.run_once() == 1
        job = await client.get_job(job.name)
        assert job.state == "SUCCEEDED", job.error
        found = job.isolation
        assert found is not None
        for value in (found.probability, found.probability_kept, found.probability_removed):
            assert 0 < value < 1
        assert 0 < found.mask_mean < 1
        (summary,) = job.prototypes
        assert summary.target.classes == (1,) and summary.probability == found.probability_kept
        proto = await client.get_prototype(job, 0)
        preview = await client.get_prototype(job, 0, preview_channels=[0])
        again = await client.create_isolation_job("tiny", _photo(1), 1, config=CONFIG, seed=3)
        other = await client.create_isolation_job("tiny", _photo(2), 1, config=CONFIG, seed=3)
    image = Image.open(io.BytesIO(proto.png))
    assert image.mode == "RGBA" and image.size == (16, 16)  # fitted to the model's input
    alpha = torch.from_numpy(np.asarray(image.getchannel("A"), dtype=np.float32)) / 255
    assert abs(float(alpha.mean()) - found.mask_mean) < 0.01
    assert Image.open(io.BytesIO(preview.png)).mode == "LA"  # a preview keeps the mask
    assert again.outcome == "cache_hit" and again.isolation.probability == found.probability
    assert other.outcome == "queued"  # the image is in the cache key


@pytest.mark.parametrize(
    ("image", "target", "config", "words"),
    [
        (b"", "apple", {}, "image"),
        (b"not an image", "apple", {}, "not in an image format"),
        (None, "kiwi", {}, "kiwi"),
        (None, "apple", {"sparsity": -1.0}, "config.sparsity"),
        (None, "apple", {"steps": 100000}, "config.steps"),
    ],
)
async def test_bad_isolation_requests_are_invalid_argument(
    modes_address: str, image: bytes | None, target: str, config: dict, words: str
) -> None:
    async with AsyncClient(modes_address) as client:
        with pytest.raises(sdk.InvalidArgumentError) as info:
            await client.create_isolation_job(
                "tiny", _photo(1) if image is None else image, target, config=config
            )
    assert words in str(info.value)


async def test_cli_isolate_on_the_service(
    modes_address: str, modes_settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = tmp_path / "photo.png"
    photo.write_bytes(_photo(5))
    out = tmp_path / "out"
    args = ["isolate", str(photo), "--model", "tiny", "--target", "cherry", "--steps", "6"]
    args += ["--address", modes_address, "--out", str(out), "--json", "--timeout", "120"]

    async def work() -> None:
        async with Worker(modes_settings, name="w-isolate-cli") as worker:
            while not await worker.run_once(block_ms=200):
                pass

    code, _ = await asyncio.gather(asyncio.to_thread(main, args), work())
    record = json.loads(capsys.readouterr().out)
    assert code == 0 and record["job"].startswith("jobs/") and record["target"]["class"] == 2
    assert Image.open(out / record["isolated_file"]).mode == "RGBA"
    assert Image.open(out / record["mask_file"]).mode == "L"
