"""How many CPUs this process may use, and torch's thread count to match.

Two ways torch's own choice (one intra-op thread per core it can see) goes wrong:

- **A CPU limit.** torch ignores a container's CPU quota. A worker pod limited to 2 CPUs
  on a 64-core node runs 64 threads on a quota of 2: they use up each period's quota in
  a few milliseconds and every OpenMP region then waits out the throttled rest of the
  period for its last thread. The *budget* is the affinity mask's size capped by the
  tightest cgroup CPU quota above the process (cgroup v2 ``cpu.max``, v1
  ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``), rounded up.
- **Busy neighbours.** OpenMP threads wait for each other at the end of every parallel
  region; when another process holds one of the cores, the thread on it runs only in
  its time slices and every region waits for it. Beside one busy process on the 2-core
  VM, EfficientNet-Lite0 ran 3.0x and a 32-px CNN 4.6x faster on one thread than on
  torch's two (``bench/thread_contention.py``). ``FreeCpus`` measures how many of the
  process's CPUs other processes kept busy since its last reading (``/proc/stat`` less
  the process's own CPU time), and ``threads_for`` takes the free ones, within the budget.

``Settings.torch_threads`` (a fixed count) overrides both.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

from protolens_server.logging import get_logger

log = get_logger("protolens.worker")

PROC_CGROUP = Path("/proc/self/cgroup")
PROC_MOUNTINFO = Path("/proc/self/mountinfo")
PROC_STAT = Path("/proc/stat")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _mounts(mountinfo: Path) -> list[tuple[str, str, str]]:
    """(mount point, root within the hierarchy, "v2" or "v1") of the cgroup mounts that
    can hold a CPU quota."""
    out: list[tuple[str, str, str]] = []
    try:
        lines = mountinfo.read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        after = line.split(" - ", 1)[1].split()
        fstype = after[0] if after else ""
        root, point = fields[3], fields[4]
        if fstype == "cgroup2":
            out.append((point, root, "v2"))
        elif fstype == "cgroup" and "cpu" in (after[2] if len(after) > 2 else "").split(","):
            out.append((point, root, "v1"))
    return out


def _process_paths(proc_cgroup: Path) -> dict[str, str]:
    """The process's cgroup path per hierarchy: "v2" for the unified one, "v1" for the
    one holding the ``cpu`` controller."""
    paths: dict[str, str] = {}
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return paths
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            paths["v2"] = path
        elif "cpu" in controllers.split(","):
            paths["v1"] = path
    return paths


def _quota(directory: Path, kind: str) -> float | None:
    """The CPU quota set in one cgroup directory, in CPUs; None where there is none."""
    try:
        if kind == "v2":
            quota, _, period = (directory / "cpu.max").read_text().strip().partition(" ")
            if quota == "max":
                return None
            return int(quota) / int(period or "100000")
        quota_us = int((directory / "cpu.cfs_quota_us").read_text())
        if quota_us <= 0:
            return None
        return quota_us / int((directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError, ZeroDivisionError):
        return None


def cgroup_cpu_limit(
    proc_cgroup: Path = PROC_CGROUP, mountinfo: Path = PROC_MOUNTINFO
) -> float | None:
    """The tightest CPU quota of the cgroups this process is in and their ancestors, in
    CPUs (1.5 = one and a half); None where no quota is set or nothing can be read."""
    paths = _process_paths(proc_cgroup)
    limits: list[float] = []
    for point, root, kind in _mounts(mountinfo):
        path = paths.get(kind)
        if path is None:
            continue
        # Inside a cgroup namespace the mount's root is the process's own cgroup ("/");
        # on a host-mounted hierarchy the path is relative to the mount's root.
        relative = path[len(root) :] if root != "/" and path.startswith(root) else path
        directory = Path(point) / relative.lstrip("/")
        if not directory.is_dir():
            directory = Path(point)
        while True:
            q = _quota(directory, kind)
            if q is not None:
                limits.append(q)
            if directory == Path(point) or directory.parent == directory:
                break
            directory = directory.parent
    return min(limits) if limits else None


def available_cpus() -> int:
    """The CPUs this process may use: its affinity mask, capped by a cgroup quota
    (rounded up, at least 1)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        cpus = min(cpus, max(1, math.ceil(limit - 1e-9)))
    return max(1, cpus)


