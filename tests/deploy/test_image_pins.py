"""The container images pin every server dependency, at a torch matching the project's pin."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _pin_module():
    spec = importlib.util.spec_from_file_location(
        "pin_server_deps", ROOT / "deploy/docker/pin_server_deps.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_server_dependency_is_pinned_for_the_image():
    pins = _pin_module()
    closure = pins.server_closure()
    not_installed = sorted(n for n, v in closure.items() if v is None)
    assert not not_installed, f"install the dev extra first: {not_installed}"
    missing = sorted(set(closure) - set(pins.pinned()))
    assert not missing, (
        f"the image would install these unpinned: {missing}; "
        "run python deploy/docker/pin_server_deps.py"
    )
    assert "torch" not in pins.pinned() and "grpcio" in closure


def test_dockerfile_torch_matches_the_project_pin():
    dockerfile = (ROOT / "Dockerfile").read_text()
    project = re.search(
        r"^torch==([\w.]+)$", (ROOT / "requirements-dev-constraints.txt").read_text(), re.M
    )
    assert project
    specs = re.findall(r'^ARG TORCH_SPEC="torch==([\w.+]+)"$', dockerfile, re.M)
    assert sorted(specs) == sorted([f"{project.group(1)}+cpu", project.group(1)])
