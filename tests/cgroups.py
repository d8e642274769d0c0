"""A real cgroup with a CPU quota for tests (root with a writable cgroup ``cpu``
hierarchy, as on CI; the test is skipped elsewhere)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest


def _writable_cpu_hierarchy() -> tuple[Path, str] | None:
    """A cgroup folder where this process may make a child with a CPU quota."""
    if os.geteuid() != 0:
        return None
    v2 = Path("/sys/fs/cgroup")
    if (v2 / "cgroup.controllers").exists() and "cpu" in (
        v2 / "cgroup.subtree_control"
    ).read_text().split():
        return v2, "v2"
    v1 = Path("/sys/fs/cgroup/cpu")
    if (v1 / "cpu.cfs_quota_us").exists() and os.access(v1, os.W_OK):
        return v1, "v1"
    return None


@contextlib.contextmanager
def cpu_quota_cgroup(cpus: float) -> Iterator[Path]:
    """A new cgroup limited to ``cpus`` CPUs, removed after; a command joins it with
    ``in_cgroup``. Skips the test where none can be made."""
    found = _writable_cpu_hierarchy()
    if found is None:
        pytest.skip("no writable cgroup cpu hierarchy (needs root, as on CI)")
    root, kind = found
    group = root / f"protolens-test-{uuid.uuid4().hex[:8]}"
    try:
        group.mkdir()
    except OSError as e:
        pytest.skip(f"cannot make a cgroup here: {e}")
    try:
        if kind == "v2":
            (group / "cpu.max").write_text(f"{int(cpus * 100000)} 100000\n")
        else:
            (group / "cpu.cfs_period_us").write_text("100000\n")
            (group / "cpu.cfs_quota_us").write_text(f"{int(cpus * 100000)}\n")
        yield group
    finally:
        group.rmdir()


def in_cgroup(group: Path, argv: list[str]) -> list[str]:
    """``argv`` run as a process that first joins ``group``."""
    return ["sh", "-c", f'echo $$ > {group / "cgroup.procs"} && exec "$@"', "sh", *argv]
