"""Feature isolation: which parts of a real image carry the class evidence.

``isolate`` optimises a soft mask over one input image so that the image kept by
the mask, composited over random backgrounds and seen through the engine's random
transforms, still gives the target class, while a sparsity penalty (the mask's
mean) removes everything the class does not need and a smoothness penalty (the
mask's total variation) keeps it in connected regions: the preservation game of
Fong & Vedaldi's meaningful perturbations, with the engine's transform robustness
and the alpha prototypes' random backgrounds (``_alpha``), so a mask cannot pass
by painting an adversarial edge.

The mask is parameterised at 1/``mask_stride`` of the input resolution
(bilinearly upsampled) and starts almost fully open, so it shrinks onto the
evidence rather than growing from nothing. Each step averages ``samples``
composites (each its own background and transform draw) to steady the gradient.

What the mask removes becomes the image's own mean colour with a little smooth
colour noise (``background_contrast``): a fill close to the model's data, so the
mask cannot pass by cutting to a background that itself carries evidence (with
full-contrast random colours a shortcut model needed 45-80% of its image opened
to shut them out, bench/isolation.py).

The result says what a reviewer needs: the mask, the isolated image (the input
with the mask as its alpha channel), and the class probability of the whole
image, of the image kept by the mask and of the image with the masked part
removed (both filled with the image's mean colour). For a multi-label model the
probability is the label's own sigmoid, and the mask keeps what that label needs
(``_readout``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from protolens_server.errors import GenerationCancelled, InvalidArgument, UnknownClass

from ._alpha import random_backgrounds
from ._forward import ModelRunner
from ._optim import Adam
from ._readout import log_probabilities, probabilities
from ._seeds import derive_seed, generator
from ._transforms import DrawStream, preset
from .types import (
    GenerationConfig,
    ImageClassifier,
    OptionRecord,
    ProgressEvent,
    TransformPreset,
)

MASK_START = 0.9  # the mask's initial opacity everywhere: nearly the whole image kept


@dataclass(frozen=True)
class IsolationConfig(OptionRecord):
    _KIND: ClassVar[str] = "an isolation option"
    """Every knob that determines an isolation (and so its cache key).

    ``sparsity`` weighs the mask's mean and ``smoothness`` its total variation
    against the target's log-probability; defaults from ``bench/isolation.py``
    (docs/modes.md).
    """

    steps: int = 96
    lr: float = 0.1
    sparsity: float = 2.0
    smoothness: float = 0.5
    mask_stride: int = 4
    samples: int = 4
    background_contrast: float = 0.2  # removed parts: the mean colour +- this much colour noise
    transforms: TransformPreset = "small"
    progress_every: int = 8

    def __post_init__(self) -> None:
        checks = [
            ("steps", 1 <= self.steps <= 10_000, "must be 1..10000"),
            ("lr", 0 < self.lr <= 10, "must be in (0, 10]"),
            ("sparsity", 0 <= self.sparsity <= 1e4, "must be in [0, 10000]"),
            ("smoothness", 0 <= self.smoothness <= 1e4, "must be in [0, 10000]"),
            ("mask_stride", 1 <= self.mask_stride <= 64, "must be 1..64 pixels"),
            ("samples", 1 <= self.samples <= 64, "must be 1..64"),
            ("background_contrast", 0 <= self.background_contrast <= 2, "must be in [0, 2]"),
            (
                "transforms",
                self.transforms in ("none", "small", "medium", "large", "xlarge"),
                "must be none|small|medium|large|xlarge",
            ),
            ("progress_every", self.progress_every >= 1, "must be >= 1"),
        ]
        self._require(checks)

    @property
    def step_budget(self) -> int:
        """The steps an isolation takes (it has no convergence stop)."""
        return self.steps


@dataclass
class Isolation:
    """Where a real image's evidence for ``target`` is."""

    mask: torch.Tensor  # (1, H, W) in [0, 1], on CPU: 1 = kept
    isolated: torch.Tensor  # (C + 1, H, W): the image with the mask as its alpha channel
    target: int
    probability: float  # the whole image
    probability_kept: float  # the image kept by the mask, the rest its mean colour
    probability_removed: float  # the masked part replaced by the image's mean colour
    mask_mean: float
    steps: int
    seed: int
    config: IsolationConfig


