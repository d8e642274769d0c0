"""GPU throughput: prototypes/s against batch size, achieved FLOP/s, memory per prototype.

For each architecture (torchvision ResNet-18/50, random weights: timing does not
depend on them) the engine runs one batch of B distinct classes for ``steps``
steps at B = 1, 8, 32, 64, 128, ... until the next batch would pass the memory
budget; Lucent renders one class per call on the same card. Then, per architecture:
the best batch again with the engine's ``torch.compile`` switch (``compare_compile``:
first-call seconds include the compilation), and the automatic batch size
(``max_batch=0``): the engine's memory probe, its predicted peaks against the
peaks the sweep measured, and a short run of twice the largest batch sized by it.
FLOPs per image-step come from ``torch.utils.flop_counter.FlopCounterMode`` over the
model's forward and backward (input gradients only, as the engine computes), and the
card's matrix-unit rate from timing a large bf16 ``torch.matmul`` in the same run.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from protolens_server.engine import (
    Classifier,
    GenerationConfig,
    InputSpec,
    auto_batch_size,
    generate,
)
from torch.utils.flop_counter import FlopCounterMode

IMAGENET_SPEC = InputSpec()
MIB = 2**20


@dataclass(frozen=True)
class GpuSettings:
    device: str
    archs: tuple[str, ...]
    size: int
    steps: int
    batches: tuple[int, ...]
    memory_budget_gib: float | None
    autocast: bool
    channels_last: bool
    compile: bool
    lucent_classes: int
    matmul_n: int
    seed: int
    max_run_seconds: float = 45.0  # skip a batch whose run would take longer than this
    compare_compile: bool = False  # rerun the best batch with generate(compile=True)
    auto_check: bool = True  # the max_batch=0 probe against measured peaks, and a run
    auto_steps: int = 16  # steps of the max_batch=0 run


def measure_matmul_tflops(device: torch.device, n: int, iters: int = 10) -> tuple[float, str]:
    """The card's measured matrix rate: mean of ``iters`` n×n×n products after warm-up."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        torch.matmul(a, b)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        torch.matmul(a, b)
    _sync(device)
    seconds = (time.perf_counter() - t0) / iters
    return 2 * n**3 / seconds / 1e12, str(dtype).removeprefix("torch.")


def flops_per_image_step(
    module: torch.nn.Module,
    spec: InputSpec,
    device: torch.device,
    *,
    autocast: bool,
    weight_grads: bool,
    size: int | None = None,
) -> float:
    """FLOPs of one forward + backward of one image (input gradient; weights too if asked)."""
    batch = 2
    h = w = size or spec.height
    x = torch.rand(batch, spec.channels, h, w, device=device, requires_grad=True)
    params = [p for p in module.parameters() if p.requires_grad] if weight_grads else []
    ctx = (
        torch.autocast(device.type, dtype=torch.bfloat16)
        if autocast and device.type == "cuda"
        else contextlib.nullcontext()
    )
    counter = FlopCounterMode(display=False)
    with counter:
        with ctx:
            logits = module(spec.normalise(x))
        loss = logits.float()[:, 0].sum()
        torch.autograd.grad(loss, [x, *params])
    return counter.get_total_flops() / batch


