"""Load-time checks of what a classifier's output means to the optimiser.

The dry forward (``_build.check_forward``) catches wrong shapes and NaN. These checks
catch models that run fine but that gradient ascent on the input cannot use, each of
which otherwise gave an exit-0 result that meant nothing (bench/unusual_models.py):

- probabilities instead of logits (a softmax at the end of ``forward``): softmax of
  probabilities is at most e/(e+n-1) (0.23 for 10 classes), the margin saturates and
  the reported probability is not the model's. Such a model is used through
  ``LogProbabilities`` (log p are logits up to a per-row constant); log-softmax
  outputs need nothing (softmax of log p is p);
- no gradient to the input (argmax, round, ``.detach()`` in ``forward``): the
  optimisation cannot move; refused;
- a random output (dropout baked in training mode by ``torch.jit.trace``): prototypes
  would not be reproducible and every forward sees a different model; refused;
- independent probabilities (a sigmoid per class, a multi-label model): every entry
  in [0, 1], rows not summing to 1, on the zeros, the random images and on wild
  inputs (20 standard deviations of noise) where logits would leave [0, 1]. Read as
  logits their softmax is capped as a softmax output's is; such a model is used
  through ``LogOdds`` (log p - log(1 - p), each label's own logit) and read as
  multi-label (``handle.MULTI_LABEL``): the engine maximises the label's own log-odds
  and reports its sigmoid (docs/models.md).

A model whose forward returns multi-label *logits* (no sigmoid; trained with a binary
cross-entropy per class) cannot be told from a single-label one: it is declared
(``output: multi-label-logits``, ``sidecar.OUTPUTS``) and read as multi-label too. The
declaration is checked against the probe: probabilities from such a model are refused
(``InvalidArgument`` naming ``output``: a sigmoid in forward needs no declaration).

The model is given copies of the probe's inputs, so a forward that changes its input
in place (``x.relu_()``) neither fails on the probe's leaf tensor nor changes the
input of the second forward.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from protolens_server.engine.types import InputSpec
from protolens_server.errors import InvalidArgument, InvalidModel
from protolens_server.models._logits import LogitsOnly, adapt
from protolens_server.models.handle import MULTI_LABEL
from protolens_server.models.sidecar import MULTI_LABEL_LOGITS

PROBE_SEED = 20261206
PROBABILITY_TOLERANCE = 1e-3  # rows summing to 1 within this, entries in [0, 1]
TINY = 1e-30  # log(0) -> log(TINY): finite, so the engine's NaN/Inf checks still mean divergence


STRESS_SCALE = 20.0  # the wild inputs: standard normal noise times this, model units


class LogProbabilities(LogitsOnly):
    """A model that returns class probabilities, seen through ``log``: log p are logits
    (softmax(log p) = p), whose margin does not saturate the way p's does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(super().forward(x).clamp_min(TINY))


