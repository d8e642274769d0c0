"""Prototype generation (and, from ``_scores``, similarity scoring): pure torch.

No logging, files, network or global state beyond a small in-process cache of
equidistant baselines. Progress goes out through ``on_progress``; device and
seed are explicit; preprocessing comes from the model's ``InputSpec``.
"""

from ._baseline import equidistant_baseline
from ._loop import auto_batch_size, generate
from ._memory import AutoBatch, MemoryFit
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
    "AutoBatch",
    "Classifier",
    "GenerationConfig",
    "ImageClassifier",
    "InputSpec",
    "MemoryFit",
    "ProgressEvent",
    "Prototype",
    "Target",
    "auto_batch_size",
    "equidistant_baseline",
    "generate",
    "score",
]