def run_gpu(
    settings: GpuSettings,
    *,
    lucent_skip_reason: str | None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    import torchvision

    device = torch.device(settings.device)
    tflops, dtype = measure_matmul_tflops(device, settings.matmul_n)
    log(f"matmul rate: {tflops:.4g} TFLOP/s ({dtype}, n={settings.matmul_n})")
    result: dict[str, Any] = {
        "mode": "gpu",
        "settings": asdict(settings),
        "device": _device_info(device, tflops, dtype, settings.matmul_n),
        "runs": [],
        "summary": {},
        "notes": [],
    }
    spec = InputSpec(height=settings.size, width=settings.size)
    for arch in settings.archs:
        torch.manual_seed(settings.seed)
        model = getattr(torchvision.models, arch)(weights=None).eval()
        user_model = copy.deepcopy(model)  # Lucent's: trainable, as a user's model is
        model.requires_grad_(False)  # the engine's: frozen, as every ModelHandle is
        model.to(device)
        engine_flops = flops_per_image_step(
            model, spec, device, autocast=settings.autocast, weight_grads=False
        )
        classifier = Classifier(model, spec, 1000)
        engine_runs = _sweep(arch, classifier, engine_flops, tflops, settings, log)
        result["runs"] += engine_runs
        extra: dict[str, Any] = {}
        if settings.compare_compile and not settings.compile:
            best = max(engine_runs, key=lambda r: r["prototypes_per_second"])
            run = _compiled(arch, classifier, best["batch"], engine_flops, tflops, settings, log)
            result["runs"].append(run)
            extra["compile"] = {
                "batch": run["batch"],
                "first_call_seconds": run["first_call_seconds"],
                "prototypes_per_second": run["prototypes_per_second"],
                "speedup_vs_eager": run["prototypes_per_second"] / best["prototypes_per_second"],
            }
        if settings.auto_check:
            extra["auto"] = _auto(arch, classifier, engine_runs, settings, log)
        lucent_run = None
        if lucent_skip_reason is None:
            lucent_run = _lucent(arch, user_model.to(device), spec, tflops, settings, log)
            result["runs"].append(lucent_run)
        result["summary"][arch] = {
            **_summary(engine_runs, lucent_run, engine_flops, tflops, settings),
            **extra,
        }
        del model, user_model, classifier
        _empty_cache(device)
    if lucent_skip_reason is not None:
        result["notes"].append(lucent_skip_reason)
    result["notes"] += [
        "engine: one generate() call per batch of B distinct classes, max_batch=B; timed "
        "after an untimed warm-up call at the same B; includes the equidistant baseline.",
        "Lucent: render_vis, one class per call (its default param and transforms), trainable "
        "model; TFLOP/s for Lucent use a FLOP count at its padded input (size + 24 px) with "
        "weight gradients.",
        "% of matmul rate: achieved FLOP/s over the measured matmul rate of the same card.",
    ]
    return result


def _sweep(
    arch: str,
    classifier: Classifier,
    flops: float,
    tflops: float,
    settings: GpuSettings,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    device = torch.device(settings.device)
    budget = _budget_bytes(device, settings.memory_budget_gib)
    runs: list[dict[str, Any]] = []
    for k, batch in enumerate(settings.batches):
        if runs and _stop_before(arch, batch, runs[-1], budget, settings.max_run_seconds, log):
            break
        config, classes, warm = _batch_run(classifier, batch, settings)
        run_kw = {"device": device, "compile": settings.compile}
        generate(classifier, classes, warm, seed=settings.seed + 1000 + k, **run_kw)
        _reset_peak(device)
        _sync(device)
        t0 = time.perf_counter()
        protos = generate(classifier, classes, config, seed=settings.seed + k, **run_kw)
        _sync(device)
        seconds = time.perf_counter() - t0
        peak = _peak(device)
        run = _row(arch, "engine", batch, seconds, flops, tflops, settings.steps, peak)
        run["mean_target_probability"] = sum(p.probability for p in protos) / len(protos)
        runs.append(run)
        log(
            f"{arch} engine batch {batch}: {seconds:.2f} s, "
            f"{run['prototypes_per_second']:.2f} prototypes/s, {run['achieved_tflops']:.1f} TFLOP/s"
        )
    return runs


def _batch_run(
    classifier: Classifier, batch: int, settings: GpuSettings
) -> tuple[GenerationConfig, list[int], GenerationConfig]:
    """A timed run of ``batch`` distinct classes: its config, classes and warm-up config
    (``progress_every`` steps)."""
    config = GenerationConfig(
        steps=settings.steps,
        max_batch=batch,
        autocast=settings.autocast,
        channels_last=settings.channels_last,
    )
    classes = [i % classifier.num_classes for i in range(batch)]
    return config, classes, config.replace(steps=min(settings.steps, config.progress_every))


def _compiled(
    arch: str,
    classifier: Classifier,
    batch: int,
    flops: float,
    tflops: float,
    settings: GpuSettings,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """The sweep's run at ``batch`` with ``generate(compile=True)``: an untimed first call
    (it compiles; its seconds are reported), then the timed call."""
    device = torch.device(settings.device)
    # warm-up of progress_every steps: both graphs (steps with and without the prior)
    config, classes, warm = _batch_run(classifier, batch, settings)
    _sync(device)
    t0 = time.perf_counter()
    generate(classifier, classes, warm, seed=settings.seed + 2000, device=device, compile=True)
    _sync(device)
    first = time.perf_counter() - t0
    _reset_peak(device)
    t0 = time.perf_counter()
    protos = generate(
        classifier, classes, config, seed=settings.seed + 2001, device=device, compile=True
    )
    _sync(device)
    seconds = time.perf_counter() - t0
    run = _row(arch, "engine+compile", batch, seconds, flops, tflops, settings.steps, _peak(device))
    run["mean_target_probability"] = sum(p.probability for p in protos) / len(protos)
    run["first_call_seconds"] = first
    log(
        f"{arch} engine+compile batch {batch}: first call {first:.1f} s, then {seconds:.2f} s, "
        f"{run['prototypes_per_second']:.2f} prototypes/s"
    )
    return run


def _auto(
    arch: str,
    classifier: Classifier,
    runs: list[dict[str, Any]],
    settings: GpuSettings,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """``max_batch=0``: the engine's memory probe against the sweep's measured peaks, then a
    short run of twice the largest swept batch, chunked by the probe."""
    device = torch.device(settings.device)
    config = GenerationConfig(
        steps=settings.auto_steps,
        max_batch=0,
        autocast=settings.autocast,
        channels_last=settings.channels_last,
    )
    budget = _budget_bytes(device, settings.memory_budget_gib)
    fraction = 0.85
    if device.type == "cuda" and budget is not None:
        fraction = min(1.0, budget / torch.cuda.get_device_properties(device).total_memory)
    images = 2 * max(r["batch"] for r in runs)
    kw = {"device": device, "compile": settings.compile, "memory_budget": fraction}
    base = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    plan = auto_batch_size(classifier, config, images=images, **kw)
    out: dict[str, Any] = {
        "images": images,
        "memory_budget_fraction": fraction,
        "size": plan.size,
        "headroom_bytes": plan.headroom_bytes,
        "fit": None,
        "peaks": [],
    }
    if plan.fit is not None:
        out["fit"] = {"fixed_bytes": plan.fit.fixed_bytes, "per_image": plan.fit.per_image_bytes}
        for r in runs:
            if r["peak_bytes"] is not None:
                predicted = base + plan.fit.peak(r["batch"])
                out["peaks"].append(
                    {
                        "batch": r["batch"],
                        "measured_bytes": r["peak_bytes"],
                        "predicted_bytes": predicted,
                        "measured_over_predicted": r["peak_bytes"] / predicted,
                    }
                )
    classes = [i % classifier.num_classes for i in range(images)]
    _reset_peak(device)
    _sync(device)
    t0 = time.perf_counter()
    protos = generate(classifier, classes, config, seed=settings.seed + 3000, **kw)
    _sync(device)
    out["run"] = {
        "seconds": time.perf_counter() - t0,
        "steps": settings.auto_steps,
        "prototypes": len(protos),
        "peak_bytes": _peak(device),
        "budget_bytes": budget,
        "within_budget": None
        if budget is None or _peak(device) is None
        else _peak(device) <= budget,
    }
    log(
        f"{arch} auto batch: {images} images -> chunks of {plan.size} "
        f"(fit {_gib(out['fit'])}); run {out['run']['seconds']:.1f} s, "
        f"peak {_gib_bytes(out['run']['peak_bytes'])} of budget {_gib_bytes(budget)}"
    )
    return out


def _gib_bytes(value: float | None) -> str:
    return "n/a" if value is None else f"{value / 2**30:.2f} GiB"


def _gib(fit: dict[str, float] | None) -> str:
    if fit is None:
        return "none: no probe off CUDA"
    return f"{_gib_bytes(fit['fixed_bytes'])} + {fit['per_image'] / MIB:.0f} MiB/image"


def _stop_before(
    arch: str,
    batch: int,
    last: dict[str, Any],
    budget: float | None,
    max_seconds: float,
    log: Callable[[str], None],
) -> bool:
    """Whether batch ``batch`` would pass the memory budget or the time per run."""
    grow = batch / last["batch"]
    if budget is not None and last["peak_bytes"] is not None:
        need = last["peak_bytes"] * grow
        if need > budget:
            log(f"{arch}: stop before batch {batch}: ~{need / 2**30:.1f} GiB > budget")
            return True
    if last["seconds"] * grow > max_seconds:
        log(f"{arch}: stop before batch {batch}: ~{last['seconds'] * grow:.0f} s > {max_seconds} s")
        return True
    return False


def _lucent(
    arch: str,
    user_model: torch.nn.Module,
    spec: InputSpec,
    tflops: float,
    settings: GpuSettings,
    log: Callable[[str], None],
) -> dict[str, Any]:
    import lucent_render

    device = torch.device(settings.device)
    flops = flops_per_image_step(
        user_model, spec, device, autocast=False, weight_grads=True, size=spec.height + 24
    )
    layer = lucent_render.final_linear_layer(user_model)
    render = lambda c, seed: lucent_render.render_class(  # noqa: E731
        user_model,
        c,
        size=settings.size,
        steps=settings.steps,
        mean=spec.mean,
        std=spec.std,
        seed=seed,
        layer=layer,
    )
    render(0, settings.seed)  # warm-up (cuDNN algorithm choice, kornia's scripted kernels)
    _reset_peak(device)
    _sync(device)
    t0 = time.perf_counter()
    images = [render(c + 1, settings.seed + c) for c in range(settings.lucent_classes)]
    _sync(device)
    seconds = (time.perf_counter() - t0) / settings.lucent_classes
    run = _row(arch, "lucent", 1, seconds, flops, tflops, settings.steps, _peak(device))
    run["mean_target_probability"] = _mean_probability(user_model, spec, images, device)
    log(f"{arch} lucent: {seconds:.2f} s per prototype")
    return run


@torch.no_grad()
def _mean_probability(
    module: torch.nn.Module, spec: InputSpec, images: Sequence[torch.Tensor], device: torch.device
) -> float:
    x = torch.stack(list(images)).to(device)
    probs = F.softmax(module(spec.normalise(x)).float(), dim=1)
    return float(sum(probs[k, k + 1] for k in range(len(images))) / len(images))


def _row(
    arch: str,
    method: str,
    batch: int,
    seconds: float,
    flops: float,
    tflops: float,
    steps: int,
    peak: int | None,
) -> dict[str, Any]:
    achieved = flops * steps * batch / seconds / 1e12
    return {
        "model": arch,
        "method": method,
        "batch": batch,
        "seconds": seconds,
        "prototypes_per_second": batch / seconds,
        "gflop_per_image_step": flops / 1e9,
        "achieved_tflops": achieved,
        "percent_of_matmul_rate": 100 * achieved / tflops,
        "peak_bytes": peak,
        "peak_mib_per_prototype": peak / MIB / batch if peak is not None else None,
    }


def _summary(
    runs: list[dict[str, Any]],
    lucent: dict[str, Any] | None,
    flops: float,
    tflops: float,
    settings: GpuSettings,
) -> dict[str, Any]:
    best = max(runs, key=lambda r: r["prototypes_per_second"])
    seconds_1000 = 1000 / best["prototypes_per_second"]
    floor = 1000 * settings.steps * flops / (tflops * 1e12)
    lucent_pps = lucent["prototypes_per_second"] if lucent else None
    return {
        "best_batch": best["batch"],
        "best_prototypes_per_second": best["prototypes_per_second"],
        "lucent_prototypes_per_second": lucent_pps,
        "speedup_vs_lucent": best["prototypes_per_second"] / lucent_pps if lucent_pps else None,
        "seconds_for_1000": seconds_1000,
        "gflop_per_image_step": flops / 1e9,
        "floor_seconds_for_1000": floor,
        "fraction_of_floor": floor / seconds_1000,
    }


def _device_info(device: torch.device, tflops: float, dtype: str, n: int) -> dict[str, Any]:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        name, memory = props.name, props.total_memory / 2**30
    else:
        name, memory = f"{device.type} (smoke run, not a GPU)", None
    return {
        "name": name,
        "memory_gib": memory,
        "torch": torch.__version__,
        "matmul_tflops": tflops,
        "matmul_dtype": dtype,
        "matmul_n": n,
    }


def _budget_bytes(device: torch.device, gib: float | None) -> float | None:
    if gib is not None:
        return gib * 2**30
    if device.type == "cuda":
        return 0.85 * torch.cuda.get_device_properties(device).total_memory
    return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device: torch.device) -> int | None:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def _empty_cache(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
