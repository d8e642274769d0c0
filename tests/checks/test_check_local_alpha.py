"""A check's prototypes with ``alpha``: the local cache keeps the RGBA PNGs, and the
analysis sees each image over mid-grey (as its probability is measured), whether it was
just made or read back from the cache folder."""

from __future__ import annotations

import io
from pathlib import Path

import torch
from PIL import Image
from protolens_server.api.testkit import TINY_MODEL, make_tiny_model_store
from protolens_server.checks.local_cache import LocalGenerator
from protolens_server.checks.prototypes import check_spec
from protolens_server.engine import GenerationConfig, flatten_alpha
from protolens_server.imageio import decode_png
from protolens_server.models import load_model


def test_alpha_check_prototypes_stay_rgba_and_are_analysed_over_grey(tmp_path: Path) -> None:
    handle = load_model(str(make_tiny_model_store(tmp_path / "m") / f"{TINY_MODEL}.pt"))
    config = GenerationConfig(steps=8, equidistant_steps=2, transforms="small", lr=0.1, alpha=True)
    spec = check_spec(TINY_MODEL, handle.digest, [0, 1], config, seed=3)
    generator = LocalGenerator(tmp_path / "cache")
    fresh = generator.run(handle, spec)
    again = generator.run(handle, spec)
    assert [c.cache_hit for c in again] == [True, True]
    for made, read in zip(fresh, again, strict=True):
        (png,) = read.pngs
        stored = Image.open(io.BytesIO(png))
        low, high = stored.getchannel("A").getextrema() if stored.mode == "RGBA" else (0, 0)
        assert stored.mode == "RGBA" and low < high  # the opacity, kept in the cache folder
        expected = flatten_alpha(decode_png(png, 4))
        assert read.images.shape == (1, 3, 16, 16)  # what the model takes: RGB
        assert torch.allclose(read.images[0], expected) and torch.equal(made.images, read.images)
