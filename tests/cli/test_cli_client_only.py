"""The client stands alone: the SDK and the ``protolens`` CLI where the server side is not.

Two real Python environments are made from files already installed here (no network,
about a second each), and each is run with ``python -I``:

- ``client_alone``: the client's own requirement closure, read from the installed
  metadata (grpcio, protobuf, googleapis-common-protos, tqdm and what they need) and
  ``client/`` on the path. No ``protolens_server``, no torch, no entry points.
- ``no_server_extra``: what ``pip install protolens`` (no extras) lays out: the same,
  plus ``server/`` and the distribution's metadata, so the server's commands are found
  by entry point, but torch, Redis, pydantic... are absent.

The client CLI in ``client_alone`` then talks to a real API server (keys required).
"""

from __future__ import annotations

import ast
import asyncio
import importlib.metadata as md
import json
import shutil
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from protolens_server.api.auth import ApiKeyStore
from protolens_server.api.server import ApiServer, start_server
from protolens_server.api.testkit import make_tiny_model_store
from protolens_server.config import Settings

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "client" / "protolens"
SERVER_ONLY = ("protolens_server", "torch", "numpy", "redis", "pydantic", "PIL", "yaml")
HINT = "pip install 'protolens[server]'"


def _client_closure() -> list[md.Distribution]:
    """The installed distributions ``pip install protolens`` (no extras) needs."""
    seen: dict[str, md.Distribution] = {}
    todo = [str(r) for r in md.requires("protolens") or []]
    while todo:
        req = Requirement(todo.pop())
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        dist = md.distribution(req.name)
        key = dist.metadata["Name"].lower()
        if key not in seen:
            seen[key] = dist
            todo += list(dist.requires or [])
    return list(seen.values())


def _make_env(where: Path, *, server: bool) -> Path:
    """A venv holding the client's closure (linked file by file) and the protolens code."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    site = where / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    site /= "site-packages"
    for dist in _client_closure():
        for file in dist.files or ():
            if file.parts[0] == ".." or "__pycache__" in file.parts:
                continue
            target = site / file
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                target.symlink_to(Path(dist.locate_file(file)).resolve())
    paths = [ROOT / "client"] + ([ROOT / "server"] if server else [])
    (site / "protolens.pth").write_text("".join(f"{p}\n" for p in paths))
    if server:  # the distribution's metadata: its entry points (what the wheel would carry)
        info = site / "protolens-0.1.0.dist-info"
        info.mkdir()
        for name in ("METADATA", "entry_points.txt"):
            text = md.distribution("protolens").read_text(name)
            (info / name).write_text(text or "")
    return where / "bin" / "python"


@pytest.fixture(scope="module")
def client_alone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    where = tmp_path_factory.mktemp("client_alone")
    yield _make_env(where, server=False)
    shutil.rmtree(where, ignore_errors=True)


@pytest.fixture(scope="module")
def no_server_extra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    where = tmp_path_factory.mktemp("no_server_extra")
    yield _make_env(where, server=True)
    shutil.rmtree(where, ignore_errors=True)


def _run(python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), "-I", *args], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def _cli(python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return _run(python, "-m", "protolens.cli", *args)


def _one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    return done.stderr


# --- the boundary in the code ------------------------------------------------------------


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module":
            names |= {a.value for a in node.args if isinstance(a, ast.Constant)}
    return names


def test_the_client_imports_nothing_from_the_server() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(n for n in _imported_modules(path) if "server" in n)
        for path in CLIENT.rglob("*.py")
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_installed_entry_points_are_pyprojects() -> None:
    """A stale install (made before pyproject.toml changed) would hide server commands."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    installed = md.distribution("protolens").entry_points
    for group, entries in declared.items():
        found = {ep.name: ep.value for ep in installed if ep.group == group}
        assert found == entries, f"reinstall: pip install -e . ({group} differs)"


# --- the client alone --------------------------------------------------------------------


