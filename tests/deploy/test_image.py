"""Build the CPU image with buildah and run `protolens serve` in it with podman.

Opt-in (``PROTOLENS_IMAGE_TEST=1``): it takes minutes and ~3 GB of disk. No
registry image can be pulled here, so the Python base is made from Debian
packages with debootstrap (Debian bookworm's python3 is 3.11, like the
``python:3.11-slim-bookworm`` base the Dockerfile names), and packages come
from a local wheelhouse (``pip download``) with ``--no-index``. Everything
else is the real Dockerfile. Needs: apt-get install buildah podman runc
debootstrap (see docs/deploy.md for why runc and the ulimits).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from protolens_server.healthcheck import check_grpc

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = "localhost/protolens-test-python:bookworm"
IMAGE = "localhost/protolens:cpu-test"
CACHE = Path(os.environ.get("PROTOLENS_IMAGE_CACHE", "/var/tmp/protolens-image-test"))
# This sandbox: cgroup v1/v2 hybrid (crun refuses it; runc works) and a hard
# open-files limit below podman's default of 1048576.
RUNTIME_ARGS = ["--runtime", "runc", "--ulimit", "nofile=1024:20000", "--ulimit", "nproc=4096:4096"]

pytestmark = pytest.mark.skipif(
    os.environ.get("PROTOLENS_IMAGE_TEST") != "1",
    reason="image build test is opt-in: PROTOLENS_IMAGE_TEST=1 (minutes, ~3 GB disk)",
)


def run(*args: str, timeout: float = 900, **kw) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kw)
    assert done.returncode == 0, f"{' '.join(args[:3])}... failed:\n{done.stderr[-4000:]}"
    return done


def need(*tools: str) -> None:
    missing = [t for t in tools if not shutil.which(t)]
    if missing:
        pytest.skip(
            f"SKIPPED LOUDLY: {missing} not installed (apt-get install {' '.join(missing)})"
        )


def base_image() -> None:
    """A python3.11 Debian bookworm image made from Debian packages (no registry pull)."""
    if subprocess.run(["podman", "image", "exists", BASE_IMAGE]).returncode == 0:
        return
    need("debootstrap")
    rootfs = CACHE / "rootfs"
    if not (rootfs / "usr/bin/python3").exists():
        shutil.rmtree(rootfs, ignore_errors=True)
        run(
            "debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
            "bookworm", str(rootfs), "http://deb.debian.org/debian", timeout=1800,
        )  # fmt: skip
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    run("podman", "import", "-", BASE_IMAGE, stdin=tar.stdout)
    tar.wait()


def wheelhouse() -> Path:
    """Every wheel the image installs, downloaded once (torch from the local CPU wheel)."""
    wheels = CACHE / "wheelhouse"
    wheels.mkdir(parents=True, exist_ok=True)
    constraints = ROOT / "deploy/docker/constraints-server.txt"
    pins = [line.split("#")[0].strip() for line in constraints.read_text().splitlines()]
    run(
        sys.executable, "-m", "pip", "download", "-q", "-d", str(wheels), "--only-binary", ":all:",
        "-c", str(constraints), "torch==2.13.0+cpu", "wheel", *[p for p in pins if p],
    )  # fmt: skip
    return wheels


def build_context(tmp: Path) -> Path:
    ctx = tmp / "context"
    files = run("git", "ls-files", "-z", cwd=ROOT).stdout.split("\0")
    wanted = ("pyproject.toml", "README.md", "Dockerfile", ".dockerignore", "client/", "server/")
    for name in files:
        if name.startswith(wanted) or name == "deploy/docker/constraints-server.txt":
            (ctx / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, ctx / name)
    shutil.copytree(wheelhouse(), ctx / "wheelhouse")
    return ctx


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    need("buildah", "podman", "runc")
    base_image()
    ctx = build_context(tmp_path_factory.mktemp("image"))
    started = time.monotonic()
    run(
        "buildah", "bud", "--format", "docker", "--layers", "--network", "none", *RUNTIME_ARGS,
        "--target", "cpu", "--build-arg", f"PYTHON_IMAGE={BASE_IMAGE}",
        "--build-arg", "PIP_INSTALL_ARGS=--no-index", "-t", IMAGE, str(ctx), timeout=1800,
    )  # fmt: skip
    print(f"built {IMAGE} in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return IMAGE


def _logs(name: str) -> str:
    done = subprocess.run(["podman", "logs", name], capture_output=True, text=True)
    return done.stdout + done.stderr


# As in Kubernetes (readOnlyRootFilesystem with an emptyDir on /tmp).
READ_ONLY = ["--read-only", "--tmpfs", "/tmp"]


def test_image_runs_serve_as_non_root_and_answers_health(image, redis_url):
    grpc_port, metrics_port = free_port(), free_port()
    name = f"protolens-serve-test-{os.getpid()}"
    run(
        "podman", "run", "-d", "--name", name, "--network", "host", *RUNTIME_ARGS, *READ_ONLY,
        "-e", f"PROTOLENS_REDIS_URL={redis_url}", "-e", f"PROTOLENS_GRPC_PORT={grpc_port}",
        "-e", f"PROTOLENS_METRICS_PORT={metrics_port}", image, "serve",
    )  # fmt: skip
    try:
        deadline, ok, why = time.monotonic() + 120, False, ""
        while time.monotonic() < deadline and not ok:
            ok, why = check_grpc(f"127.0.0.1:{grpc_port}", timeout=2)
            time.sleep(0.5)
        logs = subprocess.run(["podman", "logs", name], capture_output=True, text=True).stderr
        assert ok, f"{why}\n{logs[-3000:]}"
        assert run("podman", "exec", name, "id", "-u").stdout.strip() == "10001"
        # The image's own HEALTHCHECK command, run inside the container.
        run("podman", "exec", name, "python", "-m", "protolens_server.healthcheck")
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
            assert b"protolens_rpc_requests_total" in r.read()
        inspect = run("podman", "image", "inspect", image, "--format", "{{.Config.User}}")
        assert inspect.stdout.strip() == "10001:10001"
        # No compilers or sources in the final image.
        probe = subprocess.run(["podman", "exec", name, "sh", "-c", "command -v gcc cc; ls /src"],
                               capture_output=True, text=True)  # fmt: skip
        assert probe.stdout.strip() == ""
    finally:
        stop = subprocess.run(["podman", "stop", "-t", "40", name], capture_output=True, text=True)
        code = run("podman", "inspect", name, "--format", "{{.State.ExitCode}}").stdout.strip()
        subprocess.run(["podman", "rm", "-f", name], capture_output=True)
    assert stop.returncode == 0
    assert code in ("0", "143"), f"serve exited with {code} on SIGTERM"


def test_image_runs_a_worker_with_a_metrics_health_check(image, redis_url):
    metrics_port = free_port()
    name = f"protolens-worker-test-{os.getpid()}"
    run(
        "podman", "run", "-d", "--name", name, "--network", "host", *RUNTIME_ARGS, *READ_ONLY,
        "-e", f"PROTOLENS_REDIS_URL={redis_url}", "-e", f"PROTOLENS_METRICS_PORT={metrics_port}",
        "-e", "PROTOLENS_DEVICE=cpu", "-e", "PROTOLENS_SHUTDOWN_GRACE_S=5", image, "worker",
    )  # fmt: skip
    try:
        deadline, done = time.monotonic() + 120, None
        while time.monotonic() < deadline:
            done = subprocess.run(
                ["podman", "exec", name, "python", "-m", "protolens_server.healthcheck",
                 "--metrics"], capture_output=True, text=True,
            )  # fmt: skip
            if done.returncode == 0:
                break
            time.sleep(1)
        assert done is not None and done.returncode == 0, f"{done and done.stderr}\n{_logs(name)}"
        # The worker logs JSON lines (server/protolens_server/logging.py); its first
        # line ("started") may follow the metrics endpoint by a moment.
        deadline = time.monotonic() + 30
        while not any(line.startswith('{"ts":') for line in _logs(name).splitlines()):
            assert time.monotonic() < deadline, _logs(name)[-2000:]
            time.sleep(0.5)
    finally:
        stop = subprocess.run(["podman", "stop", "-t", "40", name], capture_output=True, text=True)
        code = run("podman", "inspect", name, "--format", "{{.State.ExitCode}}").stdout.strip()
        subprocess.run(["podman", "rm", "-f", name], capture_output=True)
    assert stop.returncode == 0
    assert code == "0", f"worker exited with {code} on SIGTERM"
