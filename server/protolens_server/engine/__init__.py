"""Prototype generation (and, from ``_scores``, similarity scoring): pure torch.

No logging, files, network or global state beyond a small in-process cache of
equidistant baselines. Progress goes out through ``on_progress``; device and
seed are explicit; preprocessing comes from the model's ``InputSpec``.
"""

from ._baseline import equidistant_baseline
from ._loop import generate
from ._scores import score
from .types import (
    Classifier,
    GenerationConfig,
    ImageClassifier,
    InputSpec,
    ProgressEvent,
    Prototype,
    Target,
)

__all__ = [
    "Classifier",
    "GenerationConfig",
    "ImageClassifier",
    "InputSpec",
    "ProgressEvent",
    "Prototype",
    "Target",
    "equidistant_baseline",
    "generate",
    "score",
]
