"""Models and path-similarity scoring for the throughput benchmark.

Scores come from the product's own facade (``protolens_server.scores.scoring``), with the
natural reference images that SCORES' evaluation uses (scikit-image sample images,
``bench/eval_path_similarity.py``), so both methods' prototypes are judged by the
same code against the same references.
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from protolens_server.engine import GenerationConfig, InputSpec, Prototype, Target
from protolens_server.models import ModelHandle
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))


def tiny_handle(seed: int = 0) -> ModelHandle:
    """A small random CNN (32×32, 10 classes, BatchNorm), frozen as every handle is."""
    torch.manual_seed(seed)
    module = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    ).eval()
    module.requires_grad_(False)
    return ModelHandle(
        name="tiny",
        source="bench:tiny",
        module=module,
        input_spec=InputSpec(3, 32, 32),
        class_names=tuple(f"class_{i}" for i in range(10)),
        digest=f"bench-tiny-{seed}",
    )


def _eval() -> Any:
    """SCORES' path-similarity evaluation, whose natural references this benchmark reuses."""
    import eval_path_similarity

    return eval_path_similarity


def default_classes(n: int) -> tuple[int, ...]:
    """The first ``n`` classes that have natural reference images offline (at most 4)."""
    return tuple(list(_eval().SKIMAGE_CLASSES.values())[:n])


def reference_folder(handle: Any, root: Path, per_class: int = 12, held: int = 4) -> Path:
    """SCORES' scikit-image references for efficientnet_lite0, written under ``root``.

    The same photos, crops and random draws as ``eval_path_similarity.run_efficientnet``
    (``per_class`` reference crops per photo after which ``held`` held-out crops are
    drawn and dropped), so both benchmarks score against the same reference set.
    """
    ev = _eval()
    rng = np.random.default_rng(0)
    for name, cls in ev.SKIMAGE_CLASSES.items():
        crops = ev._crops(ev._photo(name), per_class + held, handle.input_spec.height, rng)
        (root / str(cls)).mkdir(parents=True, exist_ok=True)
        for i, crop in enumerate(crops[:per_class]):
            crop.save(root / str(cls) / f"{name}-{i:02d}.png")
    return root


def path_similarity_fn(
    handle: Any, classes: Sequence[int], work: Path
) -> Callable[[str, list[tuple[int, torch.Tensor]]], dict[str, Any]]:
    """A scorer: (method, [(class, image)]) -> mean path similarity and per-prototype values."""
    from protolens_server.scores.references import ReferenceSet
    from protolens_server.scores.scoring import score_prototypes

    folder = reference_folder(handle, work / "references")
    reference = ReferenceSet.from_folder(folder, handle.class_names)
    reference.require(classes, handle.class_names)
    cache = work / "refstats"

    def score(method: str, images: list[tuple[int, torch.Tensor]]) -> dict[str, Any]:
        prototypes = [as_prototype(c, img) for c, img in images]
        scores = score_prototypes(
            handle, prototypes, reference, robustness_samples=8, cache_dir=cache
        )
        values = [s.path_similarity for s in scores]
        known = [v for v in values if v is not None]
        robust = [
            s.robustness.probability_mean_over_transforms
            for s in scores
            if s.robustness and s.robustness.probability_mean_over_transforms is not None
        ]
        return {
            "mean": statistics.fmean(known) if known else None,
            "sd": statistics.pstdev(known) if len(known) > 1 else None,
            "per_prototype": values,
            "intervals": [(s.summary.low, s.summary.high) for s in scores],
            "robust_probability_mean": sum(robust) / len(robust) if robust else None,
            "layers": scores[0].layer_names if scores else [],
            "curves": [s.curve() for s in scores],
            "reference_images": scores[0].reference_images if scores else 0,
        }

    return score


def as_prototype(class_index: int, image: torch.Tensor) -> Prototype:
    """Wrap a bare image (e.g. Lucent's) so the product's scorer can take it."""
    return Prototype(
        image=image.detach().float().cpu().clamp(0, 1),
        target=Target.of(class_index),
        index=0,
        probability=float("nan"),
        logit=float("nan"),
        top5=[],
        steps=0,
        seed=0,
        config=GenerationConfig(),
    )
