#!/usr/bin/env python3
"""Does the service keep the engine's rate? (issue 15, item 4, on CPU with a small model)

Two ways to make the same prototypes, alternating (engine, service, engine, ...):

- **engine**: one ``run_engine`` call (what a worker calls per batch) for all jobs' specs
  at once, in this process, on the model loaded the way a worker loads it;
- **service**: the same jobs (one class each, ``--tenants`` tenants, distinct seeds, so
  no cache hits) submitted through the real queue (``JobQueue.submit``) to a real worker
  process (``python -m protolens_server.worker``, Redis from ``api/stack.py``), timed from
  the first submit to the last job's ``finished_at`` (server timestamps); the worker is
  warmed first (model loaded, one job run).

Both use one torch thread. Reported: image-steps/s of each and the service/engine ratio
(target >= 0.9), in wall time and in CPU time (the worker process's CPU seconds, its child
processes' included, against the engine call's, less sensitive to other load on a shared
machine), and whether every job succeeded exactly once. Writes JSON (default
bench/results/service_rate.json).

    python bench/service_rate.py [--jobs 200] [--tenants 20] [--steps 32] [--reps 2]
        [--linger-ms MS]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import torch
from protolens_server import ENGINE_VERSION
from protolens_server.api.stack import Stack
from protolens_server.api.testkit import TINY_CLASSES, TINY_MODEL, make_tiny_model_store
from protolens_server.config import Settings
from protolens_server.engine import GenerationConfig, Target
from protolens_server.models.catalog import ModelCatalog
from protolens_server.queue.jobs import JobQueue
from protolens_server.queue.records import JobSpec, JobState
from protolens_server.worker.runner import run_engine

ROOT = Path(__file__).resolve().parents[1]
TARGET_RATIO = 0.9


def specs_for(
    digest: str, jobs: int, tenants: int, steps: int, seed0: int, max_batch: int
) -> list[JobSpec]:
    config = GenerationConfig(steps=steps, max_batch=max_batch).to_dict()
    return [
        JobSpec(
            model=TINY_MODEL,
            model_digest=digest,
            targets=(Target((i % len(TINY_CLASSES),)),),
            config=config,
            seed=seed0 + i,
            engine_version=ENGINE_VERSION,
            tenant=f"tenant-{i % tenants:02d}",
        )
        for i in range(jobs)
    ]


def engine_run(handle: Any, specs: list[JobSpec]) -> dict[str, float]:
    cpu0, t0 = time.process_time(), time.perf_counter()
    results = run_engine(handle, specs, device="cpu")
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    assert len(results) == len(specs)
    return {"seconds": seconds, "cpu_seconds": cpu}


async def service_run(
    queue: JobQueue, worker: psutil.Process, specs: list[JobSpec], timeout: float, log: Path
) -> dict[str, Any]:
    batches0 = len(_batches(log))
    cpu0, own0 = _cpu(worker), _own_cpu(worker)
    t0 = time.time()
    ids = [(await queue.submit(spec))[0].job_id for spec in specs]
    deadline = time.monotonic() + timeout
    pending = set(ids)
    while pending and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        records = await asyncio.gather(*(queue.get(j) for j in pending))
        pending -= {r.job_id for r in records if r.state.finished}
    cpu, own = _cpu(worker) - cpu0, _own_cpu(worker) - own0
    records = await asyncio.gather(*(queue.get(j) for j in ids))
    states = [r.state for r in records]
    succeeded = [r for r in records if r.state == JobState.SUCCEEDED]
    last = max((r.finished_at for r in succeeded), default=time.time())
    batches = _batches(log)[batches0:]
    return {
        "seconds": last - t0,
        "cpu_seconds": cpu,
        # of which the worker process itself (its event loop; and the engine thread unless
        # engine_process is on) and its child processes (the engine process, if on)
        "cpu_worker_seconds": own,
        "cpu_children_seconds": cpu - own,
        "succeeded": len(succeeded),
        "not_succeeded": {s.value: states.count(s) for s in set(states) if s != JobState.SUCCEEDED},
        "attempts_over_one": sum(1 for r in records if r.attempts > 1),
        # the worker's engine calls for these jobs and the jobs in each (from its log)
        "engine_calls": len(batches),
        "batch_jobs": batches,
    }


def _batches(log: Path) -> list[int]:
    """Jobs per engine batch, in order, as the worker logged them ("engine batch of N")."""
    return [
        int(m) for m in re.findall(r"engine batch of (\d+) job", log.read_text(errors="replace"))
    ]


def _own_cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def _cpu(proc: psutil.Process) -> float:
    """The worker's CPU seconds with its child processes' (the engine process, model
    inspection): running ones' own, and those of children already waited for."""
    times = proc.cpu_times()
    total = times.user + times.system + times.children_user + times.children_system
    for child in proc.children(recursive=True):
        try:
            child_times = child.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += child_times.user + child_times.system
    return total


async def wait_ready(queue: JobQueue, spec: JobSpec, timeout: float = 180) -> None:
    """The warm-up job: the worker is up, has loaded the model and run the engine once."""
    record, _ = await queue.submit(spec)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (await queue.get(record.job_id)).state.finished:
            return
        await asyncio.sleep(0.2)
    raise RuntimeError("the worker did not finish the warm-up job")


