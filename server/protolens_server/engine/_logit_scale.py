"""The unit a class prototype's regularisers are weighed in: its model's logit spread,
at most one logit.

The class objective is in the model's own logit units, and so are the regularisers'
weights (``hf_penalty``, ``diversity``, ``bn_prior``, ``alpha_penalty``): they were set
on models whose logits spread by a unit or more over noise images (EfficientNet-Lite0
1.4, the test CNNs about 5, here measured as below). A model whose logits spread far
less (a cosine-similarity head without its temperature, a strongly tempered model)
would have its class evidence outweighed by the penalties: at 1/100 of a test CNN's
logit scale the default prototypes did not make their class top-1 at all, at 1/10 they
stopped at p 0.3-0.7 (tests/engine/test_engine_logit_scale.py).

So a class prototype's regularisers are scaled by ``min(1, spread)``, where the spread
is the standard deviation over classes of the model's logits (the part of them a softmax
sees) on ``SCALE_IMAGES`` seeded uniform-noise images, averaged over the images: a
property of the model, not of a call, its batch or its seeds. A model spreading a unit
or more is optimised exactly as before (every model the project measures); only models
below it change. The scale is not raised for models above a unit: Adam's steps do not
grow with the gradient, so a larger logit scale only makes the penalties relatively
weaker, which is how the defaults were measured.

The convergence gate (a class prototype converges only once its target is 0.9 likely,
``_stopping.CONFIDENT``) reads such a model at unit spread as well, its logits divided by
the same factor: a tempered model's own softmax may never reach 0.9, which made its
prototypes run to the budget. The probability a prototype reports stays the model's own.
"""

from __future__ import annotations

import math
import weakref
from typing import Any

import torch

from ._forward import ModelRunner
from ._memo import memo_of
from ._units import scale_images
from .types import GenerationConfig

# Spreads per model (weakly held), by device type (float rounding differs per device).
_spreads: weakref.WeakKeyDictionary[Any, dict[str, float]] = weakref.WeakKeyDictionary()


def logit_spread(model: Any, device: str | torch.device = "cpu") -> float:
    """``model``'s (an ``ImageClassifier``) logit spread, as ``generate`` measures it."""
    return runner_spread(ModelRunner(model, GenerationConfig(), torch.device(device)))


def runner_spread(runner: ModelRunner) -> float:
    """Mean over seeded noise images of the standard deviation of their logits over
    classes (over the images for a one-output model); memoised per model and device."""
    memo = memo_of(_spreads, runner.source, dict)
    key = runner.device.type
    if key not in memo:
        images = scale_images(runner.spec.shape).to(runner.device)
        with torch.no_grad():  # one image at a time: no more memory than one image's step
            logits = torch.cat([runner.logits(image[None]).float() for image in images])
        spread = logits.std(dim=1).mean() if logits.shape[1] > 1 else logits.std()
        memo[key] = float(spread)
    return memo[key]


def penalty_unit(spread: float) -> float:
    """The factor on a class prototype's regularisers: ``min(1, spread)`` (1 when the
    spread could not be measured: a model that gives NaN on noise fails later anyway)."""
    if not math.isfinite(spread) or spread < 0:
        return 1.0
    return min(1.0, spread)
