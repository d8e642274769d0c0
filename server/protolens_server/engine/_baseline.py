"""The equidistant baseline: an input the model finds equally likely for every class.

Prototypes start from it (plus a small per-prototype perturbation), so no class
is favoured by the start. It depends only on the model, its spec, the seed, the
device and the few config fields below, and is memoised per model in a small
in-process cache, so a batch of targets computes it once.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from typing import Any

import torch

from ._forward import ModelRunner
from ._objectives import StepContext, probability_variance
from ._param import PERTURBATION_SD, make_param, param_shape
from ._seeds import derive_seed, generator
from .types import GenerationConfig, ImageClassifier

_CACHE_PER_MODEL = 8
# The baseline's own rate: fixed, so it does not depend on the (found) generation rate.
BASELINE_LR = 0.05
_DEFAULT_CONFIG = GenerationConfig()
_cache: weakref.WeakKeyDictionary[Any, OrderedDict[tuple[Any, ...], torch.Tensor]] = (
    weakref.WeakKeyDictionary()
)


def _key(runner: ModelRunner, config: GenerationConfig, seed: int) -> tuple[Any, ...]:
    return (
        runner.spec,
        runner.num_classes,
        seed,
        str(runner.device),
        runner.autocast,
        config.parameterisation,
        config.decorrelate,
        config.fourier_decay,
        config.start_value,
        config.equidistant_steps,
    )


def equidistant_baseline(
    model: ImageClassifier,
    config: GenerationConfig = _DEFAULT_CONFIG,
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """The baseline image, (C, H, W) float32 in [0, 1] on the CPU."""
    return baseline_for(ModelRunner(model, config, torch.device(device)), config, seed)


def baseline_for(runner: ModelRunner, config: GenerationConfig, seed: int) -> torch.Tensor:
    key = _key(runner, config, seed)
    try:
        entries = _cache.setdefault(runner.module, OrderedDict())
    except TypeError:  # a callable that cannot be weakly referenced: no caching
        entries = OrderedDict()
    if key in entries:
        entries.move_to_end(key)
        return entries[key]
    image = _optimise_baseline(runner, config, seed)
    entries[key] = image
    while len(entries) > _CACHE_PER_MODEL:
        entries.popitem(last=False)
    return image


def _optimise_baseline(runner: ModelRunner, config: GenerationConfig, seed: int) -> torch.Tensor:
    """Minimise the variance of the class probabilities from a near-constant start."""
    shape = runner.spec.shape
    param = make_param(
        config.parameterisation, 1, shape, config.decorrelate, runner.device, config.fourier_decay
    )
    param.set_images(torch.full((1, *shape), config.start_value))
    noise = torch.randn(
        param_shape(config.parameterisation, shape),
        generator=generator(derive_seed("equidistant", seed)),
    )
    with torch.no_grad():
        param.tensors[0].add_(noise.to(runner.device)[None] * PERTURBATION_SD)
    objective = probability_variance()
    optimiser = torch.optim.Adam(param.tensors, lr=BASELINE_LR)
    groups = torch.zeros(1, dtype=torch.long, device=runner.device)
    for _ in range(config.equidistant_steps):
        images = param.image()
        ctx = StepContext(logits=runner.logits(images), images=images, groups=groups)
        loss = objective(ctx).sum()
        grads = torch.autograd.grad(loss, param.tensors)
        for p, g in zip(param.tensors, grads, strict=True):
            p.grad = g
        optimiser.step()
    with torch.no_grad():
        return param.image()[0].float().cpu()