def test_sdk_and_cli_import_without_the_server_or_torch(client_alone: Path) -> None:
    code = (
        "import importlib, pkgutil, sys, protolens\n"
        "for m in pkgutil.walk_packages(protolens.__path__, 'protolens.'):\n"
        "    importlib.import_module(m.name)\n"
        "from protolens.cli import build_parser\n"
        "build_parser().format_help()\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {SERVER_ONLY!r}))\n"
        "for absent in ('protolens_server', 'torch'):\n"
        "    try:\n"
        "        importlib.import_module(absent)\n"
        "    except ModuleNotFoundError:\n"
        "        print('absent', absent)\n"
    )
    done = _run(client_alone, "-c", code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == ["[]", "absent protolens_server", "absent torch"]


def test_server_commands_there_say_what_to_install(client_alone: Path, tmp_path: Path) -> None:
    done = _cli(client_alone, "--help")
    assert done.returncode == 0 and "submit" in done.stdout and "admin" in done.stdout
    assert "generate" not in done.stdout  # the server's commands are not there
    for argv in (
        ("generate", "--model", "efficientnet_lite0", "--target", "1", "--out", str(tmp_path)),
        ("up",),
        ("admin", "keys", "create", "--bootstrap", "--tenant", "ops"),
    ):
        err = _one_line(_cli(client_alone, *argv))
        assert HINT in err, (argv, err)
    assert not any(tmp_path.iterdir())


@pytest.fixture
async def keyed_api(redis_url: str, tmp_path: Path) -> AsyncIterator[tuple[ApiServer, str]]:
    settings = Settings(
        redis_url=redis_url,
        key_prefix="plclient",
        grpc_port=0,
        model_store=make_tiny_model_store(tmp_path / "models"),
        builtin_models=False,
        shutdown_grace_s=0,
    )
    api, _port = await start_server(settings, sample_interval_s=0.2)
    try:
        _info, admin_key = await ApiKeyStore(api.queue.redis, api.queue.keys).create(
            "ops", "admin", "bootstrap"
        )
        yield api, admin_key
    finally:
        await api.stop(grace=0)


async def test_the_client_alone_works_a_real_service(
    client_alone: Path, keyed_api: tuple[ApiServer, str]
) -> None:
    api, admin_key = keyed_api
    common = ("--address", f"127.0.0.1:{api.port}", "--json")

    async def cli(*argv: str, key: str = admin_key) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(_cli, client_alone, *argv, *common, "--api-key", key)

    done = await cli("admin", "keys", "create", "--tenant", "vision", "--name", "ci")
    assert done.returncode == 0, done.stderr
    made = json.loads(done.stdout)
    assert made["tenant"] == "vision" and made["role"] == "tenant" and made["created"]
    done = await cli("models", key=made["secret_key"])
    assert done.returncode == 0, done.stderr
    assert [m["id"] for m in json.loads(done.stdout)] == ["tiny"]
    done = await cli("admin", "keys", "list", "--tenant", "vision")
    assert [k["key_id"] for k in json.loads(done.stdout)] == [made["key_id"]]
    done = await cli("admin", "keys", "revoke", made["key_id"])
    assert done.returncode == 0 and json.loads(done.stdout)["revoked"]
    assert "UNAUTHENTICATED" in _one_line(await cli("models", key=made["secret_key"]))
    assert "JOB_NOT_FOUND" in _one_line(await cli("get", "no-such-job"))
    assert "INVALID_ARGUMENT: name: expected 'jobs/{job}'" in _one_line(await cli("get", "a/b"))


# --- pip install protolens, without the server extra -------------------------------------


def test_without_the_server_extra_its_commands_are_listed_and_say_what_to_install(
    no_server_extra: Path, tmp_path: Path
) -> None:
    done = _cli(no_server_extra, "--help")
    assert done.returncode == 0, done.stderr
    for command in ("generate", "check", "serve", "worker", "up", "web", "demo", "submit"):
        assert f"\n    {command} " in done.stdout, command  # found by entry point
    for argv in (
        ("generate", "--model", "efficientnet_lite0", "--target", "1", "--out", str(tmp_path)),
        ("up", "--port", "0"),
        ("admin", "keys", "create", "--bootstrap", "--tenant", "ops"),
    ):
        err = _one_line(_cli(no_server_extra, *argv))
        assert HINT in err and "(missing " in err, (argv, err)
    code = "import sys, protolens.client; print('protolens_server' in sys.modules)"
    assert _run(no_server_extra, "-c", code).stdout.strip() == "False"
