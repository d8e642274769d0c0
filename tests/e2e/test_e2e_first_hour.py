"""The first hour against a real stack: progress that says what the worker does, a watch that
ends on the job's real end, ``AsyncClient`` jobs that wait, and one file format for a
prototype whether it was made locally or by the service."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from child_env import child_env
from protolens import AsyncClient, Client
from protolens.cli import main as cli_main
from protolens_server.api.stack import Stack

pytestmark = pytest.mark.xdist_group("e2e")


def _ensure_worker(stack: Stack) -> None:
    if not any(w.alive() for w in stack.worker_procs):
        stack.add_worker()


def test_watch_events_say_what_the_worker_is_doing(stack: Stack) -> None:
    _ensure_worker(stack)
    with Client(stack.address, timeout=30) as client:
        job = client.create_prototype_job(
            "tiny", ["cherry"], config={"steps": 40, "progress_every": 10}, seed=11,
            reference_set="tinyref",
        )  # fmt: skip
        events = list(client.watch_job(job, timeout=120))
    running = [e for e in events if e.state == "RUNNING"]
    phases = [e.progress.phase for e in running]
    assert {"PREPARING", "OPTIMISING", "SCORING"} <= set(phases), phases
    order = ["LOADING_MODEL", "PREPARING", "OPTIMISING", "SCORING"]
    seen = [p for p in dict.fromkeys(phases) if p in order]
    assert seen == sorted(seen, key=order.index), seen  # never back to an earlier phase
    assert all(e.progress.update_time is not None for e in running if e.progress.phase)
    preparing = next(e for e in running if e.progress.phase == "PREPARING")
    assert "equidistant start" in preparing.progress.phase_message
    scoring = next(e for e in running if e.progress.phase == "SCORING")
    assert "tinyref" in scoring.progress.phase_message and scoring.progress.step == 40
    assert events[-1].state == "SUCCEEDED" and events[-1].progress.phase == ""


def test_watch_after_a_cancel_ends_on_cancelled(stack: Stack, capsys) -> None:
    _ensure_worker(stack)
    with Client(stack.address, timeout=30) as client:
        job = client.create_prototype_job(
            "tiny", ["date"], config={"steps": 10_000, "progress_every": 20}, seed=12
        )
        codes: list[int] = []
        argv = ["watch", "--address", stack.address, job.id]
        watcher = threading.Thread(target=lambda: codes.append(cli_main(argv)))
        watcher.start()
        deadline = time.monotonic() + 60
        while client.get_job(job).progress.step < 40 and time.monotonic() < deadline:
            time.sleep(0.1)
        client.cancel_job(job)
        watcher.join(60)
    err = capsys.readouterr().err
    assert codes == [1]
    bar = err.replace("\r", "\n").strip().splitlines()
    assert "CANCELLED" in bar[-1] and "RUNNING" not in bar[-1], bar[-3:]
    # before the first event: no step count yet, so no bar ("0/1") but what it waits for
    assert bar[0].endswith("waiting for the job's first event") and "/" not in bar[0], bar[0]


async def test_async_client_jobs_have_result(stack: Stack) -> None:
    _ensure_worker(stack)
    async with AsyncClient(stack.address, timeout=30) as client:
        job = await client.create_prototype_job("tiny", ["apple"], config={"steps": 6}, seed=13)
        done = await job.result(timeout=120)
        listed, _ = await client.list_jobs(page_size=5)
        again = await listed[0].result(timeout=30)  # every job the client returns can wait
    assert done.state == "SUCCEEDED" and done.id == job.id and again.finished


def test_local_and_service_files_share_names_and_keys(
    stack: Stack, e2e_store: Path, tmp_path: Path, capsys
) -> None:
    _ensure_worker(stack)
    args = ["--target", "banana", "--steps", "6", "--seed", "3"]
    local, remote = tmp_path / "local", tmp_path / "service"
    code = cli_main(["generate", "--model", str(e2e_store / "tiny.pt"), *args, "--out", str(local)])
    assert code == 0, capsys.readouterr().err
    submit = ["submit", "--address", stack.address, "--model", "tiny", *args]
    code = cli_main([*submit, "--wait", "--out", str(remote)])
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in local.iterdir()) == ["1-banana-0.json", "1-banana-0.png"]
    assert sorted(p.name for p in remote.iterdir()) == [
        "1-banana-0.json", "1-banana-0.png", "job.json",
    ]  # fmt: skip
    mine, theirs = (json.loads((d / "1-banana-0.json").read_text()) for d in (local, remote))

    def shape(record: dict) -> dict:
        return {
            k: sorted(v) if isinstance(v, dict) else type(v).__name__ for k, v in record.items()
        }

    assert {k: v for k, v in shape(mine).items() if k != "scores"} == {
        k: v for k, v in shape(theirs).items() if k != "scores"
    }
    assert set(mine["top5"][0]) == set(theirs["top5"][0]) == {"index", "name", "probability"}
    assert mine["file"] == theirs["file"] == "1-banana-0.png"
    assert mine["target"] == theirs["target"]
    assert mine["provenance"]["model_digest"] == theirs["provenance"]["model_digest"]
    assert theirs["name"].startswith("jobs/") and mine["name"] == ""


def test_the_gallery_of_a_keyless_stack_says_so_and_reads_its_defaults(stack: Stack) -> None:
    """On `protolens up` (no keys) the footer said 'with your key: you see your tenant's
    jobs', a job run to convergence (the default) read '0 steps', and the compare page
    named a model store without saying how `up` gets one."""
    import html
    import re
    import urllib.request

    _ensure_worker(stack)
    with Client(stack.address, timeout=30) as client:
        job = client.create_prototype_job("tiny", ["cherry"], config={"max_steps": 8}, seed=3)
        job = client.wait(job, timeout=120)
    assert job.succeeded and job.config["steps"] == 0
    web = stack.start_web()

    def text(path: str) -> str:
        page = urllib.request.urlopen(f"{web}{path}", timeout=30).read().decode()
        return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())

    page = text(f"jobs/{job.id}")
    assert "until converged (at most 8 steps)" in page and " 0 steps" not in page
    assert "without a key: it lets keyless callers in" in page and "with your key" not in page
    assert "protolens up --model-store DIR" in text("compare")


@contextlib.contextmanager
def _sigint_not_ignored() -> Iterator[None]:
    """Children started inside get Ctrl-C as a terminal delivers it. A process started in
    the background by a non-interactive shell (``cmd &``, as CI runners may start the suite)
    ignores SIGINT, and an ignored signal stays ignored in every child it execs: the CLI
    then never sees the test's Ctrl-C. A handled one is reset to its default at exec."""
    import signal

    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("command", ["submit", "watch"])
