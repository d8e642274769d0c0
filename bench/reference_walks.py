"""How a large reference set costs the API's callers (real gRPC, real Redis, tiny model).

One reference folder of ``--files`` small PNGs (3 classes), then: the first
CreatePrototypeJob naming it (walk + content digest), a later one, and a plain request
(no reference set) of another caller while ``--concurrent`` reference-set requests are
in flight. Writes JSON to ``--out``.

    PYTHONPATH=server:client python bench/reference_walks.py --redis-url redis://127.0.0.1:6394 \
        --files 100000 --out bench/results/reference_walks/after.json
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import tempfile
import time
from pathlib import Path

import grpc
from PIL import Image
from protolens.v1 import common_pb2, service_pb2_grpc
from protolens.v1 import service_pb2 as pb
from protolens_server.api.server import start_server
from protolens_server.api.testkit import make_tiny_model_store
from protolens_server.config import Settings


def _request(seed: int, reference_set: str) -> pb.CreatePrototypeJobRequest:
    target = common_pb2.Target(classes=[common_pb2.ClassRef(index=1)])
    req = pb.CreatePrototypeJobRequest(
        model="tiny", targets=[target], seed=seed, reference_set=reference_set
    )
    req.config.steps = 2
    return req


async def _timed(call: asyncio.Future | object) -> float:
    started = time.perf_counter()
    await call  # type: ignore[misc]
    return time.perf_counter() - started


async def run(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="protolens-refwalk-"))
    png = io.BytesIO()
    Image.new("RGB", (20, 20), (90, 120, 30)).save(png, "PNG")
    per_class = args.files // 3
    for c in (1, 2, 3):
        folder = work / "refs" / "big" / str(c)
        folder.mkdir(parents=True)
        for i in range(per_class):
            (folder / f"{i:06d}.png").write_bytes(png.getvalue())
    extra = {}
    if "max_reference_files" in Settings.model_fields:
        extra["max_reference_files"] = max(args.files, 20_000)
    settings = Settings(
        redis_url=args.redis_url, grpc_port=0, model_store=make_tiny_model_store(work / "m"),
        reference_root=work / "refs", builtin_models=False, insecure=True,
        max_queued_jobs=100_000, shutdown_grace_s=0, **extra,
    )  # fmt: skip
    server, port = await start_server(settings)
    await asyncio.to_thread(server.catalog.show, "tiny")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = service_pb2_grpc.ProtolensServiceStub(channel)
            plain_idle = await _timed(stub.CreatePrototypeJob(_request(10_000, "")))
            first = await _timed(stub.CreatePrototypeJob(_request(1, "big")))
            later = await _timed(stub.CreatePrototypeJob(_request(2, "big")))
            refs = getattr(server, "references", None)  # None before the fix: always walks
            if refs is not None:  # past its TTL: a real walk (stat every file)
                refs.ttl_s = 1e-6
            calls = [
                asyncio.ensure_future(stub.CreatePrototypeJob(_request(100 + i, "big")))
                for i in range(args.concurrent)
            ]
            await asyncio.sleep(0.05)
            plain_busy = await _timed(stub.CreatePrototypeJob(_request(10_001, "")))
            await asyncio.gather(*calls)
    finally:
        await server.stop(grace=0)
    return {
        "files": per_class * 3,
        "concurrent": args.concurrent,
        "first_reference_request_s": round(first, 3),
        "later_reference_request_s": round(later, 3),
        "plain_request_idle_s": round(plain_idle, 4),
        "plain_request_while_reference_requests_s": round(plain_busy, 4),
        "walks": getattr(getattr(server, "references", None), "walks", None),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--concurrent", type=int, default=8)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = asyncio.run(run(args))
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
