"""bench/shortcut_strength.py: its model-free "strongest plain form" of each shortcut.

The script's finding (docs/checks.md) compares a prototype's margin with the margin of
each shortcut in its tiled form; that comparison means something only if the tiled form
is the shortcut as the suite's own detectors see it, and clearly more of it than the
shortcut pasted once. These check both, with no model.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

from shortcut_strength import tiled  # noqa: E402
from shortcuts import data, detectors  # noqa: E402


@pytest.mark.parametrize("kind", data.KINDS)
def test_tiled_form_is_the_shortcut_to_its_detector(kind: str) -> None:
    calibration = detectors.calibrate(kind, n=18)
    for phase in range(4):
        image = tiled(kind, phase)
        assert image.shape == (3, data.SIZE, data.SIZE)
        assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
        score = detectors.SCORES[kind](image)
        # at least as much of the shortcut as the pure shortcut pasted on a natural image
        assert score >= calibration["pasted_min"] - 1e-6, (kind, phase, score, calibration)
        assert score > calibration["natural_max"] + detectors.MARGIN[kind], (kind, score)


@pytest.mark.parametrize("kind", ["patch", "glyph"])
def test_tiled_form_repeats_the_tile(kind: str) -> None:
    """A grid of tiles, not one: the colour or template occurs several times."""
    image = tiled(kind, 0)
    if kind == "patch":
        magenta = torch.tensor(data.PATCH_RGB).view(3, 1, 1)
        count = int(((image - magenta).abs().sum(0) < 1e-6).sum())
        assert count >= 4 * data.PATCH * data.PATCH
    else:
        tile = data.glyph_tile()
        k = tile.shape[-1]
        windows = image.unfold(1, k, 1).unfold(2, k, 1)  # (3, H-k+1, W-k+1, k, k)
        exact = (windows - tile[:, None, None]).abs().sum(dim=(0, 3, 4)) < 1e-6
        assert int(exact.sum()) >= 4
