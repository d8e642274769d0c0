"""The TorchServe handler end to end: torch-model-archiver builds a .mar with it, a real
TorchServe (Java) serves it on loopback, a request returns a PNG and a high probability."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
HANDLER = ROOT / "server" / "protolens_server" / "torchserve" / "handler.py"
BIN = Path(sys.executable).parent

if shutil.which("java") is None:
    pytest.skip(
        "JAVA IS MISSING: the TorchServe end-to-end test needs Java 17 (apt-get install -y "
        "openjdk-17-jre-headless)",
        allow_module_level=True,
    )
pytest.importorskip("ts", reason="pip install torchserve (the dev extra has it)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def _post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


@pytest.fixture
def torchserve(shapes_store: Path, tmp_path: Path):
    store = tmp_path / "model_store"
    store.mkdir()
    version = shapes_store / "shapes" / "2"
    subprocess.run(
        [
            str(BIN / "torch-model-archiver"),
            "--model-name", "shapes",
            "--version", "2",
            "--serialized-file", str(version / "model.pt2"),
            "--extra-files", str(version / "model.json"),
            "--handler", str(HANDLER),
            "--export-path", str(store),
        ],
        check=True,
    )  # fmt: skip
    ports = {k: _free_port() for k in ("inference", "management", "metrics")}
    config = tmp_path / "config.properties"
    config.write_text(
        "\n".join(
            [
                f"inference_address=http://127.0.0.1:{ports['inference']}",
                f"management_address=http://127.0.0.1:{ports['management']}",
                f"metrics_address=http://127.0.0.1:{ports['metrics']}",
                "default_workers_per_model=1",
                "default_response_timeout=120",
                "disable_system_metrics=true",
                "install_py_dep_per_model=false",
            ]
        )
    )
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",  # the worker runs this venv's python
        "OMP_NUM_THREADS": "1",
        "TS_DISABLE_SYSTEM_METRICS": "true",
    }
    proc = subprocess.Popen(
        [
            str(BIN / "torchserve"), "--foreground", "--ncs", "--disable-token-auth",
            "--model-store", str(store), "--models", "shapes=shapes.mar",
            "--ts-config", str(config),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{ports['inference']}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read().decode(errors="replace")[-4000:]
            try:
                status = _get(f"http://127.0.0.1:{ports['management']}/models/shapes")
                if status[0]["workers"] and status[0]["workers"][0]["status"] == "READY":
                    break
            except (OSError, KeyError, IndexError, ValueError):
                pass
            assert time.monotonic() < deadline, "TorchServe did not get the model READY in 120 s"
            time.sleep(0.5)
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_torchserve_answers_a_prototype_request(torchserve: str) -> None:
    code, body = _post(
        f"{torchserve}/predictions/shapes",
        {"class": "bars", "steps": 32, "seed": 0, "lr": 0.1, "transforms": "small"},
    )
    assert code == 200, body
    assert body["class"] == 1 and body["name"] == "bars" and len(body["digest"]) == 64
    (proto,) = body["prototypes"]
    assert proto["probability"] > 0.9
    img = Image.open(io.BytesIO(base64.b64decode(proto["png"])))
    assert img.size == (32, 32) and img.mode == "RGB"
    assert len(img.getcolors(maxcolors=4096) or []) > 20  # a picture, not a flat fill

    code, body = _post(  # an alpha prototype comes back RGBA
        f"{torchserve}/predictions/shapes",
        {"class": "bars", "steps": 16, "lr": 0.1, "transforms": "small", "alpha": True},
    )
    assert code == 200 and body["alpha"] is True, body
    img = Image.open(io.BytesIO(base64.b64decode(body["prototypes"][0]["png"])))
    assert img.mode == "RGBA" and img.getchannel("A").getextrema()[0] < 255

    code, body = _post(f"{torchserve}/predictions/shapes", {"class": "zebra", "steps": 8})
    assert code == 400 and "zebra" in body.get("message", json.dumps(body))
