"""One engine call for a batch of jobs, and turning its prototypes into stored results.

Blocking torch code: the worker calls these in a thread (``asyncio.to_thread``)
so its heartbeats keep going. Jobs in a batch share the model and config; each
target carries its own job's seed, so a job's prototypes are the same whether it
ran alone or with others (the engine seeds every prototype independently).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from protolens_server import metrics
from protolens_server.config import Settings
from protolens_server.engine import (
    GenerationConfig,
    IsolationConfig,
    ProgressEvent,
    Prototype,
    PrototypeScores,
    generate,
)
from protolens_server.logging import get_logger
from protolens_server.models.handle import ModelHandle
from protolens_server.queue.records import JobPhase, JobSpec, StoredPrototype

if TYPE_CHECKING:
    import torch

log = get_logger("protolens.worker")


def job_slices(specs: Sequence[JobSpec]) -> list[slice]:
    """Where each job's prototypes sit in the engine's target-major output."""
    out, start = [], 0
    for spec in specs:
        n = spec.images
        out.append(slice(start, start + n))
        start += n
    return out


# --- what the worker says it is doing (Progress.phase / phase_message in the API) ----------


def loading_phase(model: str, device: str) -> tuple[JobPhase, str]:
    """Loading a model this worker has not loaded yet (the catalog folds its BatchNorm too)."""
    return JobPhase.LOADING_MODEL, (
        f"loading model {model} onto {device} and folding its BatchNorm layers "
        "(first use on this worker)"
    )


def preparing_phase(spec: JobSpec, *, compile: bool) -> tuple[JobPhase, str]:
    """Everything ``generate`` does before its first optimisation step."""
    config = spec.config
    parts = ["building the optimisation"]
    if not config.lr:  # lr 0: the finder's probe runs, unless this model's rate is known
        parts.append("choosing the learning rate (short probe runs, once per model)")
    if (
        isinstance(config, GenerationConfig)
        and config.start == "equidistant"
        and config.equidistant_steps > 0
    ):
        parts.append(f"finding the equidistant start ({config.equidistant_steps} steps)")
    if compile:
        parts.append("torch.compile compiles the step on the first steps (minutes on a CPU)")
    return JobPhase.PREPARING, "; ".join(parts)


def waiting_phase() -> tuple[JobPhase, str]:
    """Claimed ahead (prefetched) while the worker's engine finishes the batch before it."""
    return JobPhase.PREPARING, "claimed by a worker: starts when its current batch ends"


def optimising_phase(images: int) -> tuple[JobPhase, str]:
    return JobPhase.OPTIMISING, f"optimising {images} image{'s' if images != 1 else ''}"


def finishing_phase(spec: JobSpec) -> tuple[JobPhase, str]:
    """After the last step: scores (when the job names a reference set), then the PNGs."""
    if spec.reference_set:
        return JobPhase.SCORING, (
            f"scoring against reference set '{spec.reference_set}' (its statistics are "
            "computed on first use per model, then cached)"
        )
    return JobPhase.STORING, "encoding and storing the result"


FAULT_OOM_ENV = "PROTOLENS_FAULT_OOM_ABOVE"


def with_injected_oom(handle: ModelHandle) -> ModelHandle:
    """Fault injection (tests/faults): with ``PROTOLENS_FAULT_OOM_ABOVE=N`` the model raises
    ``torch.OutOfMemoryError`` on forward passes over more than N images, as a GPU that
    is too small would; the engine must split the batch and carry on. Off when unset.

    Each injected error is logged and counted (``protolens_injected_oom_total``). An
    eager module stays an ``nn.Module`` (wrapped), so layer probes, channels_last and
    ``.to()`` see it as without the fault and the prototypes are the same.
    """
    limit = int(os.environ.get(FAULT_OOM_ENV) or 0)
    if limit <= 0:
        return handle
    import torch
    from torch import nn

    inner = handle.module
    if isinstance(inner, nn.Module) and not isinstance(inner, torch.jit.ScriptModule):
        from protolens_server.engine import fold_batchnorm

        # The wrapper's size check cannot be traced, so the engine would not fold
        # BatchNorm through it: fold the inner model here, so the faulted run computes
        # what an unfaulted one does (the same network, engine.fold_batchnorm).
        return dataclasses.replace(handle, module=_oom_above_module(fold_batchnorm(inner), limit))

    def module(x: torch.Tensor) -> torch.Tensor:
        _raise_if_over(x, limit)
        return inner(x)

    return dataclasses.replace(handle, module=module)


