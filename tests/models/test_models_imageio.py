"""PNG round trips and photo loading."""

from __future__ import annotations

import io

import pytest
import skimage.data
import torch
from PIL import Image
from protolens_server.errors import InvalidArgument
from protolens_server.imageio import (
    decode_png,
    decode_tensor,
    encode_png,
    encode_tensor,
    load_image,
    png_provenance,
    preview_png,
    save_png,
)


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
        encode_png(torch.rand(8, 8))


@pytest.mark.parametrize(("channels", "shown"), [(2, [0]), (4, [0, 1, 2]), (7, [0, 1, 2])])
def test_png_preview_of_any_number_of_channels(channels, shown) -> None:
    image = torch.rand(channels, 6, 5, generator=torch.Generator().manual_seed(channels))
    back = decode_png(encode_png(image))
    assert back.shape == (len(shown), 6, 5)
    assert (back - image[shown]).abs().max() <= 0.5 / 255 + 1e-6
    picked = decode_png(encode_png(image, channels=[1, 0, 1]))
    assert (picked - image[[1, 0, 1]]).abs().max() <= 0.5 / 255 + 1e-6
    gray = decode_png(encode_png(image, channels=[channels - 1]))
    assert (gray[0] - image[channels - 1]).abs().max() <= 0.5 / 255 + 1e-6
    with pytest.raises(InvalidArgument, match="preview_channels"):
        encode_png(image, channels=[0, channels])
    with pytest.raises(InvalidArgument, match="preview_channels"):
        encode_png(image, channels=[0, 1])


def test_png_carries_provenance_in_text_chunks() -> None:
    meta = {"model_digest": "ab" * 32, "target": '{"classes":[3]}', "seed": "7", "note": "é"}
    data = encode_png(torch.rand(3, 4, 4), provenance=meta)
    assert png_provenance(data) == meta
    assert Image.open(io.BytesIO(data)).text["protolens:seed"] == "7"  # any PNG reader sees it
    assert png_provenance(encode_png(torch.rand(3, 4, 4))) == {}


@pytest.mark.parametrize("channels", [1, 3, 4, 6])
def test_float_tensor_round_trip_is_lossless(channels) -> None:
    image = torch.rand(channels, 5, 7, generator=torch.Generator().manual_seed(channels))
    data = encode_tensor(image, {"seed": "3", "model_digest": "cd" * 32})
    back, meta = decode_tensor(data)
    assert torch.equal(back, image) and back.dtype == torch.float32
    assert meta == {"seed": "3", "model_digest": "cd" * 32}
    with pytest.raises(InvalidArgument, match="not a protolens safetensors"):
        decode_tensor(data[:20])


def test_float_tensor_is_a_safetensors_file() -> None:
    safetensors = pytest.importorskip("safetensors.torch", reason="the hf/dev extra")
    image = torch.rand(4, 3, 2)
    data = encode_tensor(image, {"seed": "1"})
    assert torch.equal(safetensors.load(data)["image"], image)
    theirs = safetensors.save({"image": image}, metadata={"seed": "2"})
    back, meta = decode_tensor(theirs)
    assert torch.equal(back, image) and meta == {"seed": "2"}


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


def test_preview_of_an_alpha_tensor_keeps_the_opacity() -> None:
    image = torch.rand(4, 6, 5, generator=torch.Generator().manual_seed(4))  # RGB + opacity
    tensor = encode_tensor(image, {"seed": "2"})
    gray = Image.open(io.BytesIO(preview_png(tensor, [2], alpha=True)))
    rgba = Image.open(io.BytesIO(preview_png(tensor, [2, 1, 0], alpha=True)))
    assert gray.mode == "LA" and rgba.mode == "RGBA"
    expected = image[3].mul(255).round().to(torch.uint8).flatten().tolist()
    assert list(gray.getchannel("A").getdata()) == expected
    assert list(rgba.getchannel("R").getdata()) == list(gray.getchannel("L").getdata())
    with pytest.raises(InvalidArgument, match=r"0\.\.2"):  # the opacity is not a colour
        preview_png(tensor, [3], alpha=True)
    assert Image.open(io.BytesIO(preview_png(tensor, [3]))).mode == "L"  # 4 plain channels


def _sideways_photo(orientation: int = 6) -> tuple[bytes, Image.Image]:
    """A portrait photo (red top, blue bottom) stored as a phone stores it: the pixels
    turned, and an EXIF orientation tag saying how to turn them back."""
    upright = Image.new("RGB", (60, 90), (255, 0, 0))
    upright.paste((0, 0, 255), (0, 45, 60, 90))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # orientation 6 undoes this
    exif = stored.getexif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    stored.save(buf, "JPEG", quality=95, exif=exif)
    return buf.getvalue(), upright


def test_a_photo_with_an_exif_orientation_is_read_upright(tmp_path) -> None:
    """Read raw, the portrait reached the model on its side (red left, blue right)."""
    from protolens_server.engine import InputSpec
    from protolens_server.scores.references import load_image as load_reference

    data, _ = _sideways_photo()
    for image in (
        load_image(data, 32, 32),  # a photo sent to the API (isolation)
        load_reference(_write(tmp_path / "ref.jpg", data), InputSpec(3, 32, 32)),  # a reference
    ):
        top, bottom = image[:, :8].mean(dim=(1, 2)), image[:, -8:].mean(dim=(1, 2))
        assert top[0] > 0.8 and top[2] < 0.2, top  # red on top
        assert bottom[2] > 0.8 and bottom[0] < 0.2, bottom  # blue below
        left, right = image[:, :, :8].mean(dim=(1, 2)), image[:, :, -8:].mean(dim=(1, 2))
        assert torch.allclose(left, right, atol=0.05)  # not sideways


def _write(path, data: bytes):  # type: ignore[no-untyped-def]
    path.write_bytes(data)
    return path
