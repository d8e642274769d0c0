#!/usr/bin/env python3
"""One noisy tenant against a shared service: the three attacks of issue 14, measured.

Usage: python bench/noisy_tenant.py [--watches 110] [--out results.json]

Runs the real service (Redis, the API as its own process with API keys, a worker
process) through ``api.stack.Stack`` and measures, for tenant ``beta`` while
tenant ``alpha`` misbehaves:

1. watch flood: ``alpha`` opens ``--watches`` WatchJob streams; ``beta`` calls
   GetJob 54 times. Counts beta's failures and Redis' client connections.
2. large request: ``alpha`` sends the issue's CreatePrototypeJob (1,000 hybrid
   targets of ten class names, ~130 KB, on a 1,000-class model) and then the
   largest request this checkout accepts; ``beta`` polls GetJob meanwhile. Reports
   each answer and how long beta's slowest GetJob took.
3. mixed-config fairness: ``alpha`` queues 64 one-target jobs; once the worker's
   first batch runs, ``beta`` queues one job with another ``steps`` value. Counts
   alpha's jobs that started after beta asked and before beta's job started.

It uses only what both ``main`` before issue 14 and after it have, so the same
command measures either checkout (``PYTHONPATH=<checkout>/server:<checkout>/client``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
from protolens.v1 import common_pb2, service_pb2_grpc
from protolens.v1 import service_pb2 as pb

WIDE = 1000
NAMES = [f"wide-{i:04d}" for i in range(WIDE)]  # ImageNet-length names (the issue: ~130 KB)
FAST = {"transforms": "small", "start": "constant", "equidistant_steps": 0}


def make_store(folder: Path) -> Path:
    """The tiny 5-class test model plus ``wide``: 1,000 named classes (an ImageNet head)."""
    import torch
    from protolens_server.api.testkit import make_tiny_model_store
    from torch import nn

    make_tiny_model_store(folder)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, WIDE)).eval()
    torch.jit.trace(net, torch.rand(1, 3, 16, 16)).save(str(folder / "wide.pt"))
    sidecar = {"channels": 3, "height": 16, "width": 16, "mean": 0.5, "std": 0.25,
               "class_names": NAMES}  # fmt: skip
    (folder / "wide.json").write_text(json.dumps(sidecar))
    return folder


def job_request(model: str, targets: list[list[Any]], seed: int, steps: int) -> Any:
    def ref(c: Any) -> Any:
        return common_pb2.ClassRef(index=c) if isinstance(c, int) else common_pb2.ClassRef(name=c)

    req = pb.CreatePrototypeJobRequest(
        model=model,
        targets=[common_pb2.Target(classes=[ref(c) for c in t]) for t in targets],
        seed=seed,
    )
    req.config.steps = steps
    for key, value in FAST.items():
        setattr(req.config, key, value)
    return req


def md(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


async def watch_flood(stub: Any, keys: dict[str, str], watches: int, redis: Any) -> dict:
    alpha, beta = md(keys["alpha"]), md(keys["beta"])
    job = (await stub.CreatePrototypeJob(job_request("tiny", [[1]], 1, 2), metadata=alpha)).job
    mine = (await stub.CreatePrototypeJob(job_request("tiny", [[2]], 2, 2), metadata=beta)).job
    calls = [
        stub.WatchJob(pb.WatchJobRequest(name=job.name), metadata=alpha) for _ in range(watches)
    ]

    async def first(call: Any) -> str:
        try:
            await call.read()
            return "OK"
        except grpc.aio.AioRpcError as exc:
            return exc.code().name

    opened = await asyncio.gather(*(first(c) for c in calls))
    await asyncio.sleep(1.5)  # every watch waits on its stream now
    connections = len(await redis.client_list())
    failures: list[str] = []
    for _ in range(54):
        try:
            await stub.GetJob(pb.GetJobRequest(name=mine.name), metadata=beta, timeout=10)
        except grpc.aio.AioRpcError as exc:
            failures.append(f"{exc.code().name}: {exc.details()}")
    for c in calls:
        c.cancel()
    return {
        "watches": watches,
        "watches_open": opened.count("OK"),
        "watch_errors": sorted(set(o for o in opened if o != "OK")),
        "redis_connections": connections,
        "other_tenant_getjob_failed": len(failures),
        "other_tenant_getjob_calls": 54,
        "first_failure": failures[0] if failures else "",
    }


async def large_requests(stub: Any, keys: dict[str, str]) -> dict:
    alpha, beta = md(keys["alpha"]), md(keys["beta"])
    mine = (await stub.CreatePrototypeJob(job_request("tiny", [[3]], 3, 2), metadata=beta)).job
    await stub.GetModel(pb.GetModelRequest(name="models/wide"), metadata=alpha)  # described
    issue = job_request("wide", [[NAMES[(t * 10 + k) % WIDE] for k in range(10)]
                                 for t in range(1000)], 10, 2)  # fmt: skip
    largest = job_request("wide", [[NAMES[(t * 4 + k) % WIDE] for k in range(4)]
                                   for t in range(1000)], 11, 2)  # fmt: skip
    out = {}
    for label, req in (("issue_1000x10", issue), ("valid_1000x4", largest)):
        stop, worst = asyncio.Event(), [0.0]

        async def poll(stop: asyncio.Event = stop, worst: list[float] = worst) -> None:
            while not stop.is_set():
                t = time.perf_counter()
                await stub.GetJob(pb.GetJobRequest(name=mine.name), metadata=beta, timeout=60)
                worst[0] = max(worst[0], time.perf_counter() - t)
                await asyncio.sleep(0.01)

        poller = asyncio.create_task(poll())
        await asyncio.sleep(0.3)
        t = time.perf_counter()
        try:
            await stub.CreatePrototypeJob(req, metadata=alpha, timeout=120)
            answer = "OK"
        except grpc.aio.AioRpcError as exc:
            answer = f"{exc.code().name}: {exc.details()[:120]}"
        took = time.perf_counter() - t
        await asyncio.sleep(0.3)
        stop.set()
        await poller
        out[label] = {
            "request_kb": round(req.ByteSize() / 1024, 1),
            "answer": answer,
            "answered_in_s": round(took, 2),
            "other_tenant_worst_getjob_s": round(worst[0], 3),
        }
    return out


async def fairness(stack: Any, stub: Any, keys: dict[str, str], queue: Any) -> dict:
    from protolens_server.queue.records import JobState

    alpha, beta = md(keys["alpha"]), md(keys["beta"])
    a_jobs = []
    for i in range(64):
        resp = await stub.CreatePrototypeJob(job_request("tiny", [[i % 5]], 1000 + i, 150),
                                             metadata=alpha)  # fmt: skip
        a_jobs.append(resp.job.name.split("/")[1])
    stack.add_worker()
    batch = stack.settings.max_batch
    deadline = time.monotonic() + 300
    while True:  # the first batch is formed and running
        states = [(await queue.get(j)).state for j in a_jobs]
        if states.count(JobState.RUNNING) >= batch or JobState.SUCCEEDED in states:
            break
        assert time.monotonic() < deadline, "the worker did not start"
        await asyncio.sleep(0.05)
    resp = await stub.CreatePrototypeJob(job_request("tiny", [[4]], 5000, 120), metadata=beta)
    b_id = resp.job.name.split("/")[1]
    while not (b := await queue.get(b_id)).state.finished:
        assert time.monotonic() < deadline, "B's job did not finish"
        await asyncio.sleep(0.1)
    a = [await queue.get(j) for j in a_jobs]
    between = [r for r in a if r.started_at and b.created_at <= r.started_at <= b.started_at]
    return {
        "max_batch": batch,
        "a_jobs": 64,
        "a_started_between_b_asking_and_b_starting": len(between),
        "b_waited_s": round(b.started_at - b.created_at, 2),
        "b_state": b.state.value,
    }


async def run(args: argparse.Namespace) -> dict:
    from protolens_server.api.stack import Stack
    from protolens_server.config import Settings
    from protolens_server.queue.store import Store

    work = Path(tempfile.mkdtemp(prefix="protolens-noisy-"))
    settings = Settings(
        grpc_port=0, metrics_port=0, model_store=make_store(work / "models"),
        builtin_models=False, device="cpu", max_targets_per_job=1000, max_steps=500,
        max_message_bytes=4 * 1024 * 1024, max_batch=32, heartbeat_s=0.5,
        shutdown_grace_s=1,
    )  # fmt: skip
    result: dict[str, Any] = {"loadavg_at_start": os.getloadavg()[0]}
    with Stack(settings, work / "stack", workers=0, insecure=False) as stack:
        store = await Store.connect(stack.settings)
        queue = store.jobs
        try:
            keys = {t: (await store.api_keys.create(t, "tenant", t))[1] for t in ("alpha", "beta")}
            options = [("grpc.max_send_message_length", 4 * 1024 * 1024)]
            async with grpc.aio.insecure_channel(stack.address, options=options) as channel:
                stub = service_pb2_grpc.ProtolensServiceStub(channel)
                result["watch_flood"] = await watch_flood(stub, keys, args.watches, queue.redis)
                result["large_request"] = await large_requests(stub, keys)
                result["fairness"] = await fairness(stack, stub, keys, queue)
        finally:
            await store.close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--watches", type=int, default=110)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