def isolate(
    model: ImageClassifier,
    image: torch.Tensor,
    target: int,
    config: IsolationConfig = IsolationConfig(),
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
    on_progress: Callable[[ProgressEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Isolation:
    """Optimise a soft mask over ``image`` ((C, H, W) in [0, 1], the model's input size)
    that keeps the evidence for class ``target``.

    Raises ``InvalidArgument`` for an image of the wrong shape, ``UnknownClass`` for a
    class the model does not have, ``GenerationCancelled`` when ``should_stop()``
    turns true between steps.
    """
    spec = model.input_spec
    if tuple(image.shape) != spec.shape:
        raise InvalidArgument(
            "image", f"has shape {tuple(image.shape)}; the model takes {spec.shape} (C, H, W)"
        )
    if not 0 <= target < model.num_classes:
        raise UnknownClass(
            "target", f"class {target} is out of range: the model has {model.num_classes} classes"
        )
    dev = torch.device(device)
    runner = ModelRunner(model, GenerationConfig(autocast=False), dev)
    x = image.to(dev, torch.float32).clamp(0, 1)[None]
    _, c, h, w = x.shape
    grid = (math.ceil(h / config.mask_stride), math.ceil(w / config.mask_stride))
    start = math.log(MASK_START / (1 - MASK_START))
    logits_param = torch.full((1, 1, *grid), start, device=dev, requires_grad=True)
    gen = generator(derive_seed("isolate", seed, target))
    transform = preset(config.transforms)
    draws = DrawStream([gen] * config.samples, transform.n_draws, dev)
    optimiser = Adam([logits_param], lr=config.lr)
    fill = x.mean(dim=(2, 3), keepdim=True)  # what removed parts become: the image's mean colour
    if on_progress is not None:
        on_progress(ProgressEvent(0, config.steps, (0.0,)))
    for step in range(1, config.steps + 1):
        if should_stop is not None and should_stop():
            raise GenerationCancelled(f"isolation was cancelled at step {step - 1}")
        mask = _mask(logits_param, h, w)
        noise = random_backgrounds([gen] * config.samples, c, h, w).to(dev)
        backgrounds = fill + config.background_contrast * (noise - 0.5)
        composite = x * mask + backgrounds * (1 - mask)
        logits = runner.forward(transform(runner.normalise(composite), draws.next()))
        log_p = log_probabilities(logits, runner.multi_label)[:, target].mean()
        loss = -log_p + config.sparsity * mask.mean() + config.smoothness * _tv(mask)
        optimiser.step(torch.autograd.grad(loss, [logits_param]))
        if on_progress is not None and (step % config.progress_every == 0 or step == config.steps):
            on_progress(ProgressEvent(step, config.steps, (float(log_p.detach().exp()),)))
    with torch.no_grad():
        mask = _mask(logits_param, h, w)
        batch = torch.cat([x, x * mask + fill * (1 - mask), x * (1 - mask) + fill * mask])
        probs = probabilities(runner.logits(batch), runner.multi_label)[:, target].tolist()
    mask_cpu = mask[0].cpu()
    return Isolation(
        mask=mask_cpu,
        isolated=torch.cat([image.float().cpu(), mask_cpu]),
        target=target,
        probability=probs[0],
        probability_kept=probs[1],
        probability_removed=probs[2],
        mask_mean=float(mask_cpu.mean()),
        steps=config.steps,
        seed=seed,
        config=config,
    )


def _mask(param: torch.Tensor, h: int, w: int) -> torch.Tensor:
    return torch.sigmoid(F.interpolate(param, size=(h, w), mode="bilinear", align_corners=False))


def _tv(mask: torch.Tensor) -> torch.Tensor:
    dx = (mask[..., :, 1:] - mask[..., :, :-1]).abs().mean()
    dy = (mask[..., 1:, :] - mask[..., :-1, :]).abs().mean()
    return dx + dy
