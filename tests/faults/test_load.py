"""200 concurrent clients (asyncio, one process) submitting and polling a real service."""

from __future__ import annotations

import asyncio
import time

from faults_support import SOAK
from protolens import AsyncClient
from protolens.errors import ProtolensError

CLIENTS = 200
JOBS_PER_CLIENT = 3 if SOAK else 1
FAST = {"steps": 1, "transforms": "small", "start": "constant", "equidistant_steps": 0}


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] if ordered else 0.0


async def test_200_concurrent_clients_submit_and_poll(api, worker, report) -> None:
    address = f"127.0.0.1:{api.port}"
    create_s: list[float] = []
    get_s: list[float] = []
    errors: list[str] = []
    finished: dict[str, str] = {}

    async def one_client(i: int) -> None:
        async with AsyncClient(address, timeout=60) as client:
            for k in range(JOBS_PER_CLIENT):
                t = time.perf_counter()
                try:
                    job = await client.create_prototype_job(
                        "tiny", [i % 5], config=FAST, seed=i * 10 + k
                    )
                except ProtolensError as exc:
                    errors.append(f"create: {exc}")
                    continue
                create_s.append(time.perf_counter() - t)
                while True:
                    t = time.perf_counter()
                    try:
                        got = await client.get_job(job)
                    except ProtolensError as exc:
                        errors.append(f"get: {exc}")
                        await asyncio.sleep(0.2)
                        continue
                    get_s.append(time.perf_counter() - t)
                    if got.state in ("SUCCEEDED", "FAILED", "CANCELLED"):
                        finished[got.name] = got.state
                        break
                    await asyncio.sleep(0.2)

    start = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(one_client(i) for i in range(CLIENTS))), 240)
    wall = time.perf_counter() - start
    jobs = CLIENTS * JOBS_PER_CLIENT
    assert errors == []
    assert len(finished) == jobs and set(finished.values()) == {"SUCCEEDED"}
    # none stored twice: one 'succeeded' event per job
    queue = api.queue
    for name in finished:
        events = await queue.redis.xrange(queue.keys.events(name.split("/")[1]))
        assert [f[b"message"] for _, f in events].count(b"succeeded") == 1
    report(
        f"load: {CLIENTS} concurrent clients (one process), submit + poll",
        f"{jobs}/{jobs} jobs succeeded in {wall:.1f} s, {len(errors)} errors",
        clients=CLIENTS,
        jobs=jobs,
        rpcs=len(create_s) + len(get_s),
        create_p99_ms=round(p99(create_s) * 1000, 1),
        get_p99_ms=round(p99(get_s) * 1000, 1),
        errors=len(errors),
        lost=0,
        wall_s=round(wall, 1),
    )
