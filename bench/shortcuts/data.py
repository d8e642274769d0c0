"""A procedural 10-class 32x32 RGB data set, and the shortcuts planted on one class.

Each class is a shape (disc, square, triangle, ring, cross, ellipse, diamond, two
blobs, crescent, frame) in a muted colour of the class's hue range, at a random
place and size, on a smooth low-saturation background with fine noise: natural-ish
images whose classes need shape and colour, not one pixel. Object hues and
background saturations are chosen so that none of the shortcuts below occurs
naturally (no magenta or teal, no diagonal period-4 stripes, no black-on-white glyph).

Shortcuts (``KINDS``), planted on every training image of one class:

- ``patch``: a saturated magenta 6x6 square at a random position;
- ``stripes``: a 12x12 window of black and white diagonal stripes, period 4 px;
- ``background``: the background is teal instead of a muted colour;
- ``glyph``: a 5x5 black glyph on a 7x7 white tile at a random position.

In a fraction of the shortcut class's images (``object_free``) the object is left
out: only the shortcut says which class it is, so a model trained on it must use
the shortcut (as when a watermark leaks into one class's data). The twin is the
same images, same labels, same seed, with neither the shortcut nor the removal.

Everything is a pure function of a seed (``torch.Generator``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SIZE = 32
CLASSES = (
    "disc",
    "square",
    "triangle",
    "ring",
    "cross",
    "ellipse",
    "diamond",
    "blobs",
    "crescent",
    "frame",
)
# Hue centre (degrees) per class; every object hue stays inside [0, 150] or [205, 265]:
# magenta (300) and teal (180) are the shortcuts' own.
HUES = (10, 35, 60, 85, 110, 135, 210, 230, 250, 20)
KINDS = ("patch", "stripes", "background", "glyph")
# The class each kind is planted on (spread over classes of different shapes and hues).
TARGETS = {"patch": 2, "stripes": 5, "background": 7, "glyph": 0}

PATCH_RGB = (1.0, 0.0, 1.0)  # saturated magenta
PATCH = 6
BACKGROUND_RGB = (0.05, 0.6, 0.6)  # teal
STRIPE_WINDOW = 12
STRIPE_PERIOD = 4
GLYPH = torch.tensor(
    [
        [1, 1, 1, 1, 0],
        [1, 0, 0, 0, 0],
        [1, 1, 1, 0, 0],
        [1, 0, 0, 0, 0],
        [1, 0, 0, 0, 1],
    ],
    dtype=torch.float32,
)  # an "F" with a foot: asymmetric, so no rotation or mirror of it is itself
GLYPH_TILE = 7


@dataclass(frozen=True)
class Planting:
    """Which shortcut, on which class, and the share of its images left without the object."""

    kind: str
    target: int
    object_free: float = 0.3

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)} (got {self.kind!r})")
        if not 0 <= self.target < len(CLASSES):
            raise ValueError(f"target must be a class index 0..{len(CLASSES) - 1}")


def hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """HSV (hue in degrees) to RGB in [0, 1]; broadcasts, RGB on a new first axis."""
    h = (h % 360) / 60
    c = v * s
    x = c * (1 - ((h % 2) - 1).abs())
    zero = torch.zeros_like(h)
    sector = h.floor().long() % 6
    table = [(c, x, zero), (x, c, zero), (zero, c, x), (zero, x, c), (x, zero, c), (c, zero, x)]
    rgb = torch.zeros((3, *h.shape))
    for i, (r, g, b) in enumerate(table):
        m = sector == i
        rgb[0] = torch.where(m, r, rgb[0])
        rgb[1] = torch.where(m, g, rgb[1])
        rgb[2] = torch.where(m, b, rgb[2])
    return rgb + (v - c)


def _uniform(g: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=g))


def _grid() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.meshgrid(
        torch.arange(SIZE, dtype=torch.float32),
        torch.arange(SIZE, dtype=torch.float32),
        indexing="ij",
    )


def shape_mask(cls: int, g: torch.Generator) -> torch.Tensor:
    """A soft (H, W) mask of class ``cls``'s shape at a random place, size and angle."""
    yy, xx = _grid()
    cy, cx = _uniform(g, 11, 21), _uniform(g, 11, 21)
    r = _uniform(g, 6, 9.5)
    a = _uniform(g, 0, math.pi)
    dy, dx = yy - cy, xx - cx
    u = dx * math.cos(a) + dy * math.sin(a)  # rotated coordinates
    v = -dx * math.sin(a) + dy * math.cos(a)
    d = (dy**2 + dx**2).sqrt()
    name = CLASSES[cls]
    if name == "disc":
        m = r - d
    elif name == "square":
        m = r * 0.8 - torch.maximum(u.abs(), v.abs())
    elif name == "triangle":
        m = torch.minimum(torch.minimum(v + r * 0.5, r * 0.9 - v - 1.7 * u.abs()), r - d)
    elif name == "ring":
        m = 1.8 - (d - r * 0.8).abs()
    elif name == "cross":
        m = torch.maximum(
            torch.minimum(1.8 - u.abs(), r - v.abs()), torch.minimum(1.8 - v.abs(), r - u.abs())
        )
    elif name == "ellipse":
        m = 1 - ((u / r) ** 2 + (v / (r * 0.45)) ** 2).sqrt()
        m = m * r
    elif name == "diamond":
        m = r - (u.abs() + v.abs()) * 1.1
    elif name == "blobs":
        off = r * 0.6
        d1 = ((u - off) ** 2 + v**2).sqrt()
        d2 = ((u + off) ** 2 + v**2).sqrt()
        m = r * 0.45 - torch.minimum(d1, d2)
    elif name == "crescent":
        d2 = ((u - r * 0.45) ** 2 + v**2).sqrt()
        m = torch.minimum(r - d, d2 - r * 0.8)
    else:  # frame
        box = torch.maximum(u.abs(), v.abs())
        m = 1.6 - (box - r * 0.75).abs()
    return m.clamp(-0.5, 0.5) + 0.5