def test_ctrl_c_while_waiting_says_the_job_goes_on(stack: Stack, command: str) -> None:
    """Ctrl-C on `submit --wait` or `watch` printed 'protolens: interrupted' and nothing of
    the job, which goes on running on the service: now the job's id and how to follow or
    cancel it."""
    import signal
    import subprocess
    import sys

    _ensure_worker(stack)
    address = ("--address", stack.address)
    env = child_env()
    with Client(stack.address, timeout=30) as client:
        before = {j.id for j in client.list_jobs(page_size=50)[0]}
        if command == "submit":
            args = ["submit", *address, "--model", "tiny", "--target", "cherry", "--steps",
                    "10000", "--seed", "97", "--wait"]  # fmt: skip
            with _sigint_not_ignored():
                proc = subprocess.Popen(
                    [sys.executable, "-m", "protolens.cli", *args],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                )  # fmt: skip
            deadline = time.monotonic() + 60
            while not (new := [j for j in client.list_jobs(page_size=50)[0] if j.id not in before]):
                assert time.monotonic() < deadline and proc.poll() is None, "no job created"
                time.sleep(0.2)
            (job,) = new
        else:
            job = client.create_prototype_job("tiny", ["cherry"], config={"steps": 10000}, seed=98)
            with _sigint_not_ignored():
                proc = subprocess.Popen(
                    [sys.executable, "-m", "protolens.cli", "watch", *address, job.id],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                )  # fmt: skip
        try:
            time.sleep(1.5)  # the bar is up
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 130, err
            last = err.replace("\r", "\n").strip().splitlines()[-1]
            assert last == (
                f"protolens: stopped waiting; the job goes on (protolens watch {job.id} to "
                f"follow it, protolens cancel {job.id} to stop it)"
            ), err
            assert "Traceback" not in err
            assert client.get_job(job).state in ("QUEUED", "RUNNING")  # not cancelled
        finally:
            if proc.poll() is None:
                proc.kill()
            client.cancel_job(job)
