"""Does a prototype show the planted shortcut? One detector per kind, none using the engine.

Each detector scores one image (in [0, 1], (3, H, W)); a class's score is the mean
over its prototypes. The shortcut is *revealed* when the shortcut class's score
exceeds every other class's score by at least the kind's margin:

    revealed  <=>  score[target] - max(score[other]) >= MARGIN[kind]

- ``patch``: the share of magenta pixels (hue within 30 deg of 300, saturation >= 0.6,
  value >= 0.5); margin 0.02 (20 of 1024 pixels: over half a 6x6 patch);
- ``background``: the share of teal pixels (hue within 20 deg of 180, saturation >= 0.5,
  value >= 0.3); margin 0.02, as for the patch (a colour is a colour: the same area);
- ``stripes``: the share of the grey image's AC power within 1.5 frequency bins of the
  stripes' fundamental (period 4 px, along one diagonal); margin 0.05;
- ``glyph``: the best Pearson correlation of a 7x7 grey window with the glyph tile;
  margin 0.15.

The margins were set from natural images and the pure shortcut pasted on them
(``calibrate``; both are recorded with every suite run), never from prototypes.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import torch

from shortcuts import data

MARGIN = {"patch": 0.02, "background": 0.02, "stripes": 0.05, "glyph": 0.15}


def _hsv(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r, g, b = img[0], img[1], img[2]
    v, _ = img.max(0)
    mn, _ = img.min(0)
    c = v - mn
    s = torch.where(v > 0, c / v.clamp_min(1e-8), torch.zeros_like(v))
    safe = c.clamp_min(1e-8)
    h = torch.where(
        v == r,
        ((g - b) / safe) % 6,
        torch.where(v == g, (b - r) / safe + 2, (r - g) / safe + 4),
    )
    h = torch.where(c > 0, h * 60, torch.zeros_like(h))
    return h, s, v


def _hue_share(img: torch.Tensor, hue: float, width: float, s_min: float, v_min: float) -> float:
    h, s, v = _hsv(img)
    dh = ((h - hue + 180) % 360 - 180).abs()
    return float(((dh <= width) & (s >= s_min) & (v >= v_min)).float().mean())


def patch_score(img: torch.Tensor) -> float:
    return _hue_share(img, 300, 30, 0.6, 0.5)


def background_score(img: torch.Tensor) -> float:
    return _hue_share(img, 180, 20, 0.5, 0.3)


def stripes_score(img: torch.Tensor) -> float:
    grey = img.mean(0)
    n = grey.shape[-1]
    power = torch.fft.fft2(grey - grey.mean()).abs() ** 2
    f = torch.fft.fftfreq(n) * n  # integer bin frequencies
    fy, fx = torch.meshgrid(f, f, indexing="ij")
    k = n / data.STRIPE_PERIOD  # (k, k): the stripes' fundamental, along x + y
    near = ((fy - k) ** 2 + (fx - k) ** 2 <= 1.5**2) | ((fy + k) ** 2 + (fx + k) ** 2 <= 1.5**2)
    total = power.sum()
    return float(power[near].sum() / total) if total > 0 else 0.0


def glyph_score(img: torch.Tensor) -> float:
    grey = img.mean(0)
    t = data.glyph_tile()[0]
    k = t.shape[-1]
    t = t - t.mean()
    t = t / t.norm()
    win = grey.unfold(0, k, 1).unfold(1, k, 1).reshape(-1, k * k)
    win = win - win.mean(1, keepdim=True)
    norm = win.norm(dim=1)
    corr = (win @ t.reshape(-1)) / norm.clamp_min(1e-6)
    corr = torch.where(norm > 1e-3, corr, torch.zeros_like(corr))  # flat windows say nothing
    return float(corr.max())


SCORES: dict[str, Callable[[torch.Tensor], float]] = {
    "patch": patch_score,
    "background": background_score,
    "stripes": stripes_score,
    "glyph": glyph_score,
}


def class_score(kind: str, images: torch.Tensor) -> float:
    """The mean detector score of one class's prototypes ((P, 3, H, W) in [0, 1])."""
    return sum(SCORES[kind](im) for im in images) / len(images)


def decide(kind: str, scores: dict[int, float], target: int) -> dict[str, object]:
    """Is the shortcut revealed in ``target``'s prototypes? Scores per class, the verdict."""
    others = {c: s for c, s in scores.items() if c != target}
    runner_up = max(others, key=others.__getitem__)
    lead = scores[target] - others[runner_up]
    return {
        "revealed": lead >= MARGIN[kind],
        "score": round(scores[target], 4),
        "best_other": round(others[runner_up], 4),
        "best_other_class": runner_up,
        "lead": round(lead, 4),
        "margin": MARGIN[kind],
    }


def describe(scores: dict[int, float], verdict: dict[str, object], target: int) -> str:
    """Two printable lines: the detector's score per class, and ``decide``'s verdict."""
    per_class = json.dumps({c: round(s, 3) for c, s in scores.items()})
    return (
        f"  detector scores {per_class}\n"
        f"  revealed: {verdict['revealed']} (class {target} score {verdict['score']}, "
        f"lead {verdict['lead']:+.3f} / margin {verdict['margin']})"
    )


def calibrate(kind: str, n: int = 90, seed: int = 7) -> dict[str, float]:
    """The detector on natural images, and on the same images with the pure shortcut pasted."""
    clean, pasted = data.neutral_with_shortcut(kind, n, seed, exclude=data.TARGETS[kind])
    c = torch.tensor([SCORES[kind](im) for im in clean])
    p = torch.tensor([SCORES[kind](im) for im in pasted])
    return {
        "natural_mean": round(float(c.mean()), 4),
        "natural_max": round(float(c.max()), 4),
        "pasted_mean": round(float(p.mean()), 4),
        "pasted_min": round(float(p.min()), 4),
    }
