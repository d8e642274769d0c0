"""``Throttle``: pass a call from the engine thread to the event loop at most every ``interval_s``.

The engine reports progress every ``progress_every`` steps; on a fast engine that is tens
of reports a second, and each one written to Redis costs the worker's event loop a round
trip and a hand-over of the GIL to and from the engine thread (the engine's own time).
Progress written a few times a second says as much to a watcher.

The first call and forced ones (the end of a run) go through at once; a call held back is
made once the interval since the last one has passed (a timer on the loop), so what the
loop was last given is never more than ``interval_s`` older than the newest call. The
callback takes no arguments: it publishes the latest state, which the caller keeps.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable


class Throttle:
    """``throttle.call(force=...)`` from any thread runs ``callback`` on ``loop``, rate-limited.

    ``interval_s`` 0: every call goes through (one loop callback each).
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None], interval_s: float
    ) -> None:
        self.loop = loop
        self.callback = callback
        self.interval_s = interval_s
        self.calls = 0  # calls made
        self.passed = 0  # of which passed to the loop (at once or by the timer)
        self._lock = threading.Lock()
        self._last = float("-inf")  # monotonic time of the last pass
        self._held = False  # a call since the last pass was held back
        self._timer_set = False  # a trailing pass is scheduled

    def call(self, *, force: bool = False) -> None:
        """Ask for ``callback`` on the loop: now if due (or forced), else once it is due."""
        with self._lock:
            self.calls += 1
            now = time.monotonic()
            wait = self._last + self.interval_s - now
            if force or wait <= 0:
                self._last, self._held = now, False
                self.passed += 1
                self.loop.call_soon_threadsafe(self.callback)
                return
            self._held = True
            if not self._timer_set:
                self._timer_set = True
                self.loop.call_soon_threadsafe(self.loop.call_later, wait, self._trailing)

    def _trailing(self) -> None:
        """On the loop: pass the held call, unless a pass since made it moot (or is too
        recent: then wait for the rest of its interval)."""
        with self._lock:
            self._timer_set = False
            if not self._held:
                return
            wait = self._last + self.interval_s - time.monotonic()
            if wait > 0:
                self._timer_set = True
                self.loop.call_later(wait, self._trailing)
                return
            self._last, self._held = time.monotonic(), False
            self.passed += 1
        self.callback()
