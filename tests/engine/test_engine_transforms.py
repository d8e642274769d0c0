"""Transforms: shapes, known geometry, fused composition, per-image draws."""

from __future__ import annotations

import pytest
import torch
from protolens_server.engine import _transforms as T


def _image(n: int = 2, h: int = 32, w: int = 32) -> torch.Tensor:
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", ["none", "small", "medium", "large", "xlarge"])
def test_presets_keep_shape_and_range(name: str) -> None:
    t = T.preset(name)
    x = _image(3, 40, 30) * 2 - 1  # normalised images, mean colour 0
    out = t(x, torch.rand(3, t.n_draws))
    assert out.shape == x.shape
    assert out.min() >= -1 and out.max() <= 1
    if name == "none":
        assert out is x
    else:
        assert not torch.allclose(out, x)


def test_jitter_by_whole_pixels_is_a_shift() -> None:
    x = _image(1, 224, 224)
    d = 8.0  # pixels at 224: draws of 1.0 give +8, 0.0 give -8
    out = T.jitter(d)(x, torch.tensor([[1.0, 0.5]]))
    # output(u) = input(u + 8) in x: columns move left by 8
    assert torch.allclose(out[..., :, :-8], x[..., :, 8:], atol=1e-3)
    assert torch.allclose(out[..., :, -7:], torch.zeros_like(out[..., :, -7:]))


def test_pad_shows_a_grey_border_and_rotation_by_zero_is_identity() -> None:
    x = _image(1, 224, 224)
    padded = T.pad(12)(x, torch.empty(1, 0))
    assert torch.allclose(padded[..., :, :5], torch.zeros_like(padded[..., :, :5]))
    assert not torch.allclose(padded[..., 100:120, 100:120], torch.full((1, 3, 20, 20), 0.5))
    same = T.random_rotate(30)(x, torch.tensor([[0.5]]))
    assert torch.allclose(same, x, atol=1e-3)


def test_scale_zooms_in_about_the_centre() -> None:
    x = torch.zeros(1, 1, 64, 64)
    x[..., 24:40, 24:40] = 1.0  # a centred square of 16 pixels
    zoomed = T.random_scale(2.0, 2.0)(x, torch.tensor([[0.3]]))
    assert zoomed[..., 32, :].gt(0.5).sum() == 32  # twice as wide


def test_compose_is_one_resampling_equal_to_the_matrix_product() -> None:
    parts = [T.pad(12), T.jitter(8), T.random_scale(0.9, 1.1), T.random_rotate(10)]
    fused = T.compose(parts)
    draws = torch.rand(4, fused.n_draws)
    assert fused.n_draws == sum(p.n_draws for p in parts) == 4
    product = torch.eye(3).expand(4, 3, 3)
    used = 0
    for p in parts:
        product = product @ p.matrices(draws[:, used : used + p.n_draws], 32, 32)
        used += p.n_draws
    assert torch.allclose(fused.matrices(draws, 32, 32), product)


def test_transforms_are_differentiable() -> None:
    x = _image(2).requires_grad_(True)
    t = T.preset("medium")
    (grad,) = torch.autograd.grad(t(x, torch.rand(2, t.n_draws)).sum(), x)
    assert grad.abs().sum() > 0


def test_draw_stream_rows_depend_only_on_their_own_generator() -> None:
    def stream(seeds: list[int]) -> torch.Tensor:
        s = T.DrawStream(
            [torch.Generator().manual_seed(v) for v in seeds], 3, torch.device("cpu"), block=4
        )
        return torch.stack([s.next() for _ in range(10)])  # crosses block boundaries

    together = stream([5, 6, 7])
    assert torch.equal(together[:, 1], stream([6])[:, 0])
    assert torch.equal(together[:, 2], stream([9, 7])[:, 1])
    assert not torch.equal(together[:, 0], together[:, 1])
