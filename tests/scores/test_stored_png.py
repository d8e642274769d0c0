"""Scores describe what is stored: a real worker's stored scores equal scores recomputed from
the PNG it stored (the 8-bit image a user downloads), from scratch."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from protolens_server import ENGINE_VERSION
from protolens_server.config import Settings
from protolens_server.engine import GenerationConfig, Prototype, Target, generate, score
from protolens_server.imageio import decode_png, encode_png
from protolens_server.models.catalog import ModelCatalog
from protolens_server.queue.jobs import JobQueue
from protolens_server.queue.records import JobSpec, JobState
from protolens_server.scores.cache import MEMORY_CACHE
from protolens_server.scores.references import ReferenceSet
from protolens_server.scores.scoring import score_prototypes
from protolens_server.scores.statistics import reference_statistics
from protolens_server.worker import Worker
from scores_synthetic import CLASSES, SPEC


@pytest.fixture
def store(shapenet, reference_folder, tmp_path: Path) -> Path:
    """A model store with ShapeNet as a torch.export program, and a registered reference set."""
    models = tmp_path / "models"
    models.mkdir()
    program = torch.export.export(
        shapenet, (torch.rand(2, *SPEC.shape),), dynamic_shapes=({0: torch.export.Dim("b")},)
    )
    torch.export.save(program, models / "shapes.pt2")
    sidecar = {"channels": 3, "height": 32, "width": 32, "mean": 0.5, "std": 0.25}
    (models / "shapes.json").write_text(json.dumps({**sidecar, "class_names": list(CLASSES)}))
    shutil.copytree(reference_folder, tmp_path / "refs" / "shapes16")
    return tmp_path


async def test_stored_scores_equal_a_recomputation_from_the_stored_png(
    store: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROTOLENS_CACHE_DIR", str(store / "worker-cache"))
    settings = Settings(
        redis_url=redis_url,
        key_prefix="plscores",
        model_store=store / "models",
        reference_root=store / "refs",
        builtin_models=False,
        device="cpu",
        heartbeat_s=0.1,
        metrics_port=0,
    )
    catalog = ModelCatalog(store / "models", builtins=False)
    config = GenerationConfig(steps=12, equidistant_steps=2)
    spec = JobSpec(
        model="shapes",
        model_digest=catalog.describe("shapes").digest,
        targets=(Target((2,)), Target((7,))),
        config=config.to_dict(),
        seed=5,
        reference_set="shapes16",
        reference_digest="shapes16",
        engine_version=ENGINE_VERSION,
    )
    queue = await JobQueue.connect(settings)
    try:
        record, _ = await queue.submit(spec)
        async with Worker(settings, name="w-scores") as worker:
            assert await worker.run_once() == 1
        done = await queue.get(record.job_id)
        assert done.state == JobState.SUCCEEDED, done.error
        await queue.load_scores(done)  # the scores live in the blob store, as the PNGs do
        pngs = [await queue.get_png(record.job_id, i) for i in range(len(done.prototypes))]
    finally:
        await queue.close()

    MEMORY_CACHE.clear()  # recompute everything: the reference statistics too
    handle = catalog.load("shapes")
    for stored, png in zip(done.prototypes, pngs, strict=True):
        downloaded = Prototype(
            image=decode_png(png),
            target=Target(stored.target.classes, stored.target.kind),  # type: ignore[arg-type]
            index=stored.index,
            probability=stored.probability,
            logit=stored.logit,
            top5=list(stored.top5),
            steps=stored.steps,
            seed=stored.seed,
            config=config,
        )
        (again,) = score_prototypes(
            handle, [downloaded], store / "refs" / "shapes16", cache_dir=store / "mine"
        )
        assert stored.scores is not None and stored.scores["path_similarity"] is not None
        assert_same(again.to_dict(), stored.scores)
        assert again.to_dict()["reasons"] == stored.scores["reasons"]


def assert_same(a: object, b: object, where: str = "scores") -> None:
    """Equal structure, strings and counts; floats equal to float32 rounding (the worker's
    forward passes may run other kernels than this thread's: 1e-7 relative differences)."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6), where
    else:
        assert a == b, where


def test_the_float_image_is_not_what_is_scored(handle, reference_folder, tmp_path) -> None:
    """The optimiser's float image and its 8-bit PNG give different numbers: the one scored is
    the PNG (so the test above compares what it claims to)."""
    (proto,) = generate(handle, [6], GenerationConfig(steps=12, equidistant_steps=2), seed=1)
    (stored,) = score_prototypes(handle, [proto], reference_folder, cache_dir=tmp_path)
    refset = ReferenceSet.from_folder(reference_folder, handle.class_names)
    stats = reference_statistics(handle, refset, cache_dir=tmp_path)
    (as_float,) = score(handle, [proto], stats)
    png = dataclasses.replace(proto, image=decode_png(encode_png(proto.image)))
    (as_png,) = score(handle, [png], stats)
    assert stored.to_dict() == as_png.to_dict()
    moved = max(
        abs(a - b)
        for a, b in zip(as_float.to_dict()["spearman"], as_png.to_dict()["spearman"], strict=True)
    )
    assert moved > 1e-6
