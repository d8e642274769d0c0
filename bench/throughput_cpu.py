"""CPU throughput: the engine (classes batched) against Lucent (one class per call).

Both run in one process on the same model, image size, steps and torch thread
count. Repetitions alternate which method goes first, so both see the same
background load. Each engine repetition uses a fresh seed, so the equidistant
baseline (which the engine caches per model and seed) is computed inside every
timed call: the numbers are for a cold cache.

When the engine's rate is found (``lr = 0``, the default), the learning-rate finder runs
once, timed on its own, before the repetitions: it is paid once per model (a worker
memoises it per model digest), so the repetitions time generation at a known rate, and
the ratios are given both ways: at a known rate, and for a model's first call (the
finder's time shared over the classes of one call).
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from statistics import median
from typing import Any

import torch
import torch.nn.functional as F
from protolens_server.engine import GenerationConfig, find_lr, generate

# (method, [(class, image (3,H,W) in [0,1])]) -> {"mean": float|None, ...}
ScoreFn = Callable[[str, list[tuple[int, torch.Tensor]]], dict[str, Any]]


@dataclass(frozen=True)
class CpuSettings:
    model: str
    classes: tuple[int, ...]
    steps: int
    size: int
    threads: int
    reps: int
    seed: int
    engine_batch: int
    lucent_frozen: bool = False  # also time Lucent on the frozen model (not how users run it)
    engine_options: tuple[tuple[str, Any], ...] = ()  # GenerationConfig overrides, e.g. bn_prior


@dataclass
class _Timing:
    wall: float
    cpu: float
    prototypes: list[tuple[int, torch.Tensor]]


def machine_description(threads: int) -> str:
    cpu = platform.processor() or platform.machine()
    return (
        f"{os.cpu_count()}-core {platform.machine()} ({cpu}), {platform.system()}, "
        f"torch {torch.__version__}, {threads} torch threads"
    )


def run_cpu(
    settings: CpuSettings,
    handle: Any,
    *,
    lucent_skip_reason: str | None,
    score_fn: ScoreFn | None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Time both methods ``settings.reps`` times, alternating order; score every prototype."""
    torch.set_num_threads(settings.threads)
    methods: dict[str, Callable[[int], _Timing]] = {"engine": _engine_runner(settings, handle)}
    if lucent_skip_reason is None:
        methods["lucent"] = _lucent_runner(settings, handle, trainable=True)
        if settings.lucent_frozen:
            methods["lucent (frozen model)"] = _lucent_runner(settings, handle, trainable=False)
    loadavg_start = os.getloadavg()
    finder = _time_finder(settings, handle, log)
    timings: dict[str, list[_Timing]] = {name: [] for name in methods}
    for rep in range(settings.reps):
        order = list(methods) if rep % 2 == 0 else list(reversed(methods))
        for name in order:
            timing = methods[name](rep)
            timings[name].append(timing)
            log(
                f"rep {rep + 1}/{settings.reps} {name}: {timing.wall:.1f} s wall, "
                f"{timing.cpu:.1f} s CPU for {len(timing.prototypes)} prototypes"
            )
    loadavg_end = os.getloadavg()
    result: dict[str, Any] = {
        "mode": "cpu",
        "settings": asdict(settings),
        "machine": {
            "description": machine_description(settings.threads),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "loadavg_start": loadavg_start[0],
            "loadavg_end": loadavg_end[0],
        },
        "methods": {},
        "finder": finder,
        "notes": [],
    }
    for name, runs in timings.items():
        result["methods"][name] = _summarise(name, runs, settings, handle, score_fn, log)
    if lucent_skip_reason is not None:
        result["methods"]["lucent"] = {"skipped": lucent_skip_reason}
        result["notes"].append(lucent_skip_reason)
    result["ratios"] = _ratios(result["methods"], finder, len(settings.classes))
    result["notes"] += _standard_notes(settings)
    return result


def _engine_config(settings: CpuSettings) -> GenerationConfig:
    return GenerationConfig(
        steps=settings.steps, max_batch=settings.engine_batch, **dict(settings.engine_options)
    )


def _time_finder(
    settings: CpuSettings, handle: Any, log: Callable[[str], None]
) -> dict[str, float] | None:
    """Run the learning-rate finder once (memoised in process for the engine's runs) and
    time it; None when the config gives a rate."""
    config = _engine_config(settings)
    if config.lr:
        return None
    t0, c0 = time.perf_counter(), time.process_time()
    lr = find_lr(handle, config, device="cpu")
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    log(f"engine learning-rate finder: lr {lr:g}, {wall:.1f} s wall, {cpu:.1f} s CPU (once)")
    return {"lr": lr, "seconds": wall, "cpu_seconds": cpu}


def _engine_runner(settings: CpuSettings, handle: Any) -> Callable[[int], _Timing]:
    config = _engine_config(settings)

    def run(rep: int) -> _Timing:
        seed = settings.seed + rep
        t0, c0 = time.perf_counter(), time.process_time()
        protos = generate(handle, list(settings.classes), config, seed=seed, device="cpu")
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        return _Timing(wall, cpu, [(p.target.classes[0], p.image) for p in protos])

    return run


