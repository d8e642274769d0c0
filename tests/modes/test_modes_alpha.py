"""Alpha prototypes through the service: RGBA PNGs from a real worker, scored over mid-grey,
cached apart from the opaque job; the CLI's --alpha writes RGBA files."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
from PIL import Image
from protolens import AsyncClient
from protolens.cli import main
from protolens_server.config import Settings
from protolens_server.imageio import decode_tensor
from protolens_server.worker import Worker

CONFIG = {"steps": 12, "equidistant_steps": 4, "transforms": "small"}


def _mode(png: bytes) -> tuple[str, tuple[int, int]]:
    image = Image.open(io.BytesIO(png))
    return image.mode, image.getchannel("A").getextrema() if image.mode == "RGBA" else (0, 0)


async def test_alpha_job_stores_rgba_scored_and_cached_apart(
    modes_address: str, modes_settings: Settings
) -> None:
    alpha = {**CONFIG, "alpha": True}
    async with AsyncClient(modes_address) as client:
        job = await client.create_prototype_job(
            "tiny", ["banana"], config=alpha, seed=2, reference_set="tinyref"
        )
        plain = await client.create_prototype_job(
            "tiny", ["banana"], config=CONFIG, seed=2, reference_set="tinyref"
        )
        assert plain.outcome == "queued"  # alpha is in the cache key
        async with Worker(modes_settings, name="w-alpha") as worker:
            while await worker.run_once():
                pass
        job = await client.get_job(job.name)
        assert job.state == "SUCCEEDED", job.error
        proto = await client.get_prototype(job, 0)
        opaque = await client.get_prototype(plain.name, 0)
        gray = await client.get_prototype(job, 0, preview_channels=[1], include_float=True)
        swapped = await client.get_prototype(job, 0, preview_channels=[2, 1, 0])
        again = await client.create_prototype_job(
            "tiny", ["banana"], config=alpha, seed=2, reference_set="tinyref"
        )
    mode, (low, high) = _mode(proto.png)
    assert mode == "RGBA" and low < high  # a real alpha channel, not all one value
    assert _mode(opaque.png)[0] == "RGB"
    # a preview of chosen channels keeps the opacity: grayscale+alpha, RGBA
    gray_png = Image.open(io.BytesIO(gray.png))
    stored = Image.open(io.BytesIO(proto.png))
    assert gray_png.mode == "LA" and Image.open(io.BytesIO(swapped.png)).mode == "RGBA"
    assert list(gray_png.getchannel("A").getdata()) == list(stored.getchannel("A").getdata())
    assert decode_tensor(gray.float_tensor)[0].shape[0] == 4  # RGB + opacity, lossless
    assert proto.scores is not None and proto.scores.layer_names  # scored over mid-grey
    assert job.config["alpha"] is True and again.outcome == "cache_hit"


async def test_cli_alpha_flag_writes_rgba(
    modes_address: str, modes_settings: Settings, tmp_path: Path
) -> None:
    args = ["submit", "--model", "tiny", "--target", "apple", "--alpha", "--address", modes_address]
    args += ["--config", "steps=8", "--config", "equidistant_steps=2"]
    code = await asyncio.to_thread(main, args)
    assert code == 0
    async with Worker(modes_settings, name="w-alpha-cli") as worker:
        assert await worker.run_once() == 1
    async with AsyncClient(modes_address) as client:
        jobs, _ = await client.list_jobs()
        (job,) = [j for j in jobs if j.config.get("alpha")]
        saved = await client.get_prototype(job, 0)
    png, _ = saved.save(tmp_path)
    assert Image.open(png).mode == "RGBA"


@pytest.mark.parametrize("value", ["-1", "1e9"])
async def test_bad_alpha_penalty_is_invalid_argument(modes_address: str, value: str) -> None:
    from protolens import errors as sdk

    async with AsyncClient(modes_address) as client:
        with pytest.raises(sdk.InvalidArgumentError, match="alpha_penalty"):
            await client.create_prototype_job(
                "tiny", ["apple"], config={"alpha": True, "alpha_penalty": float(value)}
            )
