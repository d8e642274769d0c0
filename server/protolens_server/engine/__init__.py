"""Prototype generation and path-similarity scoring: pure torch.

No logging, files, network or global state beyond small in-process caches
(equidistant baselines, layer probes, BatchNorm-folded copies, a reference set's
bootstrap). Progress goes out through ``on_progress``; device and seed are
explicit; preprocessing comes from the model's ``InputSpec``.

Nothing outside ``engine/`` imports its private modules (``tests/test_engine_boundary.py``
checks): what others need is a public name here.
"""

from ._activations import LOGITS, LayerSet, capture, layers_of
from ._alpha import flatten_alpha
from ._baseline import equidistant_baseline
from ._bootstrap import CONFIDENCE, MIN_SPAN_Z, RESAMPLES
from ._caveats import CAVEATS, Caveat, reference_caveats
from ._drift import Drift, drift
from ._fold import folded as fold_batchnorm
from ._isolate import Isolation, IsolationConfig, isolate
from ._logit_scale import logit_spread, penalty_unit
from ._loop import auto_batch_size, find_lr, generate, lr_key, probe_lr
from ._lr_finder import GRID as LR_GRID
from ._lr_finder import PROBE_STEPS as LR_PROBE_STEPS
from ._lr_finder import TOLERANCE as LR_TOLERANCE
from ._lr_finder import LrProbe
from ._lr_finder import centre as lr_centre
from ._lr_finder import choose as choose_lr
from ._lr_finder import end_losses as probe_end_losses
from ._lr_finder import scores as probe_scores
from ._measures import METRICS, similarity
from ._memory import AutoBatch, MemoryFit, cpu_chunk_cap
from ._near_duplicates import Keypoints, content_keypoints, near_duplicate_groups, shares_content
from ._readout import is_multi_label
from ._readout import probabilities as class_probabilities
from ._refstats import (
    MIN_CLASSES,
    MIN_IMAGES,
    RECOMMENDED_CLASSES,
    RECOMMENDED_IMAGES,
    SCORES_VERSION,
    SIZE_ADVICE,
    ReferenceStats,
    check_reference_counts,
    reference_stats,
)
from ._score import score, score_activations
from ._score_types import (
    REASONS,
    Estimate,
    LayerScores,
    MetricScores,
    PrototypeScores,
    Robustness,
    Statistics,
)
from ._units import check_unit_shapes, check_units, layer_shapes
from .types import (
    Classifier,
    GenerationConfig,
    ImageClassifier,
    InputSpec,
    ProgressEvent,
    Prototype,
    PrototypeFacts,
    Target,
    UnitTerm,
)

__all__ = [
    "CAVEATS",
    "CONFIDENCE",
    "LOGITS",
    "LR_GRID",
    "LR_PROBE_STEPS",
    "LR_TOLERANCE",
    "METRICS",
    "MIN_CLASSES",
    "MIN_IMAGES",
    "MIN_SPAN_Z",
    "REASONS",
    "RECOMMENDED_CLASSES",
    "RECOMMENDED_IMAGES",
    "RESAMPLES",
    "SCORES_VERSION",
    "SIZE_ADVICE",
    "AutoBatch",
    "Caveat",
    "Classifier",
    "Drift",
    "Estimate",
    "GenerationConfig",
    "ImageClassifier",
    "InputSpec",
    "Isolation",
    "IsolationConfig",
    "Keypoints",
    "LayerScores",
    "LayerSet",
    "LrProbe",
    "MemoryFit",
    "MetricScores",
    "ProgressEvent",
    "Prototype",
    "PrototypeFacts",
    "PrototypeScores",
    "ReferenceStats",
    "Robustness",
    "Statistics",
    "Target",
    "UnitTerm",
    "auto_batch_size",
    "capture",
    "check_reference_counts",
    "check_unit_shapes",
    "check_units",
    "choose_lr",
    "class_probabilities",
    "content_keypoints",
    "cpu_chunk_cap",
    "drift",
    "equidistant_baseline",
    "find_lr",
    "flatten_alpha",
    "fold_batchnorm",
    "generate",
    "is_multi_label",
    "isolate",
    "layer_shapes",
    "layers_of",
    "logit_spread",
    "lr_centre",
    "lr_key",
    "near_duplicate_groups",
    "penalty_unit",
    "probe_end_losses",
    "probe_lr",
    "probe_scores",
    "reference_caveats",
    "reference_stats",
    "score",
    "score_activations",
    "shares_content",
    "similarity",
]
