"""Score prototypes against a reference set: the one call the CLI, checks and workers make.

    scores = score_prototypes(handle, prototypes, Path("refs/"), layers=None)
    scores[0].path_similarity      # median normalised Spearman over the determinate layers
    scores[0].summary.low, scores[0].summary.high   # its bootstrap interval
    prototypes[0].scores is scores[0]

**Scores describe what is stored.** A prototype reaches its user as an 8-bit PNG,
so it is scored as that PNG decodes (``stored_image``), not as the float image the
optimisation ended with: recomputing the scores from the downloaded file gives the
stored numbers. Loads (or reuses) the reference set and its cached statistics,
then runs the engine's pure scoring (``engine.score``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import torch

from protolens_server.engine import Prototype, PrototypeScores, flatten_alpha, score
from protolens_server.imageio import decode_png, encode_png
from protolens_server.scores.references import ReferenceSet
from protolens_server.scores.statistics import reference_statistics, save_new_bootstraps


def open_reference(handle: object, reference: ReferenceSet | str | Path) -> ReferenceSet:
    """A ``ReferenceSet`` as is, or one read from a folder for ``handle``'s classes."""
    if isinstance(reference, ReferenceSet):
        return reference
    return ReferenceSet.from_folder(
        reference,
        getattr(handle, "class_names", ()),
        getattr(handle, "class_aliases", ()),
    )


def stored_image(
    image: torch.Tensor, png: bytes | None = None, *, alpha: bool = False
) -> torch.Tensor:
    """The image as it is stored: as its PNG decodes (``png``, or the PNG
    ``imageio.encode_png`` makes) for 1 or 3 channels (plus the opacity of an ``alpha``
    prototype); any other number of channels is stored as a lossless float tensor (the
    PNG is only a preview), so the image itself."""
    channels = int(image.shape[0])
    if channels - alpha not in (1, 3):
        return image.detach().to("cpu", torch.float32).clamp(0, 1)
    encoded = png if png is not None else encode_png(image, alpha=alpha)
    return decode_png(encoded, channels)


def _seen(prototype: Prototype, image: torch.Tensor) -> torch.Tensor:
    """What the model is scored on: an alpha prototype over mid-grey (as its probability)."""
    return flatten_alpha(image) if prototype.config.alpha else image


def score_prototypes(
    handle: object,
    prototypes: Sequence[Prototype],
    reference: ReferenceSet | str | Path,
    *,
    pngs: Sequence[bytes] | None = None,
    layers: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
    robustness_samples: int = 16,
    robustness_transforms: str = "medium",
    seed: int = 0,
    cache_dir: str | Path | None = None,
) -> list[PrototypeScores]:
    """Scores of each prototype as stored (also set on ``prototype.scores``), in order.

    ``pngs``: the PNG bytes that will be stored, one per prototype, when the
    caller has encoded them already (the worker); otherwise they are encoded here.
    """
    if pngs is not None and len(pngs) != len(prototypes):
        raise ValueError(f"{len(pngs)} PNGs for {len(prototypes)} prototypes")
    refset = open_reference(handle, reference)
    needed = sorted({c for p in prototypes for c in p.target.classes})
    refset.require(needed, getattr(handle, "class_names", ()))
    stats = reference_statistics(handle, refset, layers, device=device, cache_dir=cache_dir)
    as_stored = [
        dataclasses.replace(
            p,
            image=_seen(p, stored_image(p.image, pngs[i] if pngs else None, alpha=p.config.alpha)),
        )
        for i, p in enumerate(prototypes)
    ]
    results = score(
        handle,
        as_stored,
        stats,
        device=device,
        robustness_samples=robustness_samples,
        robustness_transforms=robustness_transforms,
        seed=seed,
    )
    save_new_bootstraps(stats)
    for prototype, result in zip(prototypes, results, strict=True):
        prototype.scores = result
    return results