class FreeCpus:
    """How many of this process's CPUs other processes left free, on average, since the
    previous reading: the busy time ``/proc/stat`` counts on the CPUs of the affinity
    mask, less this process's own CPU time (all its threads). ``None`` where
    ``/proc/stat`` cannot be read (not Linux)."""

    def __init__(self, stat: Path = PROC_STAT) -> None:
        self._stat = stat
        self._last = self._sample()

    def _sample(self) -> tuple[float, float, float, int] | None:
        try:
            cpus = sorted(os.sched_getaffinity(0))
            lines = self._stat.read_text().splitlines()
        except (AttributeError, OSError):
            return None
        wanted = {f"cpu{c}" for c in cpus}
        busy = 0
        for line in lines:
            fields = line.split()
            if fields and fields[0] in wanted and len(fields) >= 9:
                # user nice system idle iowait irq softirq steal: all but idle and iowait
                user, nice, system, _, _, irq, softirq, steal = map(int, fields[1:9])
                busy += user + nice + system + irq + softirq + steal
        own = os.times()
        return (time.monotonic(), busy / _CLOCK_TICKS, own.user + own.system, len(cpus))

    def free(self) -> float | None:
        """The average number of free CPUs since the last call (or since made)."""
        now = self._sample()
        last, self._last = self._last, now
        if now is None or last is None or now[0] - last[0] < 0.05:
            return None
        wall = now[0] - last[0]
        others = max(0.0, (now[1] - last[1]) - (now[2] - last[2])) / wall
        return max(0.0, now[3] - others)


def threads_for(budget: int, free: float | None) -> int:
    """Threads for the next piece of work: the free CPUs (rounded to the nearest, at
    least 1) within ``budget``; the budget where nothing was measured."""
    if free is None:
        return budget
    return max(1, min(budget, math.floor(free + 0.5)))


class TorchThreads:
    """torch's intra-op threads for a worker's engine: ``requested`` if set, else the
    budget (``available_cpus``), and on a CPU device re-chosen before each batch from the
    CPUs other processes left free since the last one (``FreeCpus``, ``threads_for``).

    The count must be set in the thread that runs the work (``before_batch``, ``apply``):
    torch's CPU build keeps OpenMP's thread count per thread, so ``torch.set_num_threads``
    called on the worker's event loop left the executor thread that had loaded the model
    on its old count. Beside one busy process on the 2-core VM, the in-thread engine kept
    two threads while the worker logged one, and the demo's 8 steps took 24 s instead of
    1 s (``tests/worker/test_worker_cpu_budget.py`` now reads the count in the engine's
    own thread)."""

    def __init__(self, requested: int = 0, device: str = "cpu") -> None:
        self.budget = configure_torch_threads(requested)
        adapt = requested == 0 and device.split(":")[0] == "cpu" and self.budget > 1
        self._free = FreeCpus() if adapt else None
        self.threads = self.budget
        self.free: float | None = None  # the last reading, for the log

    def before_batch(self) -> int:
        """Choose the threads for the next batch, set them in the calling thread (call it
        in the thread that runs the batch) and return them; a change is logged."""
        if self._free is not None:
            self.free = self._free.free()
            # a window too short to tell keeps the last choice
            if self.free is not None:
                threads = threads_for(self.budget, self.free)
                if threads != self.threads:
                    self.threads = threads
                    log.info(
                        "torch threads: %d of %d (%.1f CPUs free)", threads, self.budget, self.free
                    )
        return self.apply()

    def apply(self) -> int:
        """Set the chosen count in the calling thread (where it differs) and return it."""
        import torch

        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        return self.threads


_torch_default: int | None = None  # torch's own count, before anything here set another


def configure_torch_threads(requested: int = 0) -> int:
    """Set torch's intra-op threads to ``requested`` (0: ``available_cpus()``, never more
    than torch's own choice) and return the count."""
    global _torch_default
    import torch

    if _torch_default is None:
        _torch_default = torch.get_num_threads()
    threads = requested if requested > 0 else min(_torch_default, available_cpus())
    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    return threads
