"""Objectives: per-image losses that add, negate and scale.

An ``Objective`` maps a ``StepContext`` (what one optimisation step computed)
to a loss per image, shape (N,), lower is better. The optimiser minimises the
sum, so an image's gradient depends only on its own terms, except for
``diversity``, which couples images of the same group (the prototypes of one
target) on purpose.

    loss = target_logits(w) + 0.1 * high_frequency() + 0.01 * bn_prior()
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F


@dataclass
class StepContext:
    """What objectives may look at for one step."""

    logits: torch.Tensor  # (N, K) float32, of the transformed images
    images: torch.Tensor  # (N, C, H, W) in [0, 1], before transforms
    groups: torch.Tensor  # (N,) int: images with equal ids are prototypes of one target
    features: torch.Tensor | None = None  # (N, ...) an intermediate layer, for diversity
    # per BatchNorm layer: (per-image mean (N, C), per-image var (N, C), running mean, running var)
    bn_stats: list[tuple[torch.Tensor, ...]] = field(default_factory=list)


class Objective:
    """A per-image loss; ``a + b``, ``-a``, ``a - b`` and ``2.0 * a`` are objectives too."""

    def __init__(self, fn: Callable[[StepContext], torch.Tensor], name: str) -> None:
        self.fn, self.name = fn, name

    def __call__(self, ctx: StepContext) -> torch.Tensor:
        return self.fn(ctx)

    def __repr__(self) -> str:
        return f"Objective({self.name})"

    def __add__(self, other: Objective | float) -> Objective:
        if isinstance(other, Objective):
            return Objective(lambda c: self(c) + other(c), f"{self.name} + {other.name}")
        return Objective(lambda c: self(c) + other, f"{self.name} + {other}")

    __radd__ = __add__  # so sum([...]) works

    def __neg__(self) -> Objective:
        return Objective(lambda c: -self(c), f"-({self.name})")

    def __sub__(self, other: Objective) -> Objective:
        return self + (-other)

    def __mul__(self, k: float) -> Objective:
        if isinstance(k, Objective):
            return NotImplemented
        return Objective(lambda c: k * self(c), f"{k} * {self.name}")

    __rmul__ = __mul__


def target_logits(weights: torch.Tensor) -> Objective:
    """Maximise ``weights · logits`` per image.

    ``weights`` is (N, K): +1 on the class of a prototype, -1 on the class of an
    antitype (minimise it), +1 on each class of a hybrid.
    """
    return Objective(lambda c: -(c.logits * weights).sum(dim=1), "target_logits")


def target_log_probs(weights: torch.Tensor) -> Objective:
    """Maximise ``weights · log_softmax(logits)``: the logit relative to every other class.

    Raising a logit alone can raise all logits together; this term makes the
    target win, which is what the reported probability measures.
    """

    def fn(c: StepContext) -> torch.Tensor:
        return -(F.log_softmax(c.logits, dim=1) * weights).sum(dim=1)

    return Objective(fn, "target_log_probs")


def target_margin(weights: torch.Tensor, temperature: float = 1.0) -> Objective:
    """Maximise each target class's logit over the soft maximum of the non-target ones.

    ``z_t - T * logsumexp(z_j / T, j not a target)`` per target class, averaged over a
    hybrid's classes; an antitype (weight -1) maximises the reverse. Unlike the
    log-probability it does not saturate: at p = 0.999 its gradient is as strong as
    at p = 0.5, so the image keeps gaining what the model uses for the class until
    the regularisers balance it (which is what convergence stopping waits for).

    The temperature ``T`` sets how the push down is shared among the other classes
    (in proportion to ``softmax(z_j / T)``): at 1 it falls almost wholly on the
    runners-up, which for a natural image of the class are its related classes
    (espresso: cup, coffee mug), so the prototype loses the natural profile of the
    late layers; a larger ``T`` spreads it (``T -> inf``: the mean of the others).
    """
    targets = weights != 0
    sign = weights.sum(dim=1).sign()
    count = targets.sum(dim=1).clamp_min(1)

    def fn(c: StepContext) -> torch.Tensor:
        logits = c.logits.float()
        masked = logits.masked_fill(targets, float("-inf"))
        others = temperature * torch.logsumexp(masked / temperature, dim=1)
        margin = ((logits - others[:, None]) * targets).sum(dim=1) / count
        return -sign * margin

    return Objective(fn, "target_margin")


def target_log_odds(weights: torch.Tensor) -> Objective:
    """Maximise each target label's log-odds ``z_t`` (a multi-label model's logit: its
    margin over "absent"), averaged over a hybrid's labels; an antitype minimises it.

    Like ``target_margin`` it does not saturate: at sigmoid(z_t) = 0.999 its gradient
    is as strong as at 0.5. Unlike it, the other labels are not pushed down: in a
    multi-label model they are independent of the target and may co-occur with it.
    """
    count = weights.abs().sum(dim=1).clamp_min(1)

    def fn(c: StepContext) -> torch.Tensor:
        return -(c.logits.float() * weights).sum(dim=1) / count

    return Objective(fn, "target_log_odds")


def target_log_sigmoid(weights: torch.Tensor) -> Objective:
    """Maximise the log-probability of each target label being as wanted: ``log
    sigmoid(z_t)`` present (weight +1), ``log sigmoid(-z_t)`` absent (an antitype, -1)."""

    def fn(c: StepContext) -> torch.Tensor:
        return -(F.logsigmoid(c.logits.float() * weights) * weights.abs()).sum(dim=1)

    return Objective(fn, "target_log_sigmoid")


class _TotalVariation(torch.autograd.Function):
    """Per-image mean absolute neighbour difference, with a hand-written backward.

    Autograd's version of the slicing differences allocates a zero image per
    slice in the backward pass; this one writes the gradient in place, about
    twice as fast, which matters because it runs every step.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        dx = x[..., :, 1:] - x[..., :, :-1]
        dy = x[..., 1:, :] - x[..., :-1, :]
        ctx.save_for_backward(dx.sign(), dy.sign())
        ctx.shape = x.shape
        return dx.abs().mean(dim=(1, 2, 3)) + dy.abs().mean(dim=(1, 2, 3))

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        sx, sy = ctx.saved_tensors
        _, c, h, w = ctx.shape
        sx = sx * (g / (c * h * (w - 1))).view(-1, 1, 1, 1)
        sy = sy * (g / (c * (h - 1) * w)).view(-1, 1, 1, 1)
        grad = torch.zeros(ctx.shape, dtype=sx.dtype, device=sx.device)
        grad[..., :, 1:] += sx
        grad[..., :, :-1] -= sx
        grad[..., 1:, :] += sy
        grad[..., :-1, :] -= sy
        return grad


