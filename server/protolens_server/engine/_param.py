"""Image parameterisations: the tensors the optimiser moves, and how they become images.

A parameterisation holds a batch of leaf tensors (``tensors``) and maps them to
images in [0, 1] (``image()``) through an optional colour decorrelation and a
sigmoid, as Lucid/Lucent do:

- ``fourier``: the image's spectrum (``rfft2``), scaled by 1/f so every
  frequency band starts with a similar contribution; optimising it favours
  smooth, natural-looking images.
- ``pixel``: the (pre-sigmoid) pixels themselves.
- ``maco``: the spectrum's phase (MACO, Fel et al. 2023, "Unlocking
  Feature Visualization for Deeper Networks with MAgnitude Constrained Optimization")
  and one contrast per image; the magnitude is fixed to a power law 1/f^k
  (``maco_decay``; data-free, not a measured ImageNet average), the inverse FFT is
  standardised per image, coloured, scaled by the image's learned contrast (a log
  gain, 0 = unit contrast before the sigmoid, about a natural photo's) and squashed
  like the others. Every image it can make has the same power-law amplitude spectrum
  shape; only the phases (where things are) and the overall contrast change. The
  contrast is what lets a model that relies on a saturated colour (a planted patch, a
  background) show it: with the contrast fixed, as in the paper, no prototype of the
  shortcut suite's patch models drew one (docs/engine.md).

``fourier`` and ``pixel`` start from any image exactly (``set_images`` inverts the
map) and blur their pre-sigmoid signal in place (``blur_``). ``maco`` keeps only the
given image's phase (its magnitude is fixed), and a blur, which only scales
magnitudes, leaves it unchanged.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Protocol

import torch

if TYPE_CHECKING:
    from .types import GenerationConfig

# Square root of the colour correlation of ImageNet images (Lucid's
# ``color_correlation_svd_sqrt``), normalised so its largest column norm is 1.
# Optimising in this decorrelated colour space makes colour steps natural.
_COLOR_CORRELATION_SQRT = torch.tensor(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=torch.float64
)
_COLOR_CORRELATION = (_COLOR_CORRELATION_SQRT / _COLOR_CORRELATION_SQRT.norm(dim=0).max()).float()

_FOURIER_MAGIC = 4.0  # Lucent divides the inverse FFT by 4 so a unit spectrum gives a mild image
_EPS = 1e-4  # images are clamped into [eps, 1-eps] before inverting the sigmoid


class ImageParam(Protocol):
    tensors: list[torch.Tensor]

    def image(self) -> torch.Tensor: ...

    def set_images(self, images01: torch.Tensor) -> None: ...

    def blur_(self, sigma: float) -> None: ...


def _decorrelate(signal: torch.Tensor) -> torch.Tensor:
    """Map decorrelated colour channels to RGB (per pixel ``M @ c``); identity unless 3 channels."""
    if signal.shape[1] != 3:
        return signal
    m = _COLOR_CORRELATION.to(signal.device, signal.dtype)
    return torch.einsum("ij,njhw->nihw", m, signal)


def _correlate(rgb: torch.Tensor) -> torch.Tensor:
    """Inverse of ``_decorrelate``."""
    if rgb.shape[1] != 3:
        return rgb
    m_inv = torch.linalg.inv(_COLOR_CORRELATION.double()).to(rgb.device, rgb.dtype)
    return torch.einsum("ij,njhw->nihw", m_inv, rgb)


def _to_signal(images01: torch.Tensor, decorrelate: bool) -> torch.Tensor:
    """The pre-sigmoid, pre-colour signal that produces ``images01``."""
    z = torch.logit(images01.clamp(_EPS, 1 - _EPS))
    return _correlate(z) if decorrelate else z


def _gaussian_transfer(h: int, w: int, sigma: float, device: torch.device) -> torch.Tensor:
    """Frequency response (rfft2 layout) of a Gaussian blur of ``sigma`` pixels."""
    f2 = _rfft2_freqs(h, w, device) ** 2
    return torch.exp(-2 * math.pi**2 * sigma**2 * f2)


def _rfft2_freqs(h: int, w: int, device: torch.device) -> torch.Tensor:
    fy = torch.fft.fftfreq(h, device=device)[:, None]
    fx = torch.fft.rfftfreq(w, device=device)[None, :]
    return torch.sqrt(fx * fx + fy * fy)


class FourierParam:
    """Spectrum parameterisation with 1/f scaling (Lucent's ``fft_image``)."""

    def __init__(
        self,
        spectrum: torch.Tensor,
        height: int,
        width: int,
        decorrelate: bool,
        decay_power: float = 1.0,
    ) -> None:
        self.height, self.width, self.decorrelate = height, width, decorrelate
        freqs = _rfft2_freqs(height, width, spectrum.device)
        scale = 1.0 / freqs.clamp_min(1.0 / max(height, width)) ** decay_power
        # the lowest frequencies keep decay 1's scale whatever the exponent: a higher one
        # slows the high frequencies down instead of speeding the low ones up
        scale = scale * (max(height, width) / scale.max())
        self.scale = scale[None, None, :, :, None]
        self.spectrum = spectrum.requires_grad_(True)
        self.tensors = [self.spectrum]

    @staticmethod
    def param_shape(n: int, c: int, h: int, w: int) -> tuple[int, ...]:
        return (n, c, h, w // 2 + 1, 2)

    def _signal(self) -> torch.Tensor:
        spec = torch.view_as_complex(self.scale * self.spectrum)
        return torch.fft.irfft2(spec, s=(self.height, self.width), norm="ortho") / _FOURIER_MAGIC

    def image(self) -> torch.Tensor:
        signal = self._signal()
        return torch.sigmoid(_decorrelate(signal) if self.decorrelate else signal)

    @torch.no_grad()
    def set_images(self, images01: torch.Tensor) -> None:
        signal = _to_signal(images01.to(self.spectrum.device), self.decorrelate)
        spec = torch.fft.rfft2(signal * _FOURIER_MAGIC, norm="ortho")
        self.spectrum.copy_(torch.view_as_real(spec) / self.scale)

    @torch.no_grad()
    def blur_(self, sigma: float) -> None:
        transfer = _gaussian_transfer(self.height, self.width, sigma, self.spectrum.device)
        self.spectrum.mul_(transfer[None, None, :, :, None])


class PixelParam:
    """Plain pixels (pre-sigmoid, optionally in decorrelated colour space)."""

    def __init__(self, pixels: torch.Tensor, decorrelate: bool) -> None:
        self.decorrelate = decorrelate
        self.pixels = pixels.requires_grad_(True)
        self.tensors = [self.pixels]

    @staticmethod
    def param_shape(n: int, c: int, h: int, w: int) -> tuple[int, ...]:
        return (n, c, h, w)

    def image(self) -> torch.Tensor:
        signal = self.pixels
        return torch.sigmoid(_decorrelate(signal) if self.decorrelate else signal)

    @torch.no_grad()
    def set_images(self, images01: torch.Tensor) -> None:
        self.pixels.copy_(_to_signal(images01.to(self.pixels.device), self.decorrelate))

    @torch.no_grad()
    def blur_(self, sigma: float) -> None:
        h, w = self.pixels.shape[-2:]
        transfer = _gaussian_transfer(h, w, sigma, self.pixels.device)
        spec = torch.fft.rfft2(self.pixels) * transfer
        self.pixels.copy_(torch.fft.irfft2(spec, s=(h, w)))


class MacoParam:
    """Phase-only spectrum with a fixed 1/f^k magnitude (MACO), standardised per image,
    times a learned per-image contrast."""

    def __init__(
        self, phase: torch.Tensor, height: int, width: int, decorrelate: bool, decay_power: float
    ) -> None:
        self.height, self.width, self.decorrelate = height, width, decorrelate
        freqs = _rfft2_freqs(height, width, phase.device)
        magnitude = 1.0 / freqs.clamp_min(1.0 / max(height, width)) ** decay_power
        self.magnitude = magnitude / magnitude.max()
        self.phase = phase.requires_grad_(True)
        # log of each image's contrast before the sigmoid (0: unit standard deviation)
        self.log_contrast = phase.new_zeros((phase.shape[0], 1, 1, 1)).requires_grad_(True)
        self.tensors = [self.phase, self.log_contrast]

    @staticmethod
    def param_shape(n: int, c: int, h: int, w: int) -> tuple[int, ...]:
        return (n, c, h, w // 2 + 1)

    def image(self) -> torch.Tensor:
        spec = torch.polar(self.magnitude.expand_as(self.phase), self.phase)
        signal = torch.fft.irfft2(spec, s=(self.height, self.width), norm="ortho")
        rgb = _decorrelate(signal) if self.decorrelate else signal
        # standardised (unit contrast: images of sd about 0.2, as natural photos), then
        # each image's learned contrast
        flat = rgb.flatten(1)
        mean = flat.mean(dim=1).view(-1, 1, 1, 1)
        sd = flat.std(dim=1).view(-1, 1, 1, 1)
        return torch.sigmoid((rgb - mean) / (sd + _EPS) * self.log_contrast.exp())

    @torch.no_grad()
    def set_images(self, images01: torch.Tensor) -> None:
        """Keep the phase of ``images01`` (approximate: the magnitude stays the power law);
        a frequency the image has no energy at gets phase 0. The contrast is left as it is."""
        signal = _to_signal(images01.to(self.phase.device), self.decorrelate)
        self.phase.copy_(torch.angle(torch.fft.rfft2(signal, norm="ortho")))

    def blur_(self, sigma: float) -> None:
        """A Gaussian blur only scales magnitudes, which are fixed here: nothing to do."""


# Standard deviation of the per-prototype perturbation of a start, in parameter
# space (Lucent's init noise).
PERTURBATION_SD = 0.01


def make_param(
    kind: str,
    n: int,
    shape: tuple[int, int, int],
    decorrelate: bool,
    device: torch.device,
    fourier_decay: float = 1.0,
    maco_decay: float = 2.0,
) -> ImageParam:
    """A parameterisation of ``n`` images of ``shape`` (C, H, W), all parameters zero;
    ``fourier_decay``: the exponent of the spectrum's 1/f^k scaling (``fourier``);
    ``maco_decay``: the exponent of the fixed 1/f^k magnitude (``maco``).

    Zero parameters give a uniform grey (0.5) image (``maco``: zero phases, a
    standardised sum of aligned cosines; it needs a start). Callers then start from an
    image (``set_images``) and/or add per-image noise to ``tensors[0]``.
    """
    c, h, w = shape
    if kind == "fourier":
        zeros = torch.zeros(FourierParam.param_shape(n, c, h, w), device=device)
        return FourierParam(zeros, h, w, decorrelate, fourier_decay)
    if kind == "pixel":
        return PixelParam(torch.zeros((n, c, h, w), device=device), decorrelate)
    if kind == "maco":
        zeros = torch.zeros(MacoParam.param_shape(n, c, h, w), device=device)
        return MacoParam(zeros, h, w, decorrelate, maco_decay)
    raise ValueError(f"unknown parameterisation {kind!r}")


def param_shape(kind: str, shape: tuple[int, int, int]) -> tuple[int, ...]:
    """Shape of one image's parameters (no batch dimension)."""
    classes = {"fourier": FourierParam, "pixel": PixelParam, "maco": MacoParam}
    return classes[kind].param_shape(1, *shape)[1:]


def config_param(
    config: GenerationConfig, n: int, shape: tuple[int, int, int], device: torch.device
) -> ImageParam:
    """``make_param`` with the parameterisation ``config`` asks for (kind, colour
    decorrelation, spectrum exponents): what every generation path starts from."""
    return make_param(
        config.parameterisation,
        n,
        shape,
        config.decorrelate,
        device,
        config.fourier_decay,
        config.maco_decay,
    )