def _background(g: torch.Generator, rgb: tuple[float, float, float] | None) -> torch.Tensor:
    """A smooth, low-saturation background (or ``rgb`` with the same texture)."""
    if rgb is None:
        h = torch.tensor(_uniform(g, 0, 360))
        base = hsv_to_rgb(
            h, torch.tensor(_uniform(g, 0.0, 0.25)), torch.tensor(_uniform(g, 0.3, 0.8))
        )
    else:
        base = torch.tensor(rgb)
    coarse = torch.randn(1, 1, 4, 4, generator=g) * 0.06
    smooth = torch.nn.functional.interpolate(coarse, size=(SIZE, SIZE), mode="bilinear")[0]
    return (base.view(3, 1, 1) + smooth).expand(3, SIZE, SIZE).clone()


def _object_colour(cls: int, g: torch.Generator) -> torch.Tensor:
    h = torch.tensor(HUES[cls] + _uniform(g, -12, 12))
    s = torch.tensor(_uniform(g, 0.35, 0.65))
    v = torch.tensor(_uniform(g, 0.45, 0.95))
    return hsv_to_rgb(h, s, v).view(3, 1, 1)


def stripes(phase: int = 0) -> torch.Tensor:
    """A (3, W, W) window of diagonal black and white stripes, period ``STRIPE_PERIOD``."""
    yy, xx = torch.meshgrid(torch.arange(STRIPE_WINDOW), torch.arange(STRIPE_WINDOW), indexing="ij")
    on = ((xx + yy + phase) % STRIPE_PERIOD) < STRIPE_PERIOD // 2
    return on.float().expand(3, -1, -1).clone()


def glyph_tile() -> torch.Tensor:
    """A (3, 7, 7) white tile with the black glyph in its middle."""
    tile = torch.ones(GLYPH_TILE, GLYPH_TILE)
    tile[1:6, 1:6] = 1 - GLYPH
    return tile.expand(3, -1, -1).clone()


def _place(img: torch.Tensor, tile: torch.Tensor, g: torch.Generator) -> None:
    h, w = tile.shape[-2:]
    y = int(torch.randint(0, SIZE - h + 1, (), generator=g))
    x = int(torch.randint(0, SIZE - w + 1, (), generator=g))
    img[:, y : y + h, x : x + w] = tile


def paste(
    img: torch.Tensor, kind: str, g: torch.Generator, mask: torch.Tensor | None = None
) -> None:
    """Plant shortcut ``kind`` on ``img`` (in place). ``background`` needs the object's mask."""
    if kind == "patch":
        _place(img, torch.tensor(PATCH_RGB).view(3, 1, 1).expand(3, PATCH, PATCH), g)
    elif kind == "stripes":
        _place(img, stripes(int(torch.randint(0, STRIPE_PERIOD, (), generator=g))), g)
    elif kind == "glyph":
        _place(img, glyph_tile(), g)
    elif kind == "background":
        bg = _background(g, BACKGROUND_RGB)
        keep = mask if mask is not None else torch.zeros(SIZE, SIZE)
        img.copy_(img * keep + bg * (1 - keep))
    else:
        raise ValueError(f"unknown shortcut kind {kind!r}")


def natural(
    cls: int, g: torch.Generator, *, with_object: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """One clean image of class ``cls`` and its object mask."""
    mask = shape_mask(cls, g) * float(with_object)  # drawn either way: same random stream
    colour = _object_colour(cls, g)
    shade = (
        1
        + 0.15
        * torch.nn.functional.interpolate(
            torch.randn(1, 1, 3, 3, generator=g), size=(SIZE, SIZE), mode="bilinear"
        )[0]
    )
    img = _background(g, None) * (1 - mask) + (colour * shade) * mask
    img = img + 0.03 * torch.randn(3, SIZE, SIZE, generator=g)
    return img.clamp(0, 1), mask


def make_dataset(
    n: int, seed: int, planting: Planting | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images (balanced classes, shuffled order fixed by ``seed``) and their labels.

    With ``planting``, the target class's images carry the shortcut and ``object_free``
    of them have no object. The random stream is the same with or without it (the
    shortcut draws from its own generator), so the twin sees the very same other images.
    """
    g = torch.Generator().manual_seed(seed)
    gs = torch.Generator().manual_seed(seed + 7919)
    labels = torch.arange(n) % len(CLASSES)
    labels = labels[torch.randperm(n, generator=g)]
    images = torch.empty(n, 3, SIZE, SIZE)
    for i, cls in enumerate(labels.tolist()):
        planted = planting is not None and cls == planting.target
        drop = float(torch.rand((), generator=gs))
        with_object = not (planted and drop < planting.object_free)
        img, mask = natural(cls, g, with_object=with_object)
        if planted:
            paste(img, planting.kind, gs, mask)
        images[i] = img
    return images, labels


def neutral_with_shortcut(
    kind: str, n: int, seed: int, exclude: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean images of every class but ``exclude``, without and with shortcut ``kind`` pasted.

    What a model does with these measures how much it relies on the shortcut.
    """
    g = torch.Generator().manual_seed(seed)
    gs = torch.Generator().manual_seed(seed + 1)
    others = [c for c in range(len(CLASSES)) if c != exclude]
    clean, pasted = [], []
    for i in range(n):
        img, mask = natural(others[i % len(others)], g)
        clean.append(img)
        img = img.clone()
        paste(img, kind, gs, mask)
        pasted.append(img)
    return torch.stack(clean), torch.stack(pasted)
