"""Natural reference images that ship with a package: scikit-image's sample photos.

No ImageNet data can be downloaded where protolens is built and tested, but
scikit-image (the ``demo`` extra) ships a few photos of ImageNet classes. Random
crops and flips of each photo make a small reference set: enough for the demo and
the evaluations to compute path-similarity scores, though one photo per class is
a far harder bar than many photos of the class (docs/scores.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SKIMAGE_CLASSES = {"coffee": 967, "camera": 872, "chelsea": 285, "rocket": 657}
"""scikit-image sample photo -> the ImageNet class EfficientNet-Lite0 gives it."""


def photo(name: str) -> Image.Image:
    """One scikit-image sample photo as an RGB image."""
    from skimage import data

    array = getattr(data, name)()
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    return Image.fromarray(array[..., :3].astype(np.uint8))


def crops(source: Image.Image, n: int, size: int, rng: np.random.Generator) -> list[Image.Image]:
    """Random square crops (side from ``size`` to the short side) with random flips."""
    return [cut(source, box) for box in crop_boxes(source.size, n, size, rng)]


Box = tuple[int, int, int, bool]
"""A square crop: left, top, side (in the source's pixels) and whether it is mirrored."""


def crop_boxes(
    source_size: tuple[int, int], n: int, size: int, rng: np.random.Generator
) -> list[Box]:
    """Where ``crops`` cuts: ``n`` boxes of a ``(width, height)`` source, in its draw order."""
    w, h = source_size
    out = []
    for _ in range(n):
        side = int(rng.integers(size, min(w, h) + 1))
        left, top = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        out.append((left, top, side, bool(rng.random() < 0.5)))
    return out


def cut(source: Image.Image, box: Box) -> Image.Image:
    left, top, side, mirrored = box
    crop = source.crop((left, top, left + side, top + side))
    return crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if mirrored else crop


def write_reference_set(root: Path, *, per_class: int = 12, size: int = 224, seed: int = 0) -> Path:
    """Write ``root/<class index>/<photo>-NN.png`` for every photo in SKIMAGE_CLASSES."""
    rng = np.random.default_rng(seed)
    for name, cls in SKIMAGE_CLASSES.items():
        folder = root / str(cls)
        folder.mkdir(parents=True, exist_ok=True)
        for i, crop in enumerate(crops(photo(name), per_class, size, rng)):
            crop.save(folder / f"{name}-{i:02d}.png")
    return root