async def bench(args: argparse.Namespace, stack: Stack, handle: Any, digest: str) -> dict:
    queue = await JobQueue.connect(stack.settings)
    worker = psutil.Process(stack.worker_procs[0].proc.pid)
    runs: list[dict[str, Any]] = []
    try:
        warm = specs_for(digest, 1, 1, args.steps, 10**6, args.max_batch)[0]
        await wait_ready(queue, warm)
        engine_run(handle, specs_for(digest, 4, 1, 2, 10**6 + 1, args.max_batch))  # warm here
        for rep in range(args.reps):
            seed0 = 1000 * (rep + 1)
            specs = specs_for(digest, args.jobs, args.tenants, args.steps, seed0, args.max_batch)
            order = ("engine", "service") if rep % 2 == 0 else ("service", "engine")
            for method in order:
                if method == "engine":
                    run = engine_run(handle, specs)
                else:
                    fresh = specs_for(
                        digest, args.jobs, args.tenants, args.steps, seed0 + 500, args.max_batch
                    )
                    log = stack.worker_procs[0].log_path
                    run = await service_run(queue, worker, fresh, args.timeout, log)
                run.update(method=method, rep=rep, load=os.getloadavg()[0])
                runs.append(run)
                print(json.dumps(run), flush=True)
    finally:
        await queue.close()
    return _summary(args, runs)


def _summary(args: argparse.Namespace, runs: list[dict[str, Any]]) -> dict[str, Any]:
    image_steps = args.jobs * args.steps

    def median(method: str, key: str) -> float:
        return statistics.median(r[key] for r in runs if r["method"] == method)

    engine_s, service_s = median("engine", "seconds"), median("service", "seconds")
    engine_cpu, service_cpu = median("engine", "cpu_seconds"), median("service", "cpu_seconds")
    service_runs = [r for r in runs if r["method"] == "service"]
    return {
        "image_steps": image_steps,
        "engine_image_steps_per_s": image_steps / engine_s,
        "service_image_steps_per_s": image_steps / service_s,
        "ratio_wall": engine_s / service_s,
        "ratio_cpu": engine_cpu / service_cpu,
        # what the service adds per job beyond the engine's share (event loop, Redis, PNGs)
        "worker_ms_per_job": 1000 * (service_s - engine_s) / args.jobs,
        "worker_cpu_ms_per_job": 1000 * (service_cpu - engine_cpu) / args.jobs,
        "all_succeeded_once": all(
            r["succeeded"] == args.jobs and r["attempts_over_one"] == 0 for r in service_runs
        ),
        "runs": runs,
    }


def table(result: dict[str, Any]) -> str:
    s = result["settings"]
    ok = result["ratio_wall"] >= TARGET_RATIO
    lines = [
        f"{s['jobs']} one-class jobs from {s['tenants']} tenants, tiny model "
        f"({s['size']} px), {s['steps']} steps, worker max_batch {s['max_batch']}, "
        f"linger {s['linger_ms']} ms, "
        f"{s['reps']} repetitions (medians); {result['date']}, torch {result['torch']}, "
        f"load {result['load_average']}",
        "",
        "| | image-steps/s | s (median) | CPU s (median) |",
        "|---|---|---|---|",
    ]
    for method in ("engine", "service"):
        runs = [r for r in result["runs"] if r["method"] == method]
        rate = result[f"{method}_image_steps_per_s"]
        secs = statistics.median(r["seconds"] for r in runs)
        cpu = statistics.median(r["cpu_seconds"] for r in runs)
        lines.append(f"| {method} | {rate:.4g} | {secs:.2f} | {cpu:.2f} |")
    lines += [
        "",
        f"service / engine: **{result['ratio_wall']:.2f}** wall-clock "
        f"({'meets' if ok else 'MISSES'} >= {TARGET_RATIO}), {result['ratio_cpu']:.2f} CPU time; "
        f"every job succeeded exactly once: {result['all_succeeded_once']}",
        f"worker cost per job beyond the engine: {result['worker_ms_per_job']:.1f} ms wall, "
        f"{result['worker_cpu_ms_per_job']:.1f} ms CPU",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=200)
    p.add_argument("--tenants", type=int, default=20)
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--max-batch", type=int, default=32, help="the worker's and engine's chunk")
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument(
        "--linger-ms",
        type=float,
        default=None,
        help="the worker's worker_batch_linger_ms (default: the setting's default)",
    )
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "service_rate.json")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]
    workdir = Path(tempfile.mkdtemp(prefix="protolens-rate-"))
    store = make_tiny_model_store(workdir / "models")
    catalog = ModelCatalog(store, builtins=False)
    digest = catalog.describe(TINY_MODEL).digest
    handle = catalog.load(TINY_MODEL, "cpu")
    settings = Settings(
        grpc_port=0,
        metrics_port=0,
        model_store=store,
        builtin_models=False,
        device="cpu",
        max_batch=args.max_batch,
        max_queued_jobs=100_000,
        **({} if args.linger_ms is None else {"worker_batch_linger_ms": args.linger_ms}),
    )
    stack = Stack(settings, workdir / "stack", workers=1, extra_env={"OMP_NUM_THREADS": "1"})
    with stack:
        summary = asyncio.run(bench(args, stack, handle, digest))
    result = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "python bench/service_rate.py " + " ".join(argv or sys.argv[1:]),
        "torch": torch.__version__,
        "machine": f"{os.cpu_count()}-core {platform.machine()}, {platform.platform()}",
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "settings": {
            **vars(args),
            "linger_ms": settings.worker_batch_linger_ms,
            "out": str(args.out),
            "size": handle.input_spec.height,
        },
        **summary,
    }
    print(table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