def high_frequency() -> Objective:
    """Mean absolute difference of neighbouring pixels (total variation per pixel)."""
    return Objective(lambda c: _TotalVariation.apply(c.images), "high_frequency")


def _gram(features: torch.Tensor) -> torch.Tensor:
    """Flattened channel Gram matrix per image (the 'style' of a layer).

    Features are centred per channel first (a covariance): the raw Gram of
    mostly-positive activations is dominated by their means, so every pair of
    images looks alike and the diversity gradient vanishes.
    """
    if features.dim() == 4:
        n, ch = features.shape[:2]
        flat = features.reshape(n, ch, -1)
        flat = flat - flat.mean(dim=2, keepdim=True)
        return (flat @ flat.transpose(1, 2) / flat.shape[-1]).reshape(n, -1)
    return features.reshape(features.shape[0], -1)


def diversity() -> Objective:
    """Penalise similarity between prototypes of one target (Lucent's ``diversity``).

    Loss of an image: the mean cosine similarity of its feature Gram matrix with
    those of the other images in its group (0 when it is alone).
    """

    def fn(c: StepContext) -> torch.Tensor:
        feats = c.features if c.features is not None else c.images
        g = F.normalize(_gram(feats.float()), dim=1)
        sim = g @ g.T
        same = (c.groups[:, None] == c.groups[None, :]) & ~torch.eye(
            len(c.groups), dtype=torch.bool, device=sim.device
        )
        count = same.sum(dim=1).clamp_min(1)
        return (sim * same).sum(dim=1) / count

    return Objective(fn, "diversity")


def bn_prior() -> Objective:
    """Distance of each image's per-channel statistics at every BatchNorm input from
    that layer's running statistics (DeepInversion, Yin et al. 2020), per image.

    Zero when the model exposes no BatchNorm layers.
    """

    def fn(c: StepContext) -> torch.Tensor:
        total = torch.zeros(c.logits.shape[0], device=c.logits.device)
        for mean, var, running_mean, running_var in c.bn_stats:
            total = total + (mean - running_mean).norm(dim=1) + (var - running_var).norm(dim=1)
        return total

    return Objective(fn, "bn_prior")


def probability_variance() -> Objective:
    """Variance of the class probabilities: zero when the model finds every class equally
    likely (the equidistant baseline's objective).

    Probabilities are scaled by the number of classes (uniform = 1 each) so the
    loss does not vanish for 1000 classes, where Adam's epsilon would stall it.
    """

    def fn(c: StepContext) -> torch.Tensor:
        return (F.softmax(c.logits, dim=1) * c.logits.shape[1]).var(dim=1)

    return Objective(fn, "probability_variance")
