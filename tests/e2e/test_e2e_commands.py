"""``protolens up`` and ``protolens demo`` as real commands (subprocesses), with the tiny model."""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from child_env import child_env
from protolens.cli import main as cli_main
from protolens_server.api.stack import free_port

pytestmark = pytest.mark.xdist_group("e2e")


def _env() -> dict[str, str]:
    return child_env(PROTOLENS_DEVICE="cpu", PYTHONUNBUFFERED="1")


def _first_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    """The command's first output line, without ever blocking past ``timeout``."""
    import select

    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, f"no output within {timeout} s"
    return proc.stdout.readline().decode()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_up_serves_until_ctrl_c_then_stops_everything(
    e2e_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    port, metrics_port = free_port(), free_port()
    cmd = [
        sys.executable, "-m", "protolens.cli", "up", "--port", str(port),
        "--metrics-port", str(metrics_port), "--web-port", "0", "--model-store", str(e2e_store),
    ]  # fmt: skip
    temp = Path(tempfile.mkdtemp(prefix="pl-up-t-"))  # short: Unix sockets live in TMPDIR
    env = {**_env(), "TMPDIR": str(temp)}  # its temporary folder goes here
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        first = _first_line(proc, timeout=90)
        assert first.strip() == f"protolens: serving on 127.0.0.1:{port}", first
        gallery = proc.stdout.readline().decode().split()  # printed right after (buffered)
        assert gallery[0] == "gallery:" and gallery[1].startswith("http://127.0.0.1:"), gallery
        with urllib.request.urlopen(gallery[1], timeout=10) as page:  # no key needed on up
            assert page.status == 200 and b"tiny" in page.read()
        # a second `up` on the same port: one line, before starting anything
        again = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=60)
        assert again.returncode == 1 and "Traceback" not in again.stderr
        assert again.stderr.startswith("protolens: PORT_IN_USE: the API cannot listen on")
        out = tmp_path / "out"
        code = cli_main(
            ["submit", "--address", f"127.0.0.1:{port}", "--model", "tiny", "--target", "cherry",
             "--steps", "4", "--config", "start=constant", "--wait", "--out", str(out)]
        )  # fmt: skip
        assert code == 0, capsys.readouterr().err
        assert "SUCCEEDED" in capsys.readouterr().out
        assert sorted(p.suffix for p in out.iterdir()) == [".json", ".json", ".png"]
        assert _listening(metrics_port)
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    rest = proc.stdout.read().decode()
    assert "stopping workers, API and Redis" in rest
    time.sleep(0.2)
    assert not _listening(port) and not _listening(metrics_port)
    assert _processes_with(f"PROTOLENS_GRPC_PORT={port}") == [], "API/worker children left"
    assert _processes_with(str(temp)) == [], "embedded Redis or the gallery left"
    left = [p.name for p in temp.iterdir() if p.name.startswith("protolens")]
    shutil.rmtree(temp, ignore_errors=True)
    assert left == [], "its temporary folder was left"  # (torch keeps its own caches there)


def test_up_stops_everything_when_its_terminal_closes(e2e_refs: Path, tmp_path: Path) -> None:
    """A closed terminal sends SIGHUP: `up` stops its children and removes its temporary
    folder as on Ctrl-C (it used to die at once, its children following through the
    death signal and the folder of logs, Redis files and result blobs left behind).
    Given one set where a folder of sets belongs, it says so (it listed the set's class
    folders as sets); a model store not made yet is named with what goes in it."""
    port = free_port()
    one_set = e2e_refs / "tinyref"  # tinyref/<class>/*.png
    store = tmp_path / "models"
    cmd = [
        sys.executable, "-m", "protolens.cli", "up", "--port", str(port), "--metrics-port",
        "0", "--no-web", "--model-store", str(store), "--reference-root", str(one_set),
    ]  # fmt: skip
    temp = Path(tempfile.mkdtemp(prefix="pl-hup-t-"))
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**_env(), "TMPDIR": str(temp)}
    )
    try:
        assert _first_line(proc, timeout=90).startswith("protolens: serving on")
        lines = [proc.stdout.readline().decode() for _ in range(4)]
        (note,) = [line for line in lines if "reference sets:" in line]
        assert f"{one_set} looks like one set" in note, note
        assert "--reference-root takes the folder above it" in note, note
        (note,) = [line for line in lines if "model store:" in line]
        assert f"{store} is no folder yet: NAME/VERSION/model.pt2 there is NAME@" in note, note
        proc.send_signal(signal.SIGHUP)
        assert proc.wait(60) == 0
        rest = proc.stdout.read().decode()
        assert "stopping workers, API and Redis" in rest
        time.sleep(0.2)
        assert not _listening(port)
        assert _processes_with(f"PROTOLENS_GRPC_PORT={port}") == [], "API/worker children left"
        assert _processes_with(str(temp)) == [], "embedded Redis left"
        assert [p.name for p in temp.iterdir() if p.name.startswith("protolens")] == []
    finally:
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(temp, ignore_errors=True)


