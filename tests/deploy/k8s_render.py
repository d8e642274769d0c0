"""Render the kustomize overlays with a real kustomize (kubectl's built-in or standalone)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = sorted(p.parent.name for p in (K8S / "overlays").glob("*/kustomization.yaml"))


def kustomize_command() -> list[str]:
    """``kustomize build`` or ``kubectl kustomize``, whichever is installed; else skip loudly."""
    if exe := shutil.which("kustomize"):
        return [exe, "build"]
    if exe := shutil.which("kubectl"):
        return [exe, "kustomize"]
    pytest.skip(
        "SKIPPED LOUDLY: no kustomize and no kubectl on PATH, so the Kubernetes manifests "
        "were NOT rendered or validated. Install kubectl (it embeds kustomize)."
    )


def render(overlay: str) -> list[dict]:
    done = subprocess.run(
        [*kustomize_command(), str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"kustomize failed for {overlay}:\n{done.stderr[-3000:]}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]
