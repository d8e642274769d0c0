"""``protolens demo`` with its defaults: the README's main job, as a real command.

In a module of its own, out of the e2e group, so that it may run beside the ImageNet
defaults test (tests/engine/test_engine_imagenet.py): they are the suite's two longest
tests. Grouped, they shared one run of the learning-rate finder (the ImageNet test 68 s
instead of 113-134 s), but made a chain of about 350 s on one worker, and the suite took
981-1013 s against 846 s with them apart (issue 12 note of 2026-12-07).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from child_env import child_env


def test_default_demo_scores_against_the_sample_photos(tmp_path: Path) -> None:
    """The README's main job: efficientnet_lite0, scored against scikit-image's photos
    (8 steps at a fixed rate: the defaults' quality is test_engine_imagenet.py's claim)."""
    import json

    pytest.importorskip("skimage")
    out = tmp_path / "demo"
    # a fixed rate: the finder's probes (47 s alone, 100+ s beside the ImageNet test on 2
    # cores) are the ImageNet defaults test's to pay; this one is about the command
    cmd = [sys.executable, "-m", "protolens.cli", "demo", "--steps", "8", "--lr", "0.07"]
    cmd += ["--out", str(out)]
    done = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env=child_env(PROTOLENS_DEVICE="cpu", PYTHONUNBUFFERED="1"),
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "reference set 'photos'" in done.stdout
    metas = [json.loads(p.read_text()) for p in out.glob("*.json") if p.name != "job.json"]
    assert sorted(m["target"]["classes"][0] for m in metas) == [285, 967]
    assert sorted(m["target"]["class_names"][0] for m in metas) == ["Egyptian Mau", "espresso"]
    for meta in metas:
        assert meta["provenance"]["reference_set"] == "photos"
        assert isinstance(meta["path_similarity"], float)
        assert meta["lr"] == 0.07 and meta["steps"] == 8
    # the set stays for the README's next step, `protolens up --reference-root`
    refs = out / "references"
    assert {"285", "967"} <= {p.name for p in (refs / "photos").iterdir()}
    assert len(list((refs / "photos" / "285").glob("*.png"))) >= 3
    assert f"next, protolens up --reference-root {refs}" in done.stdout
