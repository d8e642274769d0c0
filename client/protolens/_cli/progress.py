"""A progress bar fed by WatchJob events (shared by ``submit --wait``, ``watch``, ``demo``).

The bar says what the job is doing at every moment: its state, and while it runs the
worker's phase (loading the model, preparing the start, optimising, scoring,
storing) with the worker's own words for the slow ones. The step rate comes from the
times the worker reported its steps (``Progress.update_time``), not from when the
events arrived here, so watching a finished job replays its real rate instead of
thousands of steps per second, and the last line always shows the final state.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from tqdm import tqdm

from protolens import names
from protolens.types import Job, Progress, WatchEvent

_PHASE_WORDS = {
    "LOADING_MODEL": "loading model",
    "PREPARING": "preparing",
    "OPTIMISING": "optimising",
    "SCORING": "scoring",
    "STORING": "storing",
}
# (tqdm puts ", " before the postfix)
BAR_FORMAT = "{desc} {percentage:3.0f}%|{bar:20}| {n_fmt}/{total_fmt} [{elapsed}]{postfix}"
# Until the first event: no bar, since no step count is known yet (it drew "0/1").
WAITING_FORMAT = "{desc} [{elapsed}]{postfix}"
WAITING = "waiting for the job's first event"


class StepRate:
    """Steps per second over the optimising phase, from the worker's report times."""

    def __init__(self) -> None:
        self._first: tuple[float, int] | None = None
        self.value: float | None = None

    def add(self, progress: Progress) -> None:
        when = progress.update_time
        if when is None or progress.phase != "OPTIMISING":
            return  # other phases (and the final events) would drag the rate down
        t = when.timestamp()
        if self._first is None or progress.step < self._first[1]:  # first, or a retry
            self._first, self.value = (t, progress.step), None
            return
        t0, s0 = self._first
        if t > t0 and progress.step > s0:
            self.value = (progress.step - s0) / (t - t0)


def describe(event: WatchEvent, rate: float | None) -> str:
    """The words after the bar: state, phase, rate, best probability."""
    p = event.progress
    parts = [event.state]
    if event.state == "RUNNING" and p.phase:
        parts.append(_PHASE_WORDS.get(p.phase, p.phase.lower()))
    if rate is not None:
        parts.append(f"{rate:.1f} step/s")
    parts.append(f"p={p.best_probability:.3f}")
    text = " ".join(parts)
    if event.state == "RUNNING" and p.phase not in ("", "OPTIMISING") and p.phase_message:
        text += f": {p.phase_message}"
    elif event.finished and event.message and event.state != "SUCCEEDED":
        text += f": {event.message}"
    return text


def follow(client: Any, job: Job | str, *, file: TextIO | None = None) -> WatchEvent | None:
    """Show a bar until the job ends; returns the last event (None if there was none)."""
    last: WatchEvent | None = None
    rate = StepRate()
    label = job.id if isinstance(job, Job) else names.JOBS.id(str(job))
    with tqdm(
        total=1, desc=label[:12], file=file or sys.stderr, leave=True, bar_format=WAITING_FORMAT,
        postfix=WAITING,
    ) as bar:  # fmt: skip
        for event in client.watch_job(job):
            if last is None:
                bar.bar_format = BAR_FORMAT
            last = event
            rate.add(event.progress)
            total = max(event.progress.total_steps, 1)
            if bar.total != total:
                bar.total = total
            bar.n = total if event.state == "SUCCEEDED" else min(event.progress.step, total)
            bar.set_postfix_str(describe(event, rate.value), refresh=False)
            bar.refresh()
    return last
