"""PNG round trips and photo loading."""

from __future__ import annotations

import io

import pytest
import skimage.data
import torch
from PIL import Image
from protolens_server.errors import InvalidArgument
from protolens_server.imageio import decode_png, encode_png, load_image, save_png


@pytest.mark.parametrize("channels", [1, 3])
def test_png_round_trip(channels) -> None:
    image = torch.rand(channels, 12, 9, generator=torch.Generator().manual_seed(channels))
    data = encode_png(image)
    assert data.startswith(b"\x89PNG")
    pil = Image.open(io.BytesIO(data))
    assert pil.mode == ("L" if channels == 1 else "RGB") and pil.size == (9, 12)
    back = decode_png(data)
    assert back.shape == image.shape
    assert (back - image).abs().max() <= 0.5 / 255 + 1e-6


def test_encode_clamps_and_checks_shape() -> None:
    assert decode_png(encode_png(torch.full((3, 8, 8), 2.0))).min() == 1.0
    with pytest.raises(InvalidArgument, match="expected shape"):
        encode_png(torch.rand(4, 8, 8))


def test_decode_rejects_garbage_and_forces_channels() -> None:
    with pytest.raises(InvalidArgument, match="not a readable image"):
        decode_png(b"nope")
    gray = encode_png(torch.rand(1, 8, 8))
    assert decode_png(gray, channels=3).shape == (3, 8, 8)


def test_load_image_resizes_and_centre_crops(tmp_path) -> None:
    x = load_image(skimage.data.coffee(), 224, 200)
    assert x.shape == (3, 224, 200) and x.min() >= 0 and x.max() <= 1
    path = save_png(x, tmp_path / "x.png")
    assert load_image(path, 32, 32, channels=1).shape == (1, 32, 32)
