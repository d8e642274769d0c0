#!/usr/bin/env python3
"""One tenant floods a shared API; another tenant's GetJob latency meanwhile (red-team round 4).

Usage: python bench/tenant_floods.py SCENARIO [--n N] [--channels C] [--seconds S] [--out FILE]

Runs Redis (``PROTOLENS_REDIS_URL``, else an embedded one), the API as its own process
with API keys required, and no worker (jobs stay queued), through ``api.stack.Stack``.
Tenant ``alpha`` misbehaves, from a child process so its client does not share this
one's event loop; tenant ``beta`` times GetJob every 50 ms for ``--seconds``:

- ``calls``: alpha keeps ``--n`` GetJob calls in flight over ``--channels`` channels.
- ``watch-churn``: alpha keeps ``--n`` WatchJob streams opening, reading their first event
  and cancelling.
- ``checks``: alpha starts ``--n`` registry checks (over the tiny model's five classes; they
  wait for a worker) before beta's timing (the cap, max_checks_per_tenant, refuses those
  past it: the refusals are counted).

Prints (and with ``--out`` writes) JSON: beta's GetJob p50/p99/max and error codes, alpha's
answers by code (with one message each), the API's Redis connections (CLIENT LIST) and
the machine (CPUs, load average at start).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
from protolens.v1 import common_pb2, service_pb2_grpc
from protolens.v1 import service_pb2 as pb

CLASSES = ["apple", "banana", "cherry", "date", "elderberry"]


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def _one_target() -> pb.CreatePrototypeJobRequest:
    return pb.CreatePrototypeJobRequest(
        model="tiny", targets=[common_pb2.Target(classes=[common_pb2.ClassRef(index=1)])]
    )


def alpha_flood(scenario: str, address: str, key: str, job: str, n: int, channels: int,
                seconds: float, out: Any) -> None:  # fmt: skip
    """alpha's side (a child process): ``n`` calls in flight for ``seconds``."""

    async def run() -> dict[str, Any]:
        md = (("authorization", f"Bearer {key}"),)
        chans = [
            grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(channels)
        ]
        stubs = [service_pb2_grpc.ProtolensServiceStub(c) for c in chans]
        for stub in stubs:  # connected before the flood
            await stub.GetJob(pb.GetJobRequest(name=job), metadata=md)
        codes: Counter[str] = Counter()
        said: dict[str, str] = {}
        end = time.monotonic() + seconds

        async def one(stub: service_pb2_grpc.ProtolensServiceStub) -> None:
            while time.monotonic() < end:
                try:
                    if scenario == "calls":
                        await stub.GetJob(pb.GetJobRequest(name=job), metadata=md)
                    else:
                        call = stub.WatchJob(pb.WatchJobRequest(name=job), metadata=md)
                        async for _ in call:
                            break
                        call.cancel()
                    codes["OK"] += 1
                except grpc.aio.AioRpcError as exc:
                    codes[exc.code().name] += 1
                    said.setdefault(exc.code().name, (exc.details() or "")[:200])

        await asyncio.gather(*(one(stubs[i % len(stubs)]) for i in range(n)))
        for c in chans:
            await c.close()
        return {"codes": dict(codes), "messages": said}

    out.put(asyncio.run(run()))


