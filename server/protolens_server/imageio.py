"""Images in and out: PNG bytes <-> (C, H, W) float tensors in [0, 1].

Used by the ``generate`` CLI and the workers to store prototypes, and by
anything that feeds photos to a model (``load_image`` resizes the shorter side
and centre-crops, the usual ImageNet evaluation transform).

A prototype of any number of channels C has two forms (docs/prototype-files.md):

- ``encode_png``: an 8-bit preview, grayscale or RGB, of chosen channels
  (``preview_channels``: all of a 1- or 3-channel image; channel 0 of a 2-channel
  one; channels 0-2 of one with more), carrying its provenance (model digest,
  target, config, seed, engine version) in PNG text chunks;
- ``encode_tensor``: the lossless float32 (C, H, W) tensor as a safetensors file
  (tensor ``image``, provenance in the header's ``__metadata__``), written and read
  here without the safetensors package (the format is a length, a JSON header and
  the raw little-endian bytes).
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from protolens_server.errors import InvalidArgument

# Resize the shorter side to size / CROP_FRACTION, then centre-crop `size`
# (224 -> 256 -> 224): the evaluation transform ImageNet classifiers expect.
CROP_FRACTION = 0.875
_PNG_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
# The most pixels a photo given to ``load_image`` may have, and the most its resized copy
# may have (a 1 x 4,000,000 strip is a few KB of PNG, and resizing its shorter side up
# to the model's input made a multi-GB image): 40 megapixels, 120 MB as RGB.
MAX_IMAGE_PIXELS = 40_000_000
_UNREADABLE = (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError)


TENSOR_NAME = "image"  # the tensor's name inside a prototype's safetensors file
PROVENANCE_PREFIX = "protolens:"  # PNG text chunk keys: protolens:model_digest, ...


def preview_channels(channels: int, chosen: Sequence[int] | None = None) -> tuple[int, ...]:
    """Which channels of a C-channel image its PNG preview shows: ``chosen`` (1 or 3
    indices, checked), else all of a 1- or 3-channel image, channel 0 of a 2-channel
    one, channels 0, 1, 2 of one with more."""
    if chosen:
        picked = tuple(int(c) for c in chosen)
        if len(picked) not in (1, 3) or not all(0 <= c < channels for c in picked):
            raise InvalidArgument(
                "preview_channels",
                f"{list(picked)}: give 1 (grayscale) or 3 (RGB) channel indices in "
                f"0..{channels - 1}",
            )
        return picked
    if channels in (1, 3):
        return tuple(range(channels))
    return (0,) if channels == 2 else (0, 1, 2)


def encode_png(
    image: torch.Tensor,
    *,
    channels: Sequence[int] | None = None,
    provenance: Mapping[str, str] | None = None,
    alpha: bool = False,
) -> bytes:
    """PNG bytes of a (C, H, W) tensor in [0, 1]: grayscale or RGB of ``preview_channels``
    (every channel for C = 1 or 3), with ``provenance`` as ``protolens:<key>`` text
    chunks. ``alpha``: the last channel is an opacity (an alpha prototype), kept as the
    PNG's alpha (grayscale+alpha or RGBA)."""
    if image.ndim != 3 or image.shape[0] < (2 if alpha else 1):
        raise InvalidArgument("image", f"expected shape (C, H, W), got {tuple(image.shape)}")
    colour = image[:-1] if alpha else image
    shown = list(preview_channels(int(colour.shape[0]), channels))
    if alpha:
        shown.append(int(image.shape[0]) - 1)
    # in numpy: the same float32 arithmetic and rounding (half to even) as torch's ops,
    # at a fraction of their per-call cost on a small image
    arr = image.detach().to("cpu", torch.float32).numpy()[shown]
    hwc = np.rint(np.clip(arr, 0, 1) * np.float32(255)).astype(np.uint8).transpose(1, 2, 0)
    mode = _PNG_MODES[hwc.shape[2]]
    pil = Image.fromarray(hwc[:, :, 0], mode) if mode == "L" else Image.fromarray(hwc, mode)
    info = PngImagePlugin.PngInfo()
    for key, value in (provenance or {}).items():
        info.add_itxt(f"{PROVENANCE_PREFIX}{key}", str(value))
    buf = io.BytesIO()
    pil.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def png_provenance(data: bytes) -> dict[str, str]:
    """The ``protolens:`` text chunks of a PNG, without the prefix."""
    pil = Image.open(io.BytesIO(data))
    text = getattr(pil, "text", {}) or {}
    return {
        k.removeprefix(PROVENANCE_PREFIX): str(v)
        for k, v in text.items()
        if k.startswith(PROVENANCE_PREFIX)
    }


def encode_tensor(image: torch.Tensor, metadata: Mapping[str, str] | None = None) -> bytes:
    """A safetensors file holding the (C, H, W) float32 tensor ``image`` (lossless) and
    ``metadata`` (string to string) in its header."""
    t = image.detach().to("cpu", torch.float32).contiguous()
    data = t.numpy().astype("<f4", copy=False).tobytes()
    header: dict[str, object] = {
        TENSOR_NAME: {"dtype": "F32", "shape": list(t.shape), "data_offsets": [0, len(data)]}
    }
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    raw = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
    return struct.pack("<Q", len(raw)) + raw + data