class LogOdds(LogitsOnly):
    """A model that returns an independent probability per class (sigmoid outputs), seen
    through the logit function log p - log(1 - p): the logits its sigmoid was applied to
    (up to float rounding; finite at p = 0 or 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = super().forward(x)
        return torch.log(p.clamp_min(TINY)) - torch.log((1 - p).clamp_min(TINY))


def output_reading(module: object, declared: str = "") -> str:
    """How a handle's module reads the model's output: ``logits``, ``log-probabilities``
    (``LogProbabilities``) or ``multi-label`` (``LogOdds``, or logits declared
    ``multi-label-logits``); part of the digest."""
    if isinstance(module, LogProbabilities):
        return "log-probabilities"
    if isinstance(module, LogOdds) or declared == MULTI_LABEL_LOGITS:
        return MULTI_LABEL
    return "logits"


def multi_label_origin(module: object) -> str:
    """How a multi-label model was recognised, for its metadata (``multi_label``)."""
    if isinstance(module, LogOdds):
        return "detected: a sigmoid per class, read through log p - log(1 - p)"
    return f"declared: output {MULTI_LABEL_LOGITS}"


def looks_like_probabilities(out: torch.Tensor) -> bool:
    """Every row in [0, 1] and summing to 1: a softmax output, not logits."""
    if out.ndim != 2 or out.shape[1] < 2 or not torch.isfinite(out).all():
        return False
    out = out.detach().float()
    in_range = bool(((out >= 0) & (out <= 1)).all())
    sums = out.sum(1)
    return in_range and bool(((sums - 1).abs() <= PROBABILITY_TOLERANCE).all())


def looks_like_independent_probabilities(out: torch.Tensor) -> bool:
    """Every entry in [0, 1], not every row summing to 1: one sigmoid per class."""
    if out.ndim != 2 or out.shape[1] < 2 or not torch.isfinite(out).all():
        return False
    out = out.detach().float()
    return bool(((out >= 0) & (out <= 1)).all()) and not looks_like_probabilities(out)


def probe_output(
    module: Callable[[torch.Tensor], Any],
    spec: InputSpec,
    source: str,
    zeros_out: torch.Tensor,
    declared: str = "",
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Check ``module`` (already through the dry forward, which gave ``zeros_out``) on two
    random images in [0, 1]; return the module to use (wrapped in ``LogProbabilities``
    or ``LogOdds`` when it returns probabilities). Raises ``InvalidModel`` for the
    refusals above, ``InvalidArgument`` when ``declared`` logits are probabilities."""
    g = torch.Generator().manual_seed(PROBE_SEED)
    images = torch.rand(2, *spec.shape, generator=g)
    x = spec.normalise(images).requires_grad_(True)
    try:
        with torch.enable_grad():
            out = _logits(module, x.clone())
        with torch.no_grad():
            again = _logits(module, x.detach().clone())
    except Exception:  # fails only off the dry run (e.g. with gradients): the engine reports it
        return module
    if not bool(torch.isfinite(out).all()):
        return module  # NaN/Inf off the zeros input: the engine stops with DIVERGED
    if not torch.allclose(out.detach(), again, rtol=1e-3, atol=1e-4):
        raise InvalidModel(
            f"{source}: two forwards of the same input gave different outputs (a model left "
            "in training mode, e.g. dropout baked in by torch.jit.trace?); save it after "
            "model.eval()"
        )
    probabilities = looks_like_probabilities(zeros_out) and looks_like_probabilities(out)
    if declared == MULTI_LABEL_LOGITS:
        _check_declared_logits(module, zeros_out, out, x.shape, source)
        probabilities = False
    elif probabilities:
        module = adapt(module, LogProbabilities)
    elif _independent_probabilities(module, zeros_out, out, x.shape):
        module = adapt(module, LogOdds)
    if probabilities or isinstance(module, LogOdds):
        with torch.enable_grad():
            out = module(x.clone())
    if not out.requires_grad:
        raise InvalidModel(
            f"{source}: the output does not depend on the input through differentiable "
            "operations (argmax, round, .detach() or torch.no_grad in forward?); prototypes "
            "are made by gradient ascent on the input"
        )
    weights = torch.randn(out.shape, generator=g)
    (grad,) = torch.autograd.grad((out * weights).sum(), x, allow_unused=True)
    if grad is None or not bool(grad.ne(0).any()) or not bool(torch.isfinite(grad).all()):
        what = "NaN/Inf" if grad is not None and grad.ne(0).any() else "zero"
        raise InvalidModel(
            f"{source}: the logits' gradient with respect to the input is {what} on random "
            "images (a step function such as round or argmax in forward?); prototypes are "
            "made by gradient ascent on the input"
        )
    return module


def _check_declared_logits(
    module: Callable[[torch.Tensor], Any],
    zeros_out: torch.Tensor,
    out: torch.Tensor,
    shape: torch.Size,
    source: str,
) -> None:
    """Logits declared ``multi-label-logits`` that are probabilities are refused: read
    as logits, a sigmoid's output would cap every label at sigmoid(1) = 0.73."""
    softmax = looks_like_probabilities(zeros_out) and looks_like_probabilities(out)
    if not softmax and not _independent_probabilities(module, zeros_out, out, shape):
        return
    what = "a softmax" if softmax else "one sigmoid per class"
    fix = (
        "a single-label model: remove the declaration"
        if softmax
        else "protolens recognises it and reads it as multi-label: remove the declaration"
    )
    raise InvalidArgument(
        "output",
        f"{source} is declared {MULTI_LABEL_LOGITS!r} but its forward returns probabilities "
        f"in [0, 1] ({what}), not logits; {fix}",
    )


def _independent_probabilities(
    module: Callable[[torch.Tensor], Any],
    zeros_out: torch.Tensor,
    out: torch.Tensor,
    shape: torch.Size,
) -> bool:
    """Sigmoid outputs on the zeros and the random images, and still in [0, 1] on wild
    inputs (which a logits model leaves it on): one more forward, only for candidates."""
    if not (
        looks_like_independent_probabilities(zeros_out)
        and looks_like_independent_probabilities(out)
    ):
        return False
    g = torch.Generator().manual_seed(PROBE_SEED + 1)
    wild = torch.randn(shape, generator=g) * STRESS_SCALE
    try:
        with torch.no_grad():
            return looks_like_independent_probabilities(_logits(module, wild))
    except Exception:
        return False


def _logits(module: Callable[[torch.Tensor], Any], x: torch.Tensor) -> torch.Tensor:
    out = module(x)
    if not isinstance(out, torch.Tensor):  # check_forward wraps such modules first
        raise TypeError("the model's forward did not return a tensor")
    return out