def _lucent_runner(
    settings: CpuSettings, handle: Any, *, trainable: bool
) -> Callable[[int], _Timing]:
    import lucent_render

    model = lucent_render.as_user_model(handle.module)
    if not trainable:
        model.requires_grad_(False)
    layer = lucent_render.final_linear_layer(model)
    spec = handle.input_spec

    def run(rep: int) -> _Timing:
        t0, c0 = time.perf_counter(), time.process_time()
        images = [
            (
                c,
                lucent_render.render_class(
                    model,
                    c,
                    size=settings.size,
                    steps=settings.steps,
                    mean=spec.mean,
                    std=spec.std,
                    seed=settings.seed + rep,
                    layer=layer,
                ),
            )
            for c in settings.classes
        ]
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        return _Timing(wall, cpu, images)

    return run


@torch.no_grad()
def target_probabilities(
    handle: Any, prototypes: Sequence[tuple[int, torch.Tensor]]
) -> list[float]:
    """Softmax probability of each image's own class, on the untransformed image."""
    images = torch.stack([img for _, img in prototypes]).float()
    logits = handle.module(handle.input_spec.normalise(images))
    probs = F.softmax(logits.float(), dim=1)
    return [float(probs[k, c]) for k, (c, _) in enumerate(prototypes)]


def _summarise(
    name: str,
    runs: list[_Timing],
    settings: CpuSettings,
    handle: Any,
    score_fn: ScoreFn | None,
    log: Callable[[str], None],
) -> dict[str, Any]:
    n = len(settings.classes)
    per_proto = [r.wall / n for r in runs]
    every = [proto for r in runs for proto in r.prototypes]  # every repetition's prototypes
    probs = target_probabilities(handle, every)
    summary: dict[str, Any] = {
        "prototypes_per_call": min(settings.engine_batch, n) if name == "engine" else 1,
        "passes": len(runs),
        "seconds_per_prototype": median(per_proto),
        "seconds_per_prototype_reps": per_proto,
        "cpu_seconds_per_prototype": median(r.cpu / n for r in runs),
        "prototypes_per_second": 1.0 / median(per_proto),
        "target_probabilities": probs,
        "mean_target_probability": sum(probs) / len(probs),
        "path_similarity": None,
    }
    if score_fn is not None:
        log(f"scoring {name}'s {len(every)} prototypes")
        summary["path_similarity"] = score_fn(name, every)
    return summary


def _ratios(
    methods: dict[str, dict[str, Any]], finder: dict[str, float] | None, classes: int
) -> dict[str, float | None]:
    """Lucent's time per prototype over the engine's, at a known rate and, with the finder's
    time shared over one call's ``classes``, for a model's first call."""
    engine, lucent = methods.get("engine"), methods.get("lucent")
    keys = ("throughput", "cpu_time", "first_call_throughput", "first_call_cpu_time")
    if not engine or not lucent or lucent.get("skipped"):
        return {**dict.fromkeys(keys), "path_similarity_difference": None}
    sim_e = (engine.get("path_similarity") or {}).get("mean")
    sim_l = (lucent.get("path_similarity") or {}).get("mean")
    wall, cpu = engine["seconds_per_prototype"], engine["cpu_seconds_per_prototype"]
    extra_wall = finder["seconds"] / classes if finder else 0.0
    extra_cpu = finder["cpu_seconds"] / classes if finder else 0.0
    return {
        "throughput": lucent["seconds_per_prototype"] / wall,
        "cpu_time": lucent["cpu_seconds_per_prototype"] / cpu,
        "first_call_throughput": lucent["seconds_per_prototype"] / (wall + extra_wall),
        "first_call_cpu_time": lucent["cpu_seconds_per_prototype"] / (cpu + extra_cpu),
        "path_similarity_difference": (
            sim_e - sim_l if sim_e is not None and sim_l is not None else None
        ),
    }


def _standard_notes(settings: CpuSettings) -> list[str]:
    return [
        "s / prototype: median over repetitions of (wall time of all classes / classes); "
        "CPU s: process CPU time (all threads), less sensitive to other load on the machine.",
        f"engine: product defaults (GenerationConfig) but steps={settings.steps}, "
        f"max_batch={settings.engine_batch}"
        + "".join(f", {k}={v!r}" for k, v in settings.engine_options)
        + "; includes its equidistant baseline (cold cache); the learning-rate finder, when "
        "the rate is found, runs once before the repetitions and is timed apart.",
        "Lucent: render_vis with param.image(size) (FFT + decorrelation), standard transforms, "
        "Adam(lr=0.05), objective channel(<logits layer>, class); model parameters trainable, "
        "as a user's model is.",
        "mean target p: softmax probability of the class on the final, untransformed image; "
        "path similarity: mean over every repetition's prototypes (one per class and seed) of "
        "the product's score (normalised Spearman averaged over layers; 1 = like a natural "
        "image of the class, 0 = like a natural image of another class), against SCORES' "
        "scikit-image references (bench/eval_path_similarity.py); p under transforms: the "
        "scorer's robustness probability.",
    ]