def decode_tensor(data: bytes) -> tuple[torch.Tensor, dict[str, str]]:
    """The float32 tensor and metadata of a prototype's safetensors file."""
    try:
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + n])
        entry = header[TENSOR_NAME]
        start, end = entry["data_offsets"]
        if entry["dtype"] != "F32" or end - start != 4 * int(np.prod(entry["shape"])):
            raise ValueError(f"unexpected tensor entry {entry}")
        body = data[8 + n + start : 8 + n + end]
        arr = np.frombuffer(body, dtype="<f4").reshape(entry["shape"]).astype(np.float32)
    except (struct.error, ValueError, KeyError, TypeError) as exc:
        raise InvalidArgument("tensor", f"not a protolens safetensors file: {exc}") from exc
    return torch.from_numpy(arr.copy()), dict(header.get("__metadata__") or {})


def preview_png(tensor: bytes, channels: Sequence[int], *, alpha: bool = False) -> bytes:
    """A PNG of ``channels`` of a stored prototype's float tensor (``encode_tensor``
    bytes), carrying the tensor's provenance. ``alpha``: the tensor's last channel is an
    opacity (an alpha prototype, an isolation's mask), kept as the PNG's alpha; the
    ``channels`` then index the colour channels only."""
    image, meta = decode_tensor(tensor)
    meta.pop("from", None)
    return encode_png(image, channels=channels, provenance=meta, alpha=alpha)


def png_channels(data: bytes) -> int:
    """How many channels an image file holds (2 for grayscale+alpha, 4 for RGBA)."""
    try:
        return len(Image.open(io.BytesIO(data)).getbands())
    except _UNREADABLE as exc:
        raise InvalidArgument("image", f"not a readable image: {exc}") from exc


def decode_png(data: bytes, channels: int | None = None) -> torch.Tensor:
    """A (C, H, W) float32 tensor in [0, 1] from image bytes (PNG or any Pillow format).

    ``channels`` forces 1 (grayscale) or 3 (RGB), or 2 or 4 (with alpha); by default
    grayscale images stay 1-channel and everything else becomes RGB (an alpha channel
    is dropped: pass ``png_channels(data)`` to keep it).
    """
    try:
        pil = Image.open(io.BytesIO(data))
        pil.load()
    except _UNREADABLE as exc:
        raise InvalidArgument("image", f"not a readable image: {exc}") from exc
    return pil_to_tensor(pil, channels)


def pil_to_tensor(pil: Image.Image, channels: int | None = None) -> torch.Tensor:
    if channels is None:
        channels = 1 if pil.mode in ("L", "I", "I;16", "1") else 3
    if channels not in _PNG_MODES:
        raise InvalidArgument("channels", f"must be 1 or 3 (2 or 4 with alpha), got {channels}")
    pil = pil.convert(_PNG_MODES[channels])
    arr = np.asarray(pil, dtype=np.uint8).copy()
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr).permute(2, 0, 1).float().div(255)


def upright(pil: Image.Image) -> Image.Image:
    """The image as a viewer shows it: its EXIF orientation applied. Phone cameras store
    photos sideways with an orientation tag; read raw, a portrait photo reached the model
    turned by 90 degrees (and was centre-cropped across the wrong axis)."""
    return ImageOps.exif_transpose(pil) or pil


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
        what = f"the image ({len(source)} bytes)" if isinstance(source, bytes) else str(source)
        try:
            data = source if isinstance(source, bytes) else Path(source).read_bytes()
            pil = Image.open(io.BytesIO(data))
            _check_pixels(what, *pil.size)  # from the header, before decoding a byte
            pil.load()
            pil = upright(pil)
        except Image.DecompressionBombError as exc:
            raise InvalidArgument(
                "image", f"{what[:200]} declares over {MAX_IMAGE_PIXELS:,} pixels: scale it down"
            ) from exc
        except UnidentifiedImageError as exc:
            raise InvalidArgument(
                "image", f"{what[:200]} is not in an image format this server reads (PNG, JPEG)"
            ) from exc
        except _UNREADABLE as exc:
            raise InvalidArgument("image", f"{what[:200]}: not a readable image: {exc}") from exc
    return pil_to_tensor(resize_center_crop(pil, height, width), channels)


def _check_pixels(what: str, w: int, h: int) -> None:
    """InvalidArgument unless a w x h image is within MAX_IMAGE_PIXELS."""
    if w * h > MAX_IMAGE_PIXELS:
        raise InvalidArgument(
            "image",
            f"{what[:200]} is {w}x{h} pixels; at most {MAX_IMAGE_PIXELS:,} are accepted:"
            " scale it down",
        )


def resize_center_crop(pil: Image.Image, height: int, width: int) -> Image.Image:
    scale = max(height, width) / CROP_FRACTION / min(pil.size)
    w, h = pil.size
    size = (max(width, round(w * scale)), max(height, round(h * scale)))
    _check_pixels("the image", w, h)
    if size[0] * size[1] > MAX_IMAGE_PIXELS:
        raise InvalidArgument(
            "image",
            f"the image is {w}x{h} pixels: fitting its shorter side to the model's input"
            f" makes it {size[0]}x{size[1]}, over {MAX_IMAGE_PIXELS:,} pixels; crop it nearer"
            " to square",
        )
    resized = pil.resize(size, Image.Resampling.BILINEAR)
    rw, rh = resized.size
    left, top = (rw - width) // 2, (rh - height) // 2
    return resized.crop((left, top, left + width, top + height))


def save_png(image: torch.Tensor, path: str | Path) -> Path:
    p = Path(path)
    p.write_bytes(encode_png(image))
    return p
