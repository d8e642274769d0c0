"""``LoopLagProbe``: how late the API's event loop runs a timer.

Every RPC of every tenant shares one event loop: a CPU-bound call on it (parsing,
validation, a large reply) delays them all by its length. The probe sleeps
``interval_s`` at a time and records how much later than asked it woke up in
``protolens_event_loop_lag_seconds``; ``take_worst()`` gives the worst lag since
the last call (tests and the fault report read it).
"""

from __future__ import annotations

import asyncio
import contextlib

from protolens_server import metrics


class LoopLagProbe:
    def __init__(self, interval_s: float = 0.02) -> None:
        self.interval_s = interval_s
        self._worst_s = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="protolens-loop-lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def take_worst(self) -> float:
        """The worst lag (seconds) seen since the last call; resets it."""
        worst, self._worst_s = self._worst_s, 0.0
        return worst

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time()
            await asyncio.sleep(self.interval_s)
            lag = max(0.0, loop.time() - asked - self.interval_s)
            metrics.EVENT_LOOP_LAG.observe(lag)
            self._worst_s = max(self._worst_s, lag)
