"""Progress writes are rate-limited (``Settings.progress_interval_s``, worker/throttle.py).

The engine reports every ``progress_every`` steps; the worker writes a job's progress at
the start, at most every interval in between, and its last step whatever was held back.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time

from protolens_server.queue.records import JobPhase, JobState
from protolens_server.worker import Worker
from protolens_server.worker.throttle import Throttle
from worker_helpers import tiny_spec


async def test_throttle_passes_the_first_call_then_one_per_interval_and_the_last_late():
    loop = asyncio.get_running_loop()
    seen: list[int] = []
    latest = [0]
    throttle = Throttle(loop, lambda: seen.append(latest[0]), 0.1)

    def engine() -> None:  # 50 reports over about 0.25 s, from another thread
        for i in range(1, 51):
            latest[0] = i
            throttle.call()
            time.sleep(0.005)

    thread = threading.Thread(target=engine)
    started = time.monotonic()
    thread.start()
    await asyncio.to_thread(thread.join)
    took = time.monotonic() - started
    # the trailing call is due one interval after the last; every callback runs once the
    # loop gets to it (late, on a loaded machine)
    for _ in range(500):
        if len(seen) == throttle.passed and not throttle._timer_set:
            break
        await asyncio.sleep(0.01)
    assert throttle.calls == 50
    assert 2 <= len(seen) <= took / 0.1 + 2, (seen, took)
    # the callback reads the latest state when the loop runs it: the last one saw the end
    assert seen[-1] == 50 and seen == sorted(seen)


async def test_forced_calls_and_interval_zero_pass_every_call():
    loop = asyncio.get_running_loop()
    seen: list[str] = []
    forced = Throttle(loop, lambda: seen.append("f"), 10.0)
    every = Throttle(loop, lambda: seen.append("e"), 0.0)
    for _ in range(3):
        forced.call(force=True)
        every.call()
    await asyncio.sleep(0.05)
    assert seen.count("f") == 3 and seen.count("e") == 3


async def test_worker_writes_progress_at_most_every_interval_and_the_final_step(
    wqueue, worker_settings, tiny_digest
):
    settings = worker_settings.model_copy(update={"progress_interval_s": 0.3})
    steps = 400  # progress_every=1: the engine reports 400 times
    record, _ = await wqueue.submit(tiny_spec(tiny_digest, steps=steps))
    worker = Worker(settings, name="w-throttle")
    started = time.monotonic()
    await asyncio.wait_for(worker.run(burst=True), 120)
    took = time.monotonic() - started
    events = [e async for _, e in wqueue.watch(record.job_id)]
    optimising = [e for e in events if e.phase == JobPhase.OPTIMISING]
    # the start is written at once: step 0, or a step or two later on a loaded machine (the
    # write publishes the newest state when the loop gets to it: a loaded full run saw step 1)
    assert len(optimising) >= 2 and optimising[0].step <= steps // 10 < optimising[-1].step
    assert len(optimising) <= took / 0.3 + 3, (len(optimising), took)
    # after the step-0 write, one per interval; the last step's writes (the engine's forced
    # one and the finishing phase's, which can both land in OPTIMISING) may follow sooner
    timed = [e for e in optimising[1:] if e.step < steps]
    gaps = [b.time - a.time for a, b in itertools.pairwise(timed)]
    assert all(g >= 0.25 for g in gaps), [(e.step, round(e.time % 100, 3)) for e in optimising]
    assert [e.step for e in events] == sorted(e.step for e in events)  # in order
    assert events[-1].state == JobState.SUCCEEDED and events[-1].step == steps
    done = await wqueue.get(record.job_id)
    assert done.state == JobState.SUCCEEDED and done.step == steps


async def test_a_cancel_ends_a_throttled_job_within_a_second(wqueue, worker_settings, tiny_digest):
    settings = worker_settings.model_copy(update={"progress_interval_s": 5.0, "heartbeat_s": 5.0})
    record, _ = await wqueue.submit(tiny_spec(tiny_digest, steps=5000))
    worker = Worker(settings, name="w-throttle-cancel")
    task = asyncio.create_task(worker.run())
    try:
        async for _, event in wqueue.watch(record.job_id):
            if event.phase == JobPhase.OPTIMISING:
                break  # step 0: the engine runs; no progress write for the next 5 s
        await asyncio.sleep(0.3)
        asked = time.monotonic()
        await wqueue.cancel(record.job_id, tenant="team-a")
        events = [e async for _, e in wqueue.watch(record.job_id)]
        assert events[-1].state == JobState.CANCELLED
        # cancel_poll_s (0.1 s) plus a step, whatever the progress and heartbeat intervals
        assert time.monotonic() - asked < 1.0
        final = await wqueue.get(record.job_id)
        assert 0 < final.step < 5000  # the step it stopped at, written with the cancel
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, 30)
