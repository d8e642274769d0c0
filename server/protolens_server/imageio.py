"""Images in and out: PNG bytes <-> (C, H, W) float tensors in [0, 1].

Used by the ``generate`` CLI and the workers to store prototypes, and by
anything that feeds photos to a model (``load_image`` resizes the shorter side
and centre-crops, the usual ImageNet evaluation transform).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from protolens_server.errors import InvalidArgument

# Resize the shorter side to size / CROP_FRACTION, then centre-crop `size`
# (224 -> 256 -> 224): the evaluation transform ImageNet classifiers expect.
CROP_FRACTION = 0.875


def encode_png(image: torch.Tensor) -> bytes:
    """PNG bytes of a (C, H, W) tensor in [0, 1]: grayscale for C=1, RGB for C=3."""
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise InvalidArgument("image", f"expected shape (1|3, H, W), got {tuple(image.shape)}")
    arr = image.detach().to("cpu", torch.float32).clamp(0, 1).mul(255).round().to(torch.uint8)
    hwc = arr.permute(1, 2, 0).numpy()
    pil = Image.fromarray(hwc[:, :, 0], "L") if hwc.shape[2] == 1 else Image.fromarray(hwc, "RGB")
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue()


def decode_png(data: bytes, channels: int | None = None) -> torch.Tensor:
    """A (C, H, W) float32 tensor in [0, 1] from image bytes (PNG or any Pillow format).

    ``channels`` forces 1 (grayscale) or 3 (RGB); by default grayscale images
    stay 1-channel and everything else becomes RGB.
    """
    try:
        pil = Image.open(io.BytesIO(data))
        pil.load()
    except (UnidentifiedImageError, OSError) as exc:
        raise InvalidArgument("image", f"not a readable image: {exc}") from exc
    return pil_to_tensor(pil, channels)


def pil_to_tensor(pil: Image.Image, channels: int | None = None) -> torch.Tensor:
    if channels is None:
        channels = 1 if pil.mode in ("L", "I", "I;16", "1") else 3
    if channels not in (1, 3):
        raise InvalidArgument("channels", f"must be 1 or 3, got {channels}")
    pil = pil.convert("L" if channels == 1 else "RGB")
    arr = np.asarray(pil, dtype=np.uint8).copy()
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr).permute(2, 0, 1).float().div(255)


def load_image(
    source: str | Path | bytes | Image.Image | np.ndarray,
    height: int,
    width: int,
    channels: int = 3,
) -> torch.Tensor:
    """A photo as a (C, height, width) tensor: shorter side resized, centre-cropped."""
    if isinstance(source, Image.Image):
        pil = source
    elif isinstance(source, np.ndarray):
        pil = Image.fromarray(source)
    else:
        try:
            data = source if isinstance(source, bytes) else Path(source).read_bytes()
            pil = Image.open(io.BytesIO(data))
            pil.load()
        except (UnidentifiedImageError, OSError) as exc:
            raise InvalidArgument("image", f"{str(source)[:200]}: not a readable image") from exc
    return pil_to_tensor(resize_center_crop(pil, height, width), channels)


def resize_center_crop(pil: Image.Image, height: int, width: int) -> Image.Image:
    scale = max(height, width) / CROP_FRACTION / min(pil.size)
    w, h = pil.size
    resized = pil.resize(
        (max(width, round(w * scale)), max(height, round(h * scale))), Image.Resampling.BILINEAR
    )
    rw, rh = resized.size
    left, top = (rw - width) // 2, (rh - height) // 2
    return resized.crop((left, top, left + width, top + height))


def save_png(image: torch.Tensor, path: str | Path) -> Path:
    p = Path(path)
    p.write_bytes(encode_png(image))
    return p
