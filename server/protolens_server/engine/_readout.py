"""What a class's probability is, and which loss wants a class: single-label or multi-label.

A single-label classifier's classes exclude each other: a class's probability is the
softmax over every logit, and the objective makes the target win against the other
classes (``_objectives.target_margin``). A multi-label classifier (one independent
sigmoid per class: ``ImageClassifier.multi_label``) says of each label on its own
whether it is present: its probability is ``sigmoid(z_t)``, and each label is a
two-way softmax of "absent" (logit 0) and "present" (``z_t``). The single-label
objectives carried over to that two-way choice are ``target_log_odds`` (the margin
``z_t - 0``: it keeps improving past saturation as the margin does, and leaves the
other labels alone, which may co-occur with the target) and ``target_log_sigmoid``
(the log-probability). Pushing every other label down, as the margin does, would
remove from a prototype what the model sees together with its label.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from . import _objectives as obj
from .types import ObjectiveKind

# objective "logit": weight of the log-probability term next to the raw target logit
# (the logit alone can rise with every other logit; this makes the target win)
LOG_PROB_WEIGHT = 1.0


def is_multi_label(model: Any) -> bool:
    """Whether ``model`` (an ``ImageClassifier``) says it is multi-label (default: no)."""
    return bool(getattr(model, "multi_label", False))


def probabilities(logits: torch.Tensor, multi_label: bool) -> torch.Tensor:
    """(N, K) float32 class probabilities: each label's sigmoid, or the softmax."""
    logits = logits.float()
    return torch.sigmoid(logits) if multi_label else F.softmax(logits, dim=-1)


def log_probabilities(logits: torch.Tensor, multi_label: bool) -> torch.Tensor:
    """(N, K) float32 log class probabilities: each label's log-sigmoid, or the log-softmax."""
    logits = logits.float()
    return F.logsigmoid(logits) if multi_label else F.log_softmax(logits, dim=-1)


def class_objective(
    weights: torch.Tensor, kind: ObjectiveKind, temperature: float, multi_label: bool
) -> obj.Objective:
    """The term that wants each image's target classes (``weights``, ``_loop``)."""
    if multi_label:
        objective = obj.target_log_odds(weights)
        if kind == "logit":
            objective = objective + LOG_PROB_WEIGHT * obj.target_log_sigmoid(weights)
        return objective
    if kind == "margin":
        return obj.target_margin(weights, temperature)
    return obj.target_logits(weights) + LOG_PROB_WEIGHT * obj.target_log_probs(weights)