def _processes_with(marker: str) -> list[int]:
    """Live processes whose command line or environment mentions ``marker``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            blob = (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
            state = (proc / "stat").read_text().split(") ")[-1][:1]
        except OSError:
            continue
        if marker.encode() in blob and state != "Z":
            found.append(int(proc.name))
    return found


def test_demo_writes_png_and_says_scores_are_skipped(e2e_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    cmd = [
        sys.executable, "-m", "protolens.cli", "demo", "--model", "tiny", "--target", "1",
        "--steps", "4", "--model-store", str(e2e_store), "--out", str(out),
    ]  # fmt: skip
    # its own temporary folder goes here (short: a Unix socket path lives under TMPDIR)
    temp = Path(tempfile.mkdtemp(prefix="pl-demo-t-"))
    env = {**_env(), "TMPDIR": str(temp)}
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
        left = [p.name for p in temp.iterdir() if p.name.startswith("protolens")]
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no reference set registered" in done.stdout
    assert "stopping the stack" in done.stdout
    assert re.search(r"done in \d+\.\d s \(the job took \d+\.\d s\)", done.stdout)
    pngs = list(out.glob("*.png"))
    assert len(pngs) == 1 and (out / "job.json").exists()
    assert left == []  # its stack's temporary folder is removed


def test_demo_stopped_by_sigterm_stops_its_stack_in_order(e2e_store: Path, tmp_path: Path) -> None:
    """SIGTERM (a process manager, `kill`, a CI timeout) stops the demo as Ctrl-C does: its
    stack is stopped in order and no child outlives it. It used to die at once: the API
    and Redis followed through the parent-death signal, but the worker, finishing its
    job, went on waiting for a Redis that was gone (35 s and more, one core busy)."""
    cmd = [
        sys.executable, "-m", "protolens.cli", "demo", "--model", "tiny", "--target", "1",
        "--steps", "5000", "--model-store", str(e2e_store), "--out", str(tmp_path / "demo"),
    ]  # fmt: skip
    temp = Path(tempfile.mkdtemp(prefix="pl-term-t-"))
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**_env(), "TMPDIR": str(temp)}
    )
    try:
        deadline = time.monotonic() + 120
        seen = ""
        while "queued for tiny" not in seen and time.monotonic() < deadline:
            seen += proc.stdout.readline().decode()
        assert "queued for tiny" in seen, seen
        assert _processes_with(str(temp)) != []  # its Redis, API and worker are up
        time.sleep(1.0)  # the worker is optimising
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 130
        rest = proc.stdout.read().decode()
        assert "protolens demo: stopping the stack" in rest, rest
        assert "protolens: stopped by SIGTERM" in rest, rest
        assert _processes_with(str(temp)) == [], "children left: " + rest
    finally:
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(temp, ignore_errors=True)


def test_demo_with_a_reference_set_writes_scores(
    e2e_store: Path, e2e_refs: Path, tmp_path: Path
) -> None:
    import json

    out = tmp_path / "demo"
    cmd = [
        sys.executable, "-m", "protolens.cli", "demo", "--model", "tiny", "--target", "banana",
        "--steps", "4", "--model-store", str(e2e_store), "--reference-root", str(e2e_refs),
        "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    (meta,) = [json.loads(p.read_text()) for p in out.glob("*.json") if p.name != "job.json"]
    assert meta["provenance"]["reference_set"] == "tinyref" and meta["scores"]["layers"]


def test_worker_command_runs_a_burst_worker(redis_url: str, e2e_store: Path) -> None:
    cmd = [
        sys.executable, "-m", "protolens.cli", "worker", "--redis-url", redis_url,
        "--model-store", str(e2e_store), "--metrics-port", "0", "--burst",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_serve_without_redis_is_one_line_error() -> None:
    cmd = [sys.executable, "-m", "protolens.cli", "serve", "--port", "0"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=60)
    assert done.returncode == 1
    assert done.stderr.startswith("protolens: INVALID_ARGUMENT: redis_url: serve needs a Redis")
    assert done.stderr.count("\n") == 1
