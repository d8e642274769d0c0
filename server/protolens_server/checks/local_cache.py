"""Generation for ``protolens check`` without a service: the engine plus a cache folder.

Each chunk's result lives in ``<cache_dir>/<cache key>/`` (``record.json`` and one
PNG per prototype, RGBA for an alpha prototype), keyed exactly like the queue's Redis cache
(``queue.cache.cache_key`` of the chunk's ``JobSpec``), so re-checking an
unchanged model version reads files and runs no optimisation. Entries are
written to a temporary folder and renamed into place, so a cancelled or crashed
run never leaves a half entry.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from protolens_server.checks.prototypes import ClassPrototypes
from protolens_server.engine import ProgressEvent, Prototype, Target, flatten_alpha, generate
from protolens_server.imageio import decode_png, encode_png, png_channels
from protolens_server.queue.cache import cache_key
from protolens_server.queue.records import JobSpec
from protolens_server.scores.cache import cache_dir

if TYPE_CHECKING:
    from protolens_server.models.handle import ModelHandle
    from protolens_server.scores.references import ReferenceSet

RECORD = "record.json"


def default_cache_dir() -> Path:
    return cache_dir("checks")


class LocalGenerator:
    """Generate (or read from the cache folder) one chunk of a check's prototypes."""

    def __init__(
        self,
        cache_dir: str | Path | None = None,
        *,
        device: str = "cpu",
        reference: ReferenceSet | str | Path | None = None,
    ) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.device = device
        self.reference = reference  # a ReferenceSet (or folder) to score against, or None

    def run(
        self,
        handle: ModelHandle,
        spec: JobSpec,
        *,
        on_progress: Callable[[int, int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[ClassPrototypes]:
        """One ``ClassPrototypes`` per target class of ``spec``, in order."""
        key = cache_key(spec)
        entry = self.cache_dir / key
        if (entry / RECORD).is_file():
            return _read(entry, spec, hit=True, job_id=key)
        config = spec.config
        targets = [Target(t.classes, t.kind) for t in spec.targets]  # type: ignore[arg-type]

        def progress(event: ProgressEvent) -> None:
            if on_progress is not None:
                on_progress(event.step, event.total_steps)

        prototypes = generate(
            handle,
            targets,
            config,
            seed=[spec.seed] * len(targets),
            device=self.device,
            on_progress=progress,
            should_stop=should_stop,
        )
        pngs = [encode_png(p.image, alpha=p.config.alpha) for p in prototypes]  # RGBA: alpha
        if self.reference is not None:  # scored as stored: the PNGs written below
            from protolens_server.scores.scoring import score_prototypes

            score_prototypes(handle, prototypes, self.reference, pngs=pngs, device=self.device)
        _write(entry, prototypes, pngs)
        return _read(entry, spec, hit=False, job_id=key)


def _write(entry: Path, prototypes: list[Prototype], pngs: list[bytes]) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=entry.parent))
    try:
        items = []
        for i, (p, png) in enumerate(zip(prototypes, pngs, strict=True)):
            (tmp / f"{i}.png").write_bytes(png)
            scores = p.scores.to_dict() if p.scores is not None else None
            items.append(
                {
                    "class": int(p.target.classes[0]),
                    "index": int(p.index),
                    "probability": float(p.probability),
                    "logit": float(p.logit),
                    "scores": scores,
                }
            )
        (tmp / RECORD).write_text(json.dumps({"prototypes": items}))
        try:
            tmp.rename(entry)
        except OSError:  # another run stored the same entry first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _read(entry: Path, spec: JobSpec, *, hit: bool, job_id: str) -> list[ClassPrototypes]:
    items = json.loads((entry / RECORD).read_text())["prototypes"]
    pngs = [(entry / f"{i}.png").read_bytes() for i in range(len(items))]
    probabilities = [float(item["probability"]) for item in items]
    scores = [item.get("scores") for item in items]
    return group_by_class(spec, probabilities, scores, pngs, hit=hit, job_id=job_id)


def analysed_image(png: bytes) -> torch.Tensor:
    """What a check analyses of a stored prototype: its PNG decoded, an alpha prototype's
    (grayscale+alpha or RGBA) composited over mid-grey, as its probability is measured."""
    channels = png_channels(png)
    if channels in (2, 4):
        return flatten_alpha(decode_png(png, channels))
    return decode_png(png)


def group_by_class(
    spec: JobSpec,
    probabilities: Sequence[float],
    scores: Sequence[dict[str, Any] | None],
    pngs: Sequence[bytes],
    *,
    hit: bool,
    job_id: str,
) -> list[ClassPrototypes]:
    """Split a chunk's target-major prototypes (each one's probability, scores and PNG)
    into one ``ClassPrototypes`` per class."""
    per = spec.prototypes_per_target
    out = []
    for t, target in enumerate(spec.targets):
        rows = range(t * per, (t + 1) * per)
        images = torch.stack([analysed_image(pngs[r]) for r in rows])
        out.append(
            ClassPrototypes(
                class_index=int(target.classes[0]),
                images=images,
                pngs=[pngs[r] for r in rows],
                probabilities=[float(probabilities[r]) for r in rows],
                scores=[scores[r] for r in rows],
                cache_hit=hit,
                job_id=job_id,
            )
        )
    return out
