"""A job scored against a weak reference set says so beside its scores.

A registered set whose class 2 is all greyscale (the model takes colour, the other
classes are in colour) and whose class 0 holds a copy of one image: GetPrototype's
``Scores.caveats`` (and ``details["caveats"]``), the job's ``PrototypeSummary.caveats``,
the SDK's ``Job.warnings``, ``protolens get`` (stderr) and the gallery's job and
prototype pages carry them, each for the classes it concerns. Real API server, worker
and Redis (docs/scores.md, "Caveats")."""

from __future__ import annotations

import html
import json
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from e2e_stack import run_cli, stack_settings
from PIL import Image
from protolens import Client
from protolens_server.api.stack import Stack

pytestmark = pytest.mark.xdist_group("e2e")

CLASSES = ["a", "b", "c"]


def _model(path: Path) -> None:
    """A linear TorchScript classifier of 3x8x8 colour images."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 3)).eval()
    torch.jit.script(net).save(str(path))
    spec = {"channels": 3, "height": 8, "width": 8, "mean": 0.5, "std": 0.25,
            "class_names": CLASSES}  # fmt: skip
    path.with_suffix(".json").write_text(json.dumps(spec))


def _reference_root(root: Path) -> Path:
    """``root/weak/{a,b,c}/*.png``: colour noise for a and b, greyscale for c, and a copy
    of a/0.png in a."""
    rng = np.random.default_rng(0)
    for cls in CLASSES:
        folder = root / "weak" / cls
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(4):
            pixels = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
            image = Image.fromarray(pixels)
            (image.convert("L") if cls == "c" else image).save(folder / f"{i}.png")
    shutil.copy(root / "weak" / "a" / "0.png", root / "weak" / "a" / "0-copy.png")
    return root


@pytest.fixture(scope="module")
def stack(_session_redis: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    store = tmp_path_factory.mktemp("caveat-store")
    _model(store / "lin.pt")
    refs = _reference_root(tmp_path_factory.mktemp("caveat-refs"))
    settings = stack_settings(_session_redis, "e2ecav", store, reference_root=refs)
    with Stack(settings, tmp_path_factory.mktemp("caveat-stack"), workers=1) as running:
        yield running


def test_scores_on_a_weak_reference_set_carry_its_caveats(stack: Stack) -> None:
    config = {"steps": 4, "lr": 0.1}
    with Client(stack.address, timeout=30) as client:
        job = client.create_prototype_job(
            "lin", [0, 2], config=config, seed=1, reference_set="weak"
        )
        job = client.wait(job, timeout=180)
        assert job.succeeded, job.error
        first, grey = (client.get_prototype(job, i) for i in range(2))

    # GetPrototype: the explicit field and the engine's dict, each class its own
    assert [(c.code, c.classes) for c in grey.scores.caveats] == [("GREYSCALE_CLASS", (2,))]
    (greyscale,) = grey.scores.caveats
    assert greyscale.files == tuple(f"c/{i}.png" for i in range(4))
    assert "add colour photos of the class" in greyscale.message
    assert grey.scores.details["caveats"][0]["code"] == "GREYSCALE_CLASS"
    assert [(c.code, c.classes) for c in first.scores.caveats] == [("DUPLICATE_IMAGES", (0,))]
    assert first.scores.caveats[0].files == ("a/0-copy.png", "a/0.png")
    # the job's summaries carry them too, and its warnings say each once
    assert [s.caveats for s in job.prototypes] == [first.scores.caveats, grey.scores.caveats]
    assert job.warnings == [
        f"DUPLICATE_IMAGES: {first.scores.caveats[0].message}",
        f"GREYSCALE_CLASS: {greyscale.message}",
    ]

    code, out, err = run_cli("get", job.id, "--address", stack.address)
    assert code == 0 and out.strip()
    # each scored prototype's headline, as GetPrototype has it, under its line
    lines = out.splitlines()
    for i, proto in enumerate((first, grey)):
        at = lines.index(next(x for x in lines if x.startswith(f"  {job.prototypes[i].name} ")))
        assert lines[at + 1] == f"    path similarity {proto.scores.summary_text()}"
        head = proto.scores.path_similarity
        said = f"{head.value:.2f}" if head.value is not None else f"n/a ({head.reason}, 0/"
        assert said in lines[at + 1]
    assert err.splitlines() == [f"protolens: warning: {line}" for line in job.warnings]

    web = stack.start_web()
    page = urllib.request.urlopen(f"{web}jobs/{job.id}", timeout=30).read().decode()
    assert all(line in html.unescape(page) for line in job.warnings)
    page = urllib.request.urlopen(f"{web}jobs/{job.id}/prototypes/1", timeout=30).read().decode()
    assert greyscale.message in html.unescape(page) and "DUPLICATE_IMAGES" not in page


def test_a_job_without_a_reference_set_has_no_caveats(stack: Stack) -> None:
    with Client(stack.address, timeout=30) as client:
        job = client.create_prototype_job("lin", [2], config={"steps": 4, "lr": 0.1}, seed=1)
        job = client.wait(job, timeout=180)
    assert job.succeeded and job.prototypes[0].caveats == () and job.warnings == []