async def _beta_latency(stub: Any, job: str, md: Any, seconds: float) -> dict[str, Any]:
    took: list[float] = []
    codes: Counter[str] = Counter()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.perf_counter()
        try:
            await stub.GetJob(pb.GetJobRequest(name=job), metadata=md, timeout=30)
            took.append(time.perf_counter() - t)
            codes["OK"] += 1
        except grpc.aio.AioRpcError as exc:
            codes[exc.code().name] += 1
        await asyncio.sleep(0.05)
    ms = [t * 1000 for t in took]
    return {
        "calls": sum(codes.values()),
        "codes": dict(codes),
        "p50_ms": round(_quantile(ms, 0.5), 1),
        "p99_ms": round(_quantile(ms, 0.99), 1),
        "max_ms": round(max(ms, default=0.0), 1),
    }


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    from protolens_server.api.auth import ApiKeyStore
    from protolens_server.api.stack import Stack
    from protolens_server.api.testkit import make_tiny_model_store
    from protolens_server.config import Settings
    from protolens_server.queue.jobs import JobQueue

    work = Path(tempfile.mkdtemp(prefix="protolens-floods-"))
    settings = Settings(
        redis_url=os.environ.get("PROTOLENS_REDIS_URL", ""),
        key_prefix="plfloods",
        grpc_port=0,
        metrics_port=0,
        model_store=make_tiny_model_store(work / "models"),
        builtin_models=False,
        device="cpu",
    )
    result: dict[str, Any] = {
        "scenario": args.scenario,
        "n": args.n,
        "channels": args.channels,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}",
    }
    with Stack(settings, work / "stack", workers=0, insecure=False) as stack:
        queue = await JobQueue.connect(stack.settings)
        store = ApiKeyStore(queue.redis, queue.keys)
        keys = {t: (await store.create(t, "tenant", t))[1] for t in ("alpha", "beta")}
        md = {t: (("authorization", f"Bearer {k}"),) for t, k in keys.items()}
        async with grpc.aio.insecure_channel(stack.address) as channel:
            stub = service_pb2_grpc.ProtolensServiceStub(channel)
            job_a = (await stub.CreatePrototypeJob(_one_target(), metadata=md["alpha"])).job.name
            job_b = (await stub.CreatePrototypeJob(_one_target(), metadata=md["beta"])).job.name
            result["beta_before"] = await _beta_latency(stub, job_b, md["beta"], 3)
            if args.scenario == "checks":
                result["alpha"] = await _start_checks(stack.address, md["alpha"], args.n)
                result["beta"] = await _beta_latency(stub, job_b, md["beta"], args.seconds)
            else:
                ctx = mp.get_context("spawn")
                out = ctx.Queue()
                child = ctx.Process(
                    target=alpha_flood,
                    args=(args.scenario, stack.address, keys["alpha"], job_a, args.n,
                          args.channels, args.seconds + 3, out),
                )  # fmt: skip
                child.start()
                await asyncio.sleep(2)  # the flood under way
                result["beta"] = await _beta_latency(stub, job_b, md["beta"], args.seconds)
                result["alpha"] = await asyncio.to_thread(out.get, True, 120)
                child.join(30)
        clients = await queue.redis.client_list()
        result["api_redis_connections"] = (
            sum(1 for c in clients if str(c.get("name", "")).startswith("protolens-")) - 1
        )  # not this script's own client
        await queue.close()
    return result


async def _start_checks(address: str, md: Any, n: int) -> dict[str, Any]:
    from protolens.v1 import checks_pb2, checks_pb2_grpc

    codes: Counter[str] = Counter()
    said: dict[str, str] = {}
    async with grpc.aio.insecure_channel(address) as channel:
        stub = checks_pb2_grpc.CheckServiceStub(channel)
        for i in range(n):
            request = checks_pb2.StartCheckRequest(model="tiny", classes=CLASSES, seed=i % 3)
            request.config.steps = 4
            try:
                await stub.StartCheck(request, metadata=md)
                codes["OK"] += 1
            except grpc.aio.AioRpcError as exc:
                codes[exc.code().name] += 1
                said.setdefault(exc.code().name, (exc.details() or "")[:200])
    return {"codes": dict(codes), "messages": said}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=["calls", "watch-churn", "checks"])
    parser.add_argument("--n", type=int, default=200, help="alpha's calls in flight / checks")
    parser.add_argument("--channels", type=int, default=1, help="alpha's gRPC channels")
    parser.add_argument("--seconds", type=float, default=8.0, help="beta's timing window")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    result = asyncio.run(measure(args))
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
