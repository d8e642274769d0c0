"""bench/shortcut_patch.py: the patch prototype's canvas (docs/checks.md).

The script's finding, that ascent on a grey patch from the default (near-constant) start
does not find the planted stripes window although the window in the same space gives p
0.99, means something only if the window pasted as the script pastes a patch is the
shortcut to the suite's detector, and if the module the engine optimises shows the model
the patch at every place and averages what it says. These check both with no trained
model.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

from protolens_server.engine import InputSpec  # noqa: E402
from shortcut_patch import PatchOnCanvas, on_canvas, places  # noqa: E402
from shortcuts import data, detectors  # noqa: E402


@pytest.mark.parametrize(("size", "k", "count"), [(32, 12, 5), (32, 7, 9), (64, 24, 1)])
def test_places_fit_the_canvas_centre_first_and_differ(size: int, k: int, count: int) -> None:
    spots = places(size, k, count)
    assert len(spots) == count == len(set(spots))
    assert spots[0] == ((size - k) // 2, (size - k) // 2)
    assert all(0 <= y <= size - k and 0 <= x <= size - k for y, x in spots)


@pytest.mark.parametrize("kind", ["stripes", "glyph"])
def test_the_planted_shortcut_on_the_canvas_is_the_shortcut_to_its_detector(kind: str) -> None:
    planted = data.stripes(0) if kind == "stripes" else data.glyph_tile().expand(3, -1, -1)
    mean = torch.tensor((0.5, 0.5, 0.5))
    at = places(data.SIZE, planted.shape[-1], 1)[0]
    image = on_canvas(planted[None], data.SIZE, mean, at)[0]
    assert torch.equal(image[:, at[0], at[1]], planted[:, 0, 0])
    assert float(image[:, 0, 0].sub(mean).abs().max()) == 0.0  # the canvas is the mean colour
    calibration = detectors.calibrate(kind, n=18)
    assert detectors.SCORES[kind](image) > calibration["natural_max"] + detectors.MARGIN[kind]


class _Linear(nn.Module):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * size * size, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def test_module_averages_the_logits_over_the_places_and_greys_the_patch() -> None:
    torch.manual_seed(0)
    size, k = 16, 6
    spec = InputSpec(3, size, size, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    model = _Linear(size)
    handle = type("Handle", (), {"module": model, "input_spec": spec})()
    patches = torch.rand(2, 3, k, k)
    for grey in (False, True):
        module = PatchOnCanvas(handle, k, 4, grey)
        shown = patches.mean(1, keepdim=True).expand_as(patches) if grey else patches
        mean = torch.tensor(spec.mean)
        expected = torch.stack(
            [model(spec.normalise(on_canvas(shown, size, mean, at))) for at in module.places]
        ).mean(0)
        assert torch.allclose(module(patches), expected, atol=1e-6)
