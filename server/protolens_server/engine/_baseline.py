"""The equidistant baseline: an input the model finds equally likely for every class.

Prototypes start from it (plus a small per-prototype perturbation), so no class
is favoured by the start. It depends only on the model, its spec, the seed, the
device and the few config fields below, and is memoised per model in a small
in-process cache, so a batch of targets computes it once. A chunk whose targets
carry different seeds (a worker's batch of jobs: one seed each) optimises all
their baselines together, one batched run instead of one run per seed: each
image's loss and Adam's update are per image, so the result is each seed's own
baseline (up to float rounding), at the cost of one run.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import torch

from ._forward import ModelRunner
from ._memo import memo_of
from ._objectives import StepContext, probability_variance
from ._optim import Adam
from ._param import PERTURBATION_SD, config_param, param_shape
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
        config.maco_decay,
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
    return baselines_for(runner, config, [seed])[seed]


def baselines_for(
    runner: ModelRunner, config: GenerationConfig, seeds: Iterable[int]
) -> dict[int, torch.Tensor]:
    """Each seed's baseline; the ones not memoised are optimised in one batched run."""
    entries = memo_of(_cache, runner.module, OrderedDict)
    found: dict[int, torch.Tensor] = {}
    missing: list[int] = []
    for seed in dict.fromkeys(seeds):
        key = _key(runner, config, seed)
        if key in entries:
            entries.move_to_end(key)
            found[seed] = entries[key]
        else:
            missing.append(seed)
    if missing:
        images = _optimise_baselines(runner, config, missing)
        for seed, image in zip(missing, images, strict=True):
            found[seed] = entries[_key(runner, config, seed)] = image
        while len(entries) > max(_CACHE_PER_MODEL, len(found)):
            entries.popitem(last=False)
    return found


def _optimise_baselines(
    runner: ModelRunner, config: GenerationConfig, seeds: list[int]
) -> list[torch.Tensor]:
    """Minimise the variance of the class probabilities from a near-constant start, one
    image per seed (its own perturbation), all in one batch."""
    shape, n = runner.spec.shape, len(seeds)
    param = config_param(config, n, shape, runner.device)
    param.set_images(torch.full((n, *shape), config.start_value))
    noise = torch.stack(
        [
            torch.randn(
                param_shape(config.parameterisation, shape),
                generator=generator(derive_seed("equidistant", seed)),
            )
            for seed in seeds
        ]
    )
    with torch.no_grad():
        param.tensors[0].add_(noise.to(runner.device) * PERTURBATION_SD)
    objective = probability_variance()
    optimiser = Adam(param.tensors, lr=BASELINE_LR)
    groups = torch.arange(n, device=runner.device)
    for _ in range(config.equidistant_steps):
        images = param.image()
        ctx = StepContext(logits=runner.logits(images), images=images, groups=groups)
        loss = objective(ctx).sum()  # per image: each image's gradient is its own
        optimiser.step(torch.autograd.grad(loss, param.tensors))
    with torch.no_grad():
        return list(param.image().float().cpu().unbind(0))