def _oom_above_module(inner: torch.nn.Module, limit: int) -> torch.nn.Module:
    from torch import nn

    class OomAbove(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner
            self.train(inner.training)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            _raise_if_over(x, limit)
            return self.inner(x)

    return OomAbove()


def _raise_if_over(x: torch.Tensor, limit: int) -> None:
    if x.shape[0] > limit:
        import torch

        metrics.INJECTED_OOMS.inc()
        log.warning("worker.injected_oom", extra={"images": int(x.shape[0]), "limit": limit})
        raise torch.OutOfMemoryError(f"injected: forward over {x.shape[0]} > {limit} images")


def run_engine(
    handle: ModelHandle,
    specs: Sequence[JobSpec],
    *,
    images: Sequence[bytes] | None = None,
    device: str,
    on_progress: Callable[[ProgressEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    compile: bool = False,
    memory_budget: float = 0.8,
    lr_cache: dict[str, float] | None = None,
) -> list[list[Prototype]]:
    """Generate every job's prototypes in one engine call; one list per job, in order.

    ``compile`` and ``memory_budget`` are the engine's execution options
    (``Settings.engine_compile``, ``Settings.gpu_memory_budget``); ``lr_cache`` the
    learning rates already found for this model (the engine adds what it finds);
    ``images`` the input images of isolation jobs (PNG bytes, one per spec).
    """
    import torch

    # torch's CPU thread count is per thread: this is the one the batch runs on
    log.info("engine running on %d torch thread(s)", torch.get_num_threads())
    if specs[0].mode == "isolation":  # same queue and workers; its own engine verb
        if images is None or len(images) != len(specs):
            raise ValueError("isolation jobs need their input images, one per job")
        return [
            [
                run_isolation(
                    handle,
                    spec,
                    image,
                    device=device,
                    on_progress=on_progress,
                    should_stop=should_stop,
                )
            ]
            for spec, image in zip(specs, images, strict=True)
        ]
    config = specs[0].config
    if not isinstance(config, GenerationConfig):
        raise TypeError(f"a prototype job carries a GenerationConfig, not {type(config).__name__}")
    handle = with_injected_oom(handle)
    targets = [t for spec in specs for t in spec.targets]
    seeds = [spec.seed for spec in specs for _ in spec.targets]
    prototypes = generate(
        handle,
        targets,
        config,
        seed=seeds,
        device=device,
        on_progress=on_progress,
        should_stop=should_stop,
        compile=compile,
        memory_budget=memory_budget,
        on_oom_split=_count_oom_split,
        lr_cache=lr_cache,
    )
    return [prototypes[s] for s in job_slices(specs)]


def run_isolation(
    handle: ModelHandle,
    spec: JobSpec,
    png: bytes,
    *,
    device: str,
    on_progress: Callable[[ProgressEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Prototype:
    """An isolation job's result as the one "prototype" the queue stores: the input image
    (``png``, from the blob store) with the mask as its alpha channel, the probabilities
    in ``extras["isolation"]``."""
    from protolens_server.engine import Target, isolate
    from protolens_server.imageio import decode_png

    config = spec.config
    if not isinstance(config, IsolationConfig):
        raise TypeError(f"an isolation job carries an IsolationConfig, not {type(config).__name__}")
    image = decode_png(png, handle.input_spec.channels)
    target = spec.targets[0].classes[0]
    found = isolate(
        handle,
        image,
        target,
        config,
        seed=spec.seed,
        device=device,
        on_progress=on_progress,
        should_stop=should_stop,
    )
    return Prototype(
        image=found.isolated,
        target=Target((target,)),
        index=0,
        probability=found.probability_kept,
        logit=0.0,
        top5=[],
        steps=found.steps,
        seed=spec.seed,
        config=GenerationConfig(alpha=True),  # its last channel is an opacity: the mask
        extras={
            "isolation": {
                "probability": found.probability,
                "probability_kept": found.probability_kept,
                "probability_removed": found.probability_removed,
                "mask_mean": found.mask_mean,
            }
        },
    )


def _count_oom_split(images: int, limit: int) -> None:
    metrics.ENGINE_OOM_SPLITS.inc()
    log.warning("worker.oom_split", extra={"images": images, "limit": limit})


def package(
    handle: ModelHandle,
    spec: JobSpec,
    prototypes: list[Prototype],
    *,
    settings: Settings,
    device: str,
) -> tuple[list[StoredPrototype], list[bytes], list[bytes]]:
    """Encode one job's prototypes (a PNG, a preview for other than 1 or 3 channels, and the
    lossless float32 tensor, both with their provenance) and score them as stored (when
    the job names a reference set): the scores describe the image the user downloads."""
    from protolens_server.imageio import encode_png, encode_tensor

    metas = [provenance(spec, p) for p in prototypes]
    pngs = [
        encode_png(p.image, provenance=m, alpha=p.config.alpha)
        for p, m in zip(prototypes, metas, strict=True)
    ]
    tensors = [encode_tensor(p.image, m) for p, m in zip(prototypes, metas, strict=True)]
    if spec.reference_set:
        from protolens_server.scores.naming import check_file_count, registered_path
        from protolens_server.scores.scoring import score_prototypes

        folder = registered_path(settings.reference_root, spec.reference_set)
        check_file_count(folder, spec.reference_set, settings.max_reference_files)
        score_prototypes(handle, prototypes, folder, pngs=pngs, device=device)
    stored = [
        StoredPrototype.of(
            p,
            scores=_scores_dict(p.scores),
            isolation=p.extras.get("isolation"),
            caveats=[c.to_dict() for c in p.scores.caveats] if p.scores is not None else [],
        )
        for p in prototypes
    ]
    return stored, pngs, tensors


def package_all(
    handle: ModelHandle,
    specs: Sequence[JobSpec],
    results: Sequence[list[Prototype]],
    *,
    settings: Settings,
    device: str,
) -> list[tuple[list[StoredPrototype], list[bytes], list[bytes]] | Exception]:
    """``package`` each job's prototypes; a job whose packaging fails gives its error."""
    out: list[tuple[list[StoredPrototype], list[bytes], list[bytes]] | Exception] = []
    for spec, prototypes in zip(specs, results, strict=True):
        try:
            out.append(package(handle, spec, prototypes, settings=settings, device=device))
        except Exception as e:
            out.append(e)
    return out


def provenance(spec: JobSpec, prototype: Prototype) -> dict[str, str]:
    """What a stored prototype file says about itself (PNG text chunks, safetensors
    metadata): enough to reproduce it with the same engine version."""
    target = prototype.target
    return {
        "model": spec.model,
        "model_digest": spec.model_digest,
        "target": json.dumps(target.material(), sort_keys=True, separators=(",", ":")),
        "config": _config_json(spec.config),
        "seed": str(int(prototype.seed)),
        "engine_version": spec.engine_version,
        "index": str(int(prototype.index)),
    }


@functools.lru_cache(maxsize=64)
def _config_json(config: GenerationConfig | IsolationConfig) -> str:
    """A config's canonical JSON: the jobs of a batch share one config, so each
    is written once, not once per prototype stored (the configs are frozen)."""
    return json.dumps(config.to_dict(), sort_keys=True, separators=(",", ":"))


def _scores_dict(scores: PrototypeScores | None) -> dict[str, Any] | None:
    return scores.to_dict() if scores is not None else None
