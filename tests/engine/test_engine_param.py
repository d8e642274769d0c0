"""Parameterisations: exact starts, valid images, blur that smooths."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from protolens_server.engine import Classifier, GenerationConfig, InputSpec, generate
from protolens_server.engine._param import make_param

CPU = torch.device("cpu")
KINDS = [("fourier", True), ("fourier", False), ("pixel", True), ("pixel", False)]


def _tv(x: torch.Tensor) -> float:
    x = x.detach()
    return float(
        (x[..., 1:] - x[..., :-1]).abs().mean() + (x[..., 1:, :] - x[..., :-1, :]).abs().mean()
    )


@pytest.mark.parametrize(("kind", "decorrelate"), KINDS)
@pytest.mark.parametrize("shape", [(3, 32, 32), (3, 17, 24), (1, 16, 16)])
def test_set_images_is_an_exact_start(
    kind: str, decorrelate: bool, shape: tuple[int, int, int]
) -> None:
    images = torch.rand(2, *shape, generator=torch.Generator().manual_seed(0)) * 0.9 + 0.05
    param = make_param(kind, 2, shape, decorrelate, CPU)
    param.set_images(images)
    assert torch.allclose(param.image(), images, atol=1e-5)


@pytest.mark.parametrize(("kind", "decorrelate"), KINDS)
def test_zero_parameters_are_grey_and_images_stay_in_range(kind: str, decorrelate: bool) -> None:
    param = make_param(kind, 3, (3, 20, 20), decorrelate, CPU)
    assert torch.allclose(param.image(), torch.full((3, 3, 20, 20), 0.5))
    with torch.no_grad():
        param.tensors[0].normal_(0, 50)
    image = param.image()
    assert image.min() >= 0 and image.max() <= 1


@pytest.mark.parametrize(("kind", "decorrelate"), KINDS)
def test_blur_smooths_the_image(kind: str, decorrelate: bool) -> None:
    images = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 0.8 + 0.1
    param = make_param(kind, 1, (3, 32, 32), decorrelate, CPU)
    param.set_images(images)
    param.blur_(1.0)
    blurred = param.image()
    assert _tv(blurred) < 0.5 * _tv(images)
    # a blur keeps the mean colour
    assert torch.allclose(blurred.mean(dim=(2, 3)), images.mean(dim=(2, 3)), atol=0.05)


def test_fourier_parameters_receive_gradients() -> None:
    param = make_param("fourier", 2, (3, 16, 16), True, CPU)
    (grad,) = torch.autograd.grad(param.image()[:, 0].sum(), param.tensors)
    assert grad.shape == param.tensors[0].shape and grad.abs().sum() > 0


@pytest.mark.parametrize("decorrelate", [True, False])
def test_maco_keeps_its_magnitude_and_takes_the_phase_of_a_start(decorrelate: bool) -> None:
    shape = (3, 24, 20)
    images = torch.rand(2, *shape, generator=torch.Generator().manual_seed(2))
    source = make_param("maco", 2, shape, decorrelate, CPU)
    source.set_images(images)
    made = source.image().detach()
    assert made.min() > 0 and made.max() < 1
    # unit contrast before the sigmoid, whatever the start's contrast
    assert 0.15 < float(made.std()) < 0.25
    # a maco image's own phase gives it back, up to each channel's mean (the DC term)
    again = make_param("maco", 2, shape, decorrelate, CPU)
    again.set_images(made)
    a = torch.logit(again.image().detach())
    b = torch.logit(made)
    a, b = a - a.mean(dim=(2, 3), keepdim=True), b - b.mean(dim=(2, 3), keepdim=True)
    assert float(F.cosine_similarity(a.flatten(1), b.flatten(1)).min()) > 0.99
    # the magnitude is fixed: a pixel-noise start becomes 1/f noise, far smoother
    assert _tv(made) < 0.5 * _tv(images)


def test_maco_parameters_receive_gradients_and_blur_leaves_them() -> None:
    param = make_param("maco", 2, (3, 16, 16), True, CPU)
    param.set_images(torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3)))
    grads = torch.autograd.grad(param.image()[:, 0, 4:8, 4:8].sum(), param.tensors)
    assert [g.shape for g in grads] == [t.shape for t in param.tensors]
    assert all(g.abs().sum() > 0 for g in grads)  # the phases and each image's contrast
    before = param.image().detach()
    param.blur_(2.0)
    assert torch.equal(param.image().detach(), before)


def test_maco_learns_each_images_contrast() -> None:
    """A model that wants contrast gets it: the magnitude spectrum's shape is fixed, its
    scale is not (with the contrast fixed at 1, as in the MACO paper, the image's
    standard deviation could not move)."""
    spec = InputSpec(3, 32, 32, mean=(0.0,), std=(1.0,))
    wants_contrast = Classifier(
        lambda x: torch.stack([x.std(dim=(1, 2, 3)), -x.std(dim=(1, 2, 3))], 1) * 20, spec, 2
    )
    config = GenerationConfig(
        parameterisation="maco",
        steps=48,
        lr=0.1,
        transforms="none",
        hf_penalty=0.0,
        bn_prior=0.0,
        start="noise",
    )
    flat = generate(wants_contrast, [1], config)[0].image.std()
    contrasty = generate(wants_contrast, [0], config)[0].image.std()
    assert contrasty > 0.35 > 0.2 > flat, (contrasty, flat)
