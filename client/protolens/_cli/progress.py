"""A tqdm progress bar fed by WatchJob events (shared by ``submit --wait``, ``watch``, ``demo``)."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from tqdm import tqdm

from protolens.types import Job, WatchEvent


def follow(client: Any, job: Job | str, *, file: TextIO | None = None) -> WatchEvent | None:
    """Show a bar until the job ends; returns the last event (None if there was none)."""
    last: WatchEvent | None = None
    label = job.id if isinstance(job, Job) else str(job).removeprefix("jobs/")
    with tqdm(total=1, unit="step", desc=label[:12], file=file or sys.stderr, leave=True) as bar:
        for event in client.watch_job(job):
            last = event
            total = max(event.progress.total_steps, 1)
            if bar.total != total:
                bar.total = total
            bar.n = min(event.progress.step, total)
            if event.state == "SUCCEEDED":
                bar.n = total
            bar.set_postfix(state=event.state, p=f"{event.progress.best_probability:.3f}")
            bar.refresh()
    return last
