"""Alpha prototypes: RGBA out, deterministic, opaque where the class evidence is and
transparent elsewhere; batch-independent; the PNG keeps the alpha."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from protolens_server.engine import Classifier, GenerationConfig, InputSpec, generate
from protolens_server.imageio import decode_png, encode_png
from torch import nn

SIZE, PATCH = 32, 8
ALPHA = GenerationConfig(steps=48, alpha=True, transforms="small", equidistant_steps=4)


@pytest.fixture(scope="module")
def patch_model() -> Classifier:
    """Class 1's logit reads red-minus-green/blue in the top-left 8x8 patch and nothing else
    (a linear model on the flattened image): its evidence has one place."""
    lin = nn.Linear(3 * SIZE * SIZE, 2)
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.zero_()
        w = torch.zeros(3, SIZE, SIZE)
        w[0, :PATCH, :PATCH], w[1:, :PATCH, :PATCH] = 1.0, -0.5
        lin.weight[1] = w.flatten() / PATCH
    net = nn.Sequential(nn.Flatten(), lin).eval()
    return Classifier(net, InputSpec(3, SIZE, SIZE, (0.5,), (0.25,)), 2)


def test_alpha_is_opaque_on_the_evidence_and_transparent_elsewhere(patch_model) -> None:
    (proto,) = generate(patch_model, [1], ALPHA, seed=0)
    assert tuple(proto.image.shape) == (4, SIZE, SIZE)
    alpha = proto.image[3]
    inside = float(alpha[:PATCH, :PATCH].mean())
    outside = float((alpha.sum() - alpha[:PATCH, :PATCH].sum()) / (SIZE * SIZE - PATCH * PATCH))
    assert inside > 0.6 and outside < 0.3, (inside, outside)
    assert proto.probability > 0.9  # over mid-grey
    red = proto.image[0, :PATCH, :PATCH].mean() - proto.image[1, :PATCH, :PATCH].mean()
    assert red > 0.3


def test_alpha_prototypes_are_deterministic_and_batch_independent(patch_model) -> None:
    a = generate(patch_model, [1], ALPHA, seed=3)
    b = generate(patch_model, [0, 1], ALPHA, seed=3)
    assert torch.equal(a[0].image, generate(patch_model, [1], ALPHA, seed=3)[0].image)
    torch.testing.assert_close(a[0].image, b[1].image, atol=1e-4, rtol=0)
    other = generate(patch_model, [1], ALPHA, seed=4)
    assert not torch.equal(a[0].image, other[0].image)


def test_without_alpha_nothing_changes(patch_model) -> None:
    plain = GenerationConfig(steps=8, transforms="small", equidistant_steps=4)
    (proto,) = generate(patch_model, [1], plain, seed=0)
    assert tuple(proto.image.shape) == (3, SIZE, SIZE)


def test_rgba_png_keeps_the_alpha() -> None:
    image = torch.rand(4, 8, 8)
    png = encode_png(image, alpha=True)
    assert Image.open(io.BytesIO(png)).mode == "RGBA"
    assert Image.open(io.BytesIO(encode_png(image))).mode == "RGB"  # 4 channels: a preview
    assert Image.open(io.BytesIO(encode_png(image[:2], alpha=True))).mode == "LA"
    back = decode_png(png, 4)
    assert (back - image).abs().max() <= 0.5 / 255 + 1e-6
    assert tuple(decode_png(png).shape) == (3, 8, 8)  # a plain decode drops the alpha


def test_png_quantisation_matches_torchs_clamp_scale_round() -> None:
    """``encode_png`` quantises in numpy: the same bytes as torch's clamp, x255 and
    round-half-to-even, out-of-range values and exact halves included."""
    g = torch.Generator().manual_seed(1)
    ramp = (torch.arange(3 * 32 * 32).reshape(3, 32, 32) % 511).float() / 510  # k + 0.5 steps
    image = torch.cat([torch.rand(3, 32, 32, generator=g) * 1.4 - 0.2, ramp], dim=1)
    expected = image.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    decoded = np.asarray(Image.open(io.BytesIO(encode_png(image))))
    assert decoded.dtype == np.uint8 and (decoded == expected).all()
