#!/usr/bin/env python3
"""Write deploy/docker/constraints-server.txt: exact versions for the container images.

The images install ``protolens[server,s3]`` with this file as pip constraints, so
a rebuild gets the versions the test suite ran with. The set of names is the
server and s3 extras and the client dependencies from pyproject.toml plus everything
they require, read from the installed distributions' metadata (run it in the
project's .venv after ``pip install -e .[dev]``). torch is left out: the
Dockerfile's TORCH_SPEC picks the CPU or CUDA build.

    python deploy/docker/pin_server_deps.py          # rewrite the file
    python deploy/docker/pin_server_deps.py --check  # exit 1 if a name is missing
"""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
TARGET = ROOT / "deploy/docker/constraints-server.txt"
UNPINNED = {"torch", "protolens"}
# Needed only on some Pythons (redis on < 3.11.3, e.g. Debian's 3.11.2).
EXTRA_PINS = {"async-timeout"}
HEADER = """\
# Exact versions installed into the container images (Dockerfile), so an image
# rebuilt later gets the same dependencies. torch is pinned by the Dockerfile's
# TORCH_SPEC build argument instead (the CPU and CUDA images take different
# builds of it). Generated from the test environment by
# deploy/docker/pin_server_deps.py; tests/deploy checks no dependency is missing.
"""


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def top_level() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    specs = [*project["dependencies"], *extras["server"], *extras["s3"]]
    return [Requirement(s) for s in specs]


def server_closure() -> dict[str, str | None]:
    """Normalised name -> installed version (None if not installed) for the server install."""
    found: dict[str, str | None] = {}
    todo = top_level()
    while todo:
        req = todo.pop()
        name = normalise(req.name)
        if name in found:
            continue
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            found[name] = None
            continue
        found[name] = dist.version
        for line in dist.requires or []:
            sub = Requirement(line)
            if sub.marker is None or sub.marker.evaluate({"extra": ""}):
                todo.append(sub)
    # torch's own dependencies stay pinned; torch itself is the Dockerfile's TORCH_SPEC.
    return {n: v for n, v in found.items() if n not in UNPINNED}


def pinned(path: Path = TARGET) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[normalise(name)] = version
    return pins


def render() -> str:
    closure = server_closure()
    missing = sorted(n for n, v in closure.items() if v is None)
    if missing:
        raise SystemExit(f"not installed here, cannot pin: {missing} (pip install -e '.[dev]')")
    old = pinned() if TARGET.exists() else {}
    lines = [f"{n}=={v}" for n, v in closure.items()]
    lines += [f"{n}=={old[n]}" for n in EXTRA_PINS if n in old and n not in closure]
    return HEADER + "\n".join(sorted(lines)) + "\n"


def main(argv: list[str]) -> int:
    if "--check" in argv:
        missing = sorted(set(server_closure()) - set(pinned()))
        print(f"missing from {TARGET.name}: {missing}" if missing else "ok", file=sys.stderr)
        return 1 if missing else 0
    TARGET.write_text(render())
    print(f"wrote {TARGET.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
