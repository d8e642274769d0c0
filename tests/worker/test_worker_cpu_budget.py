"""The CPU budget (``cpu_budget.py``): torch's threads follow a cgroup CPU quota.

The first tests read cgroup trees written in the kernel's own file formats (v2
``cpu.max``, v1 ``cpu.cfs_quota_us``) under a temporary folder; the last puts a real
process into a real cgroup with a one-CPU quota (root on a machine with a writable
cgroup ``cpu`` hierarchy, as CI's; skipped elsewhere) and asks it what it chose.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cgroups import cpu_quota_cgroup, in_cgroup
from protolens_server import cpu_budget


def _tree(tmp_path: Path, kind: str, files: dict[str, str], own: str) -> tuple[Path, Path]:
    """A cgroup mount under ``tmp_path/cg`` holding ``files`` (relative path -> text),
    and /proc/self/cgroup and /proc/self/mountinfo files saying the process is in
    ``own``."""
    point = tmp_path / "cg"
    for rel, text in files.items():
        (point / rel).parent.mkdir(parents=True, exist_ok=True)
        (point / rel).write_text(text)
    (point / own.lstrip("/")).mkdir(parents=True, exist_ok=True)
    if kind == "v2":
        mount = f"35 24 0:30 / {point} rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
        cgroup = f"0::{own}\n"
    else:
        mount = f"32 31 0:29 / {point} rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
        cgroup = f"5:memory:/elsewhere\n4:cpu,cpuacct:{own}\n0::/\n"
    mountinfo, proc = tmp_path / "mountinfo", tmp_path / "cgroup"
    mountinfo.write_text("31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n" + mount)
    proc.write_text(cgroup)
    return proc, mountinfo


def test_v2_quota_is_the_tightest_on_the_way_up(tmp_path: Path) -> None:
    proc, mountinfo = _tree(
        tmp_path,
        "v2",
        {
            "cpu.max": "max 100000\n",
            "kubepods/cpu.max": "150000 100000\n",
            "kubepods/pod1/cpu.max": "max 100000\n",
        },
        "/kubepods/pod1",
    )
    assert cpu_budget.cgroup_cpu_limit(proc, mountinfo) == pytest.approx(1.5)


def test_v2_without_a_quota_is_none(tmp_path: Path) -> None:
    proc, mountinfo = _tree(tmp_path, "v2", {"cpu.max": "max 100000\n"}, "/user.slice")
    assert cpu_budget.cgroup_cpu_limit(proc, mountinfo) is None


def test_v1_quota_and_unlimited(tmp_path: Path) -> None:
    files = {
        "docker/cpu.cfs_quota_us": "250000\n",
        "docker/cpu.cfs_period_us": "100000\n",
        "cpu.cfs_quota_us": "-1\n",
        "cpu.cfs_period_us": "100000\n",
    }
    proc, mountinfo = _tree(tmp_path, "v1", files, "/docker")
    assert cpu_budget.cgroup_cpu_limit(proc, mountinfo) == pytest.approx(2.5)
    (tmp_path / "cg" / "docker" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cpu_budget.cgroup_cpu_limit(proc, mountinfo) is None


def test_unreadable_or_missing_files_mean_no_quota(tmp_path: Path) -> None:
    assert cpu_budget.cgroup_cpu_limit(tmp_path / "no", tmp_path / "none") is None
    proc, mountinfo = _tree(tmp_path, "v2", {"cpu.max": "garbage\n"}, "/")
    assert cpu_budget.cgroup_cpu_limit(proc, mountinfo) is None


_CHILD = (
    "import torch; from protolens_server import cpu_budget as c; "
    "print(c.available_cpus(), c.configure_torch_threads(), torch.get_num_threads())"
)


@pytest.mark.skipif(cpu_budget.available_cpus() < 2, reason="needs two CPUs to cap at one")
def test_a_real_one_cpu_cgroup_caps_torch_threads() -> None:
    with cpu_quota_cgroup(1.0) as group:
        out = subprocess.run(
            in_cgroup(group, [sys.executable, "-c", _CHILD]),
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout.split()
    assert out == ["1", "1", "1"], out
    free = subprocess.run(
        [sys.executable, "-c", _CHILD],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.split()
    assert free[0] == str(cpu_budget.available_cpus())
    assert int(free[1]) == int(free[2]) >= 2


@pytest.mark.parametrize("engine_process", ["false", "true"])
async def test_a_worker_sets_the_threads_it_is_told(
    wqueue, worker_settings, tiny_digest, tmp_path, processes, engine_process
):
    """``PROTOLENS_TORCH_THREADS`` reaches the engine, in the worker or in its child (5: not
    what torch picks by itself on a 2-core CI machine)."""
    from protolens_server.queue.records import JobState
    from worker_helpers import WorkerProcess, alive, tiny_spec, wait_for

    w = WorkerProcess(
        worker_settings,
        "wthreads",
        tmp_path / "w.log",
        env={"PROTOLENS_TORCH_THREADS": "5", "PROTOLENS_ENGINE_PROCESS": engine_process},
    )
    processes.append(w)
    await wait_for(lambda: alive(wqueue, w.name), 60, "the worker to start")
    record, _ = await wqueue.submit(tiny_spec(tiny_digest, (1,), steps=4))

    async def finished():
        rec = await wqueue.get(record.job_id)
        return rec if rec.state.finished else None

    done = await wait_for(finished, 90, "the job")
    assert done.state == JobState.SUCCEEDED, done.error + w.output()[-3000:]
    line = "engine process: torch threads: 5" if engine_process == "true" else "torch threads: 5"
    assert line in w.output(), w.output()[-3000:]


def test_threads_for_takes_the_free_cpus_within_the_budget() -> None:
    assert cpu_budget.threads_for(2, None) == 2  # nothing measured: the budget
    assert cpu_budget.threads_for(2, 1.9) == 2
    assert cpu_budget.threads_for(2, 1.2) == 1
    assert cpu_budget.threads_for(2, 0.0) == 1  # never 0
    assert cpu_budget.threads_for(4, 60.0) == 4  # a big node's free cores: the quota's 4


def _hog() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


@pytest.mark.skipif(cpu_budget.available_cpus() < 2, reason="needs two CPUs")
def test_free_cpus_sees_a_busy_process_but_not_its_own_work() -> None:
    free = cpu_budget.FreeCpus()
    hog = _hog()
    try:
        time.sleep(0.5)
        free.free()  # from here on the hog is running
        time.sleep(1.5)
        beside_hog = free.free()
    finally:
        hog.kill()
        hog.wait()
    assert beside_hog is not None
    assert beside_hog <= cpu_budget.available_cpus() - 0.6, beside_hog


@pytest.mark.skipif(cpu_budget.available_cpus() < 2, reason="needs two CPUs")
@pytest.mark.parametrize("engine_process", ["false", "true"])
async def test_a_worker_beside_a_busy_process_runs_its_batch_on_fewer_threads(
    wqueue, worker_settings, tiny_digest, tmp_path, processes, engine_process
):
    """No ``PROTOLENS_TORCH_THREADS``: the worker's budget is every CPU here (2 or more),
    and a process spinning on one of them leaves at least one busy, so the batch runs on
    fewer threads (one on a 2-core machine; the worker's metric and log say so, and the
    engine's own thread runs on that many); torch alone would use every core."""
    from protolens_server.queue.records import JobState
    from worker_helpers import WorkerProcess, alive, metric, scrape, tiny_spec, wait_for

    w = WorkerProcess(
        worker_settings,
        "wbusy",
        tmp_path / "w.log",
        env={"PROTOLENS_ENGINE_PROCESS": engine_process},
    )
    processes.append(w)
    await wait_for(lambda: alive(wqueue, w.name), 60, "the worker to start")
    hog = _hog()
    try:
        await asyncio.sleep(1.5)
        record, _ = await wqueue.submit(tiny_spec(tiny_digest, (1,), steps=4))

        async def finished():
            rec = await wqueue.get(record.job_id)
            return rec if rec.state.finished else None

        done = await wait_for(finished, 120, "the job")
    finally:
        hog.kill()
        hog.wait()
    assert done.state == JobState.SUCCEEDED, done.error + w.output()[-3000:]
    port = int(await wqueue.redis.hget(wqueue.keys.worker_info(w.name), "metrics_port"))
    threads = metric(scrape(port), "protolens_torch_threads")
    budget = cpu_budget.available_cpus()  # the worker's too: same machine, no limit of its own
    assert 1 <= threads < budget, w.output()[-3000:]
    assert f"torch threads: {threads:.0f} of {budget} " in w.output(), w.output()[-3000:]
    # ... and the engine runs on them: torch's count is per thread, and it was once set on
    # the event loop while the engine's executor thread kept the budget (run_engine logs
    # the count in its own thread)
    assert f"engine running on {threads:.0f} torch thread(s)" in w.output(), w.output()[-3000:]


@pytest.mark.skipif(cpu_budget.available_cpus() < 2, reason="needs two CPUs")
def test_a_reading_too_short_to_tell_keeps_the_last_choice(monkeypatch) -> None:
    """Back-to-back batches leave no time to measure: the count chosen beside a busy
    process stays (it once went back to the budget and failed the batch logging None)."""
    import torch

    before = torch.get_num_threads()
    # The budget is capped by torch's own count, which the module reads once per process:
    # an earlier test in this xdist worker may have left torch on one thread by then.
    monkeypatch.setattr(cpu_budget, "_torch_default", cpu_budget.available_cpus())
    try:
        threads = cpu_budget.TorchThreads()
        hog = _hog()
        try:
            time.sleep(1.5)
            chosen = threads.before_batch()
        finally:
            hog.kill()
            hog.wait()
        assert chosen < threads.budget
        assert threads.before_batch() == chosen == torch.get_num_threads()  # at once after
    finally:
        torch.set_num_threads(before)
