"""Alpha prototypes: an opacity channel optimised with the image (Lucid's transparency).

``AlphaParam`` wraps an image parameterisation with a one-channel, pixel-parameterised
alpha. Every step the model sees the image composited over a fresh random
background, ``rgb * alpha + background * (1 - alpha)``: where the class
evidence is, the image must be opaque to survive any background; elsewhere the
alpha-mean penalty (``alpha_penalty``) makes it transparent. The stored prototype
is RGBA (straight alpha); its reported probability is that of the image over
mid-grey.

Backgrounds are smooth colour noise (a 4x4 grid of uniform colours, bilinearly
upsampled), drawn per image from its own generator, so a prototype does not
depend on its batch and the same seed gives the same pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _objectives as obj
from ._param import PERTURBATION_SD, ImageParam, make_param, param_shape
from ._seeds import derive_seed, generator

BACKGROUND_GRID = 4  # a background is a GRID x GRID grid of random colours, upsampled
FINAL_BACKGROUND = 0.5  # the grey the final image is evaluated over
# The alpha channel's parameterisation, whatever the image's: a Fourier alpha barely left
# its 0.5 start in 64 steps (bench/alpha_penalty.py, docs/modes.md)
ALPHA_PARAM = "pixel"


class AlphaParam:
    """An RGB parameterisation plus an alpha channel; ``image()`` is the composite."""

    def __init__(
        self,
        rgb: ImageParam,
        shape: tuple[int, int, int],
        seeds: list[int],
        device: torch.device,
    ) -> None:
        n, (_, h, w) = len(seeds), shape
        self.rgb = rgb
        self.alpha = make_param(ALPHA_PARAM, n, (1, h, w), False, device)
        self.gens = [generator(derive_seed("alpha-background", s)) for s in seeds]
        noise = torch.stack(
            [torch.randn(param_shape(ALPHA_PARAM, (1, h, w)), generator=g) for g in self.gens]
        )
        with torch.no_grad():  # alpha starts at 0.5 everywhere, images apart
            self.alpha.tensors[0].add_(noise.to(device) * PERTURBATION_SD)
        self.tensors = [*rgb.tensors, *self.alpha.tensors]
        self.final = False
        self.last_alpha: torch.Tensor | None = None

    def image(self) -> torch.Tensor:
        """The composite the model sees: over a new random background per call, or over
        mid-grey once ``final`` is set."""
        rgb = self.rgb.image()
        alpha = self.alpha.image()
        self.last_alpha = alpha
        if self.final:
            background = torch.full_like(rgb, FINAL_BACKGROUND)
        else:
            background = self._backgrounds(rgb.shape).to(rgb.device, rgb.dtype)
        return rgb * alpha + background * (1 - alpha)

    def _backgrounds(self, shape: torch.Size) -> torch.Tensor:
        _, c, h, w = shape
        return random_backgrounds(self.gens, c, h, w)

    def rgba(self) -> torch.Tensor:
        """(N, C + 1, H, W): the image and its alpha, straight (not premultiplied)."""
        return torch.cat([self.rgb.image(), self.alpha.image()], dim=1)

    def set_images(self, images01: torch.Tensor) -> None:
        self.rgb.set_images(images01)

    def blur_(self, sigma: float) -> None:
        self.rgb.blur_(sigma)
        self.alpha.blur_(sigma)


def random_backgrounds(generators: list[torch.Generator], c: int, h: int, w: int) -> torch.Tensor:
    """(N, C, H, W) smooth colour noise, one image per generator: a BACKGROUND_GRID-square
    grid of uniform random colours, bilinearly upsampled."""
    grids = torch.stack(
        [torch.rand((c, BACKGROUND_GRID, BACKGROUND_GRID), generator=g) for g in generators]
    )
    return F.interpolate(grids, size=(h, w), mode="bilinear", align_corners=False)


def flatten_alpha(image: torch.Tensor, background: float = FINAL_BACKGROUND) -> torch.Tensor:
    """A (C + 1, H, W) straight-alpha image composited over a uniform ``background``:
    what an alpha prototype's probability and scores are measured on."""
    rgb, alpha = image[:-1], image[-1:]
    return rgb * alpha + background * (1 - alpha)


def alpha_mean(param: AlphaParam) -> obj.Objective:
    """Per image, the mean opacity of the latest ``image()`` (lower: more transparent)."""

    def fn(_c: obj.StepContext) -> torch.Tensor:
        alpha = param.last_alpha
        assert alpha is not None, "image() runs before the objective"
        return alpha.mean(dim=(1, 2, 3))

    return obj.Objective(fn, "alpha_mean")
