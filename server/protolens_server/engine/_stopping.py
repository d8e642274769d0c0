"""When each image stops: convergence within a budget, or a fixed number of steps,
always ending with a short learning-rate cool-down.

Every image's loss is smoothed on the device every step (an exponential moving
average: no host read). Every ``CHECK_EVERY`` steps the host reads the smoothed
losses once and asks, per image, whether progress has stalled: the improvement
over the last check is below ``PLATEAU_FRACTION`` of the mean improvement per check
so far, ``PATIENCE`` checks in a row. The test is scale-free (logit margins of
one model are ten times those of another), so no per-model tolerance is needed.
A class prototype whose target the model is not yet sure of (probability under
the step's transforms below ``CONFIDENT``) never counts as converged: a stall
there is a plateau on the way (seen on a small ViT: a prototype stopped at
p = 0.36 after 112 steps, and reached 0.71 when run to the budget), so it runs
on to its budget instead.

An image that converges, or whose budget is nearly spent, cools down: its
learning rate falls linearly to 0 over ``COOLDOWN_STEPS`` steps, which removes the
last steps' jitter from the image (a fixed-rate Adam never settles). Then it is
done: its rate stays 0, so it no longer changes while others in the batch go on.
An image's schedule depends only on its own losses and the step number, so it
is the same whether it runs alone or in a batch.

Reasons, per image: ``converged`` (progress stalled), ``budget`` (``max_steps``
reached first) and ``steps`` (a fixed ``config.steps`` was asked for).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .types import GenerationConfig

CHECK_EVERY = 8  # steps between host reads of the smoothed losses
EMA_WEIGHT = 0.2  # weight of the newest loss in the moving average
MIN_CHECKS = 4  # no convergence before this many checks (32 steps)
PLATEAU_FRACTION = 0.1
PATIENCE = 2
CONFIDENT = 0.9  # a class prototype converges only once its target is at least this likely
COOLDOWN_STEPS = 16

CONVERGED, BUDGET, STEPS = "converged", "budget", "steps"


def cooldown_steps(budget: int) -> int:
    """Cool-down length for a run of ``budget`` steps (at most a quarter of it)."""
    return min(COOLDOWN_STEPS, budget // 4)


class StopSchedule:
    """Per-image learning-rate factor (device) and stop decisions (host) for one chunk."""

    def __init__(
        self, n: int, config: GenerationConfig, device: torch.device, *, trace: bool = False
    ) -> None:
        self.fixed = config.steps > 0
        self.budget = config.steps if self.fixed else config.max_steps
        self.cooldown = cooldown_steps(self.budget)
        # host: the step after which each image's cool-down begins, and why it stops
        self.cool_start = [self.budget - self.cooldown] * n
        self.reasons = [STEPS if self.fixed else BUDGET] * n
        self._start = torch.full((n,), float(self.budget - self.cooldown), device=device)
        self._ema = torch.zeros(n, device=device)
        self._history: list[list[float]] = []  # smoothed losses at each check
        self._stalled = [0] * n
        # every step's raw per-image losses (device), kept only when asked (the finder's probes)
        self.trace: list[torch.Tensor] | None = [] if trace else None

    @property
    def last_step(self) -> int:
        """The step after which every image of the chunk is done."""
        return max(self.cool_start) + self.cooldown

    def steps_of(self, k: int) -> int:
        """The steps image ``k`` took (its rate is 0 after)."""
        return min(self.budget, self.cool_start[k] + self.cooldown)

    def factor(self, step: int) -> torch.Tensor:
        """(N,) learning-rate factor for ``step`` (1-based): 1, then down to 0 after cool-down."""
        if self.cooldown == 0:
            return torch.ones_like(self._start)
        return ((self._start + self.cooldown + 1 - step) / self.cooldown).clamp(0.0, 1.0)

    def observe(self, step: int, losses: torch.Tensor) -> None:
        """Fold this step's per-image losses into the moving average (device only)."""
        losses = losses.detach().float()
        if self.trace is not None:
            self.trace.append(losses.clone())
        if step == 1:
            self._ema.copy_(losses)
        else:
            self._ema.lerp_(losses, EMA_WEIGHT)

    def smoothed(self) -> torch.Tensor:
        """The smoothed per-image losses (device)."""
        return self._ema

    def check(self, step: int, settled: Callable[[], list[bool]] | None = None) -> None:
        """Every ``CHECK_EVERY`` steps (host read): start the cool-down of converged images.

        ``settled`` (read only when an image has stalled) says per image whether it may
        converge at all (``confident``); unset: every image may.
        """
        if self.fixed or step % CHECK_EVERY or step >= self.budget - self.cooldown:
            return
        now = self._ema.tolist()
        self._history.append(now)
        if len(self._history) < MIN_CHECKS:
            return
        first, previous = self._history[0], self._history[-2]
        checks = len(self._history) - 1
        changed = False
        may: list[bool] | None = None
        for k, loss in enumerate(now):
            if self.reasons[k] == CONVERGED:
                continue
            mean_gain = (first[k] - loss) / checks
            gain = previous[k] - loss
            stalled = gain <= PLATEAU_FRACTION * max(mean_gain, 0.0)
            self._stalled[k] = self._stalled[k] + 1 if stalled else 0
            if self._stalled[k] >= PATIENCE:
                if may is None:
                    may = settled() if settled is not None else [True] * len(now)
                if not may[k]:
                    continue
                self.reasons[k], self.cool_start[k] = CONVERGED, step
                changed = True
        if changed:
            self._start.copy_(torch.tensor(self.cool_start, dtype=torch.float32))


def confident(probabilities: torch.Tensor, is_prototype: list[bool]) -> list[bool]:
    """Per image: may it converge? A class prototype once its target probability is at
    least ``CONFIDENT``; any other target (antitype, hybrid, units) always."""
    return [
        not proto or p >= CONFIDENT
        for p, proto in zip(probabilities.tolist(), is_prototype, strict=True)
    ]
