"""bench/naturalness_diagnosis.py: its edits and its spectrum, on images made here.

The script's reading (docs/scores.md) rests on two things: the radial spectrum puts a
known power law at its slope and sees what an edit removes, and each edit changes
only what its name says. Both are checked with no model.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

from naturalness_diagnosis import edited, gaussian_blur, radial_spectrum  # noqa: E402


def _power_law_image(exponent: float, size: int = 128, seed: int = 0) -> torch.Tensor:
    """Grey noise whose amplitude spectrum falls as 1/f^exponent, in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    fy = torch.fft.fftfreq(size)[:, None]
    fx = torch.fft.rfftfreq(size)[None, :]
    f = torch.sqrt(fx * fx + fy * fy).clamp_min(1.0 / size)
    phase = torch.rand(size, size // 2 + 1, generator=g) * 2 * math.pi
    spectrum = torch.polar(f ** (-exponent), phase)
    grey = torch.fft.irfft2(spectrum, s=(size, size))
    grey = (grey - grey.mean()) / grey.std() * 0.15 + 0.5
    return grey.clamp(0, 1).expand(3, size, size).clone()


def test_spectrum_slope_recovers_the_power_law() -> None:
    for exponent in (1.0, 1.5, 2.0):
        _, slope = radial_spectrum(_power_law_image(exponent))
        assert abs(slope + exponent) < 0.2, (exponent, slope)


def test_blur_removes_the_finest_band_and_keeps_the_coarsest() -> None:
    image = _power_law_image(1.0)[None]
    bands, _ = radial_spectrum(image[0])
    blurred, _ = radial_spectrum(gaussian_blur(image, 1.0)[0])
    assert blurred[-1] < bands[-1] - 1.5  # e^-1.5: under a quarter of the amplitude left
    assert abs(blurred[0] - bands[0]) < 0.1


def test_edits_keep_shape_and_range_and_do_what_they_say() -> None:
    g = torch.Generator().manual_seed(1)
    images = torch.rand(2, 3, 32, 32, generator=g)
    out = edited(images)
    assert torch.equal(out["as generated"], images)
    for name, x in out.items():
        assert x.shape == images.shape, name
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0, name
    grey = out["grey"]
    assert torch.allclose(grey[:, 0], grey[:, 1]) and torch.allclose(grey[:, 1], grey[:, 2])
    half = images.std(dim=(2, 3))
    assert torch.all(out["contrast 0.5"].std(dim=(2, 3)) < 0.6 * half)
    mean = images.mean(dim=(2, 3))
    assert torch.allclose(out["contrast 0.5"].mean(dim=(2, 3)), mean, atol=1e-5)
