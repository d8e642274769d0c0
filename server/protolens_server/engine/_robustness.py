"""Robustness: the target probability of an image under random draws of a transform preset.

The untransformed image is kept apart (``probability``); the draws give
``probability_mean_over_transforms`` and ``probability_min_over_transforms``
over ``transform_samples`` draws, so the minimum can sit above the untransformed
probability when every draw happens to help. The logit margin to the best
non-target class (``runner_up``) is measured on the untransformed image. A
probability is a multi-label model's own sigmoid of the label (``_readout``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from protolens_server.errors import InvalidArgument

from . import _activations, _transforms
from ._readout import is_multi_label, probabilities
from ._score_types import Robustness


def _target_probability(
    logits: torch.Tensor, classes: Sequence[int], multi_label: bool
) -> torch.Tensor:
    return probabilities(logits, multi_label)[:, list(classes)].mean(dim=-1)


def robustness(
    model: Any,
    images: torch.Tensor,
    targets: Sequence[Sequence[int]],
    logits: torch.Tensor,
    *,
    samples: int = 16,
    transforms: str = "medium",
    seeds: Sequence[int] | None = None,
    device: str | torch.device = "cpu",
    max_batch: int = 64,
) -> list[Robustness]:
    """Target probability of each image (classes ``targets[i]``) under ``samples`` draws.

    ``logits`` are the untransformed images' logits (for the probability and margin).
    Image ``i``'s draws come from its own generator seeded by ``seeds[i]`` (default:
    its position), so its score does not depend on what else is in the list.
    """
    if transforms not in _transforms.PRESETS:
        raise InvalidArgument("robustness_transforms", f"unknown preset {transforms!r}")
    if samples < 0:
        raise InvalidArgument("robustness_samples", f"must be >= 0 (got {samples})")
    transform = _transforms.preset(transforms)
    dev = torch.device(device)
    multi_label = is_multi_label(model)
    results = []
    for i, (image, target) in enumerate(zip(images, targets, strict=True)):
        classes = list(target)
        row = logits[i].float()
        masked = row.clone()
        masked[classes] = -math.inf
        runner_up = int(masked.argmax())
        margin = float(row[classes].mean() - row[runner_up])
        probability = float(_target_probability(row[None], classes, multi_label)[0])
        mean = low = None
        if samples > 0:
            g = torch.Generator().manual_seed(seeds[i] if seeds is not None else i)
            draws = torch.rand((samples, transform.n_draws), generator=g)
            # the engine's transforms act on normalised images (their fill = the mean colour)
            normalised = model.input_spec.normalise(image[None].to(dev))
            batch = transform(normalised.expand(samples, *image.shape), draws.to(dev))
            probs = []
            with torch.no_grad():
                for start in range(0, samples, max_batch):
                    out = _activations.run_model(
                        model, batch[start : start + max_batch], device=dev
                    )
                    probs.append(_target_probability(out, classes, multi_label).cpu())
            p = torch.cat(probs)
            mean, low = float(p.mean()), float(p.min())
        results.append(Robustness(samples, transforms, probability, mean, low, margin, runner_up))
    return results
