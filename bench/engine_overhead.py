"""Engine overhead and batching benchmark (CPU by default).

Measures, alternating in one run so machine load hits every method alike:

1. seconds per optimisation step of ``engine.generate`` (default config:
   Fourier parameterisation, colour decorrelation, medium transforms, HF
   penalty) against a bare forward+backward of the same network at the same batch
   (the gradient w.r.t. the input only, frozen weights, same memory layout, and
   BatchNorm folded as the engine folds it): the difference is the engine's
   overhead (parameterisation + transforms + objective + optimiser); and against
   the model as given (BatchNorm unfolded), which is what a user's own loop runs;
2. throughput of 8 targets in one ``generate`` call against 8 calls of one.

Prints a markdown table and writes JSON (``--json-out``).

    python bench/engine_overhead.py --json-out bench/engine_overhead.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from typing import Any

import torch
from protolens_server.engine import GenerationConfig, ProgressEvent, fold_batchnorm, generate
from protolens_server.models import load_model


def _clocks() -> tuple[float, float]:
    """Wall-clock and this process's CPU time: CPU time is what the step costs even when
    other processes share the cores."""
    return time.perf_counter(), time.process_time()


def engine_step_seconds(
    model: Any, targets: list[int], config: GenerationConfig
) -> tuple[float, float]:
    """(wall, CPU) seconds per step inside ``generate``: between the first and last
    progress event, so setup and the final evaluation are excluded."""
    stamps: list[tuple[int, float, float]] = []

    def record(e: ProgressEvent) -> None:
        stamps.append((e.step, *_clocks()))

    generate(model, targets, config, on_progress=record)
    (s0, w0, c0), (s1, w1, c1) = stamps[0], stamps[-1]
    return (w1 - w0) / (s1 - s0), (c1 - c0) / (s1 - s0)


def bare_step_seconds(
    model: Any, batch: int, steps: int, channels_last: bool, fold: bool = True
) -> tuple[float, float]:
    """(wall, CPU) seconds per forward+backward w.r.t. the input, nothing else.

    ``fold``: the network the engine runs, BatchNorm folded into the convolutions
    (``engine.fold_batchnorm``), so the difference to the engine is its own machinery; without
    it, the model as the user gave it."""
    spec = model.input_spec
    module = fold_batchnorm(model.module) if fold else model.module
    module.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    x = torch.rand(batch, *spec.shape, requires_grad=True)
    target = torch.arange(batch) % model.num_classes

    def step() -> None:
        inputs = spec.normalise(x)
        if channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        logits = module(inputs)
        torch.autograd.grad(logits.gather(1, target[:, None]).sum(), x)

    step()  # warm-up
    w0, c0 = _clocks()
    for _ in range(steps):
        step()
    w1, c1 = _clocks()
    return (w1 - w0) / steps, (c1 - c0) / steps


def prototypes_per_second(
    model: Any, targets: list[int], config: GenerationConfig, batched: bool
) -> tuple[float, float]:
    """(per wall-second, per CPU-second) for the whole calls, setup included."""
    w0, c0 = _clocks()
    if batched:
        generate(model, targets, config)
    else:
        for t in targets:
            generate(model, [t], config)
    w1, c1 = _clocks()
    return len(targets) / (w1 - w0), len(targets) / (c1 - c0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument(
        "--batch", type=int, default=5, help="images per step for the overhead test"
    )
    parser.add_argument("--steps", type=int, default=12, help="steps per timed run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batched-targets", type=int, default=8)
    parser.add_argument("--batched-steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json-out", default=None)
    parser.add_argument(
        "--engine-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a GenerationConfig field for every engine run (repeatable), "
        "e.g. bn_prior=0 to time the engine without its BatchNorm prior",
    )
    args = parser.parse_args()
    overrides = GenerationConfig.parse_changes(args.engine_option)
    torch.set_num_threads(args.threads)

    model = load_model(args.model)
    targets = list(range(args.batch))
    # The defaults, but a noise start (the equidistant baseline is a one-off, memoised cost)
    # and progress every 2 steps so the step clock has fine ticks.
    config = GenerationConfig(steps=args.steps + 2, start="noise", progress_every=2, **overrides)
    plain = config.replace(channels_last=False)
    runs: dict[str, list[tuple[float, float]]] = {
        k: [] for k in ("bare", "bare_cl", "bare_given_cl", "engine", "engine_plain")
    }
    throughput: dict[str, list[tuple[float, float]]] = {"batched": [], "sequential": []}
    # the model alone: seconds per image-step at batch 1 and at the batched size
    bare_image_steps: dict[str, list[tuple[float, float]]] = {"bare_batch1": [], "bare_batched": []}
    tput_targets = list(range(args.batched_targets))
    tput_config = GenerationConfig(
        steps=args.batched_steps, start="noise", max_batch=args.batched_targets, **overrides
    )
    engine_step_seconds(model, targets, config.replace(steps=4))  # warm-up
    for _ in range(args.repeats):
        runs["bare"].append(bare_step_seconds(model, args.batch, args.steps, channels_last=False))
        runs["engine_plain"].append(engine_step_seconds(model, targets, plain))
        runs["bare_cl"].append(bare_step_seconds(model, args.batch, args.steps, channels_last=True))
        runs["engine"].append(engine_step_seconds(model, targets, config))
        runs["bare_given_cl"].append(
            bare_step_seconds(model, args.batch, args.steps, channels_last=True, fold=False)
        )
        for key, size in (("bare_batch1", 1), ("bare_batched", args.batched_targets)):
            w, c = bare_step_seconds(model, size, args.batched_steps, channels_last=True)
            bare_image_steps[key].append((w / size, c / size))
        throughput["batched"].append(prototypes_per_second(model, tput_targets, tput_config, True))
        throughput["sequential"].append(
            prototypes_per_second(model, tput_targets, tput_config, False)
        )

    wall = {k: statistics.median(w for w, _ in v) for k, v in runs.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in runs.items()}
    tput_wall = {k: statistics.median(w for w, _ in v) for k, v in throughput.items()}
    tput_cpu = {k: statistics.median(c for _, c in v) for k, v in throughput.items()}
    bare_img = {k: statistics.median(c for _, c in v) for k, v in bare_image_steps.items()}

    def overhead(clock: int, engine: str, bare: str) -> float:
        """Median over repeats of the paired ratio (each engine run against the bare run
        next to it), minus one: robust to load that drifts during the run."""
        ratios = [e[clock] / b[clock] for e, b in zip(runs[engine], runs[bare], strict=True)]
        return statistics.median(ratios) - 1

    machine = f"{platform.machine()} {platform.processor() or ''}".strip()
    result = {
        "model": args.model,
        "engine_options": overrides,
        "batch": args.batch,
        "steps_per_run": args.steps,
        "repeats": args.repeats,
        "threads": args.threads,
        "torch": torch.__version__,
        "machine": machine,
        "cpu_count": os.cpu_count(),
        "wall_seconds_per_step": wall,
        "cpu_seconds_per_step": cpu,
        "all_runs_wall_cpu": runs,
        "overhead_cpu": overhead(1, "engine", "bare_cl"),
        "overhead_wall": overhead(0, "engine", "bare_cl"),
        "overhead_cpu_vs_model_as_given": overhead(1, "engine", "bare_given_cl"),
        "overhead_cpu_contiguous": overhead(1, "engine_plain", "bare"),
        "overhead_wall_contiguous": overhead(0, "engine_plain", "bare"),
        "prototypes_per_wall_second": tput_wall,
        "prototypes_per_cpu_second": tput_cpu,
        "all_throughput_wall_cpu": throughput,
        "batched_speedup_cpu": tput_cpu["batched"] / tput_cpu["sequential"],
        "batched_speedup_wall": tput_wall["batched"] / tput_wall["sequential"],
        "bare_cpu_seconds_per_image_step": bare_img,
        "bare_batched_speedup_cpu": bare_img["bare_batch1"] / bare_img["bare_batched"],
        "batched_targets": args.batched_targets,
        "batched_steps": args.batched_steps,
    }
    print(f"## Engine overhead: {args.model}, batch {args.batch}, {args.threads} threads\n")
    print("| path | layout | wall s/step | CPU s/step | overhead (wall) | overhead (CPU) |")
    print("|---|---|---|---|---|---|")
    rows = [
        ("bare forward+backward", "contiguous", "bare", None),
        ("engine.generate (defaults)", "contiguous", "engine_plain", "bare"),
        ("bare forward+backward", "channels_last", "bare_cl", None),
        ("engine.generate (defaults)", "channels_last", "engine", "bare_cl"),
        (
            "bare forward+backward, model as given (BatchNorm unfolded)",
            "channels_last",
            "bare_given_cl",
            None,
        ),
        (
            "engine.generate (defaults) vs the model as given",
            "channels_last",
            "engine",
            "bare_given_cl",
        ),
    ]
    for name, layout, key, ref in rows:
        ow = f"{overhead(0, key, ref):+.1%}" if ref else ""
        oc = f"{overhead(1, key, ref):+.1%}" if ref else ""
        print(f"| {name} | {layout} | {wall[key]:.4f} | {cpu[key]:.4f} | {ow} | {oc} |")
    print(
        f"\n| {args.batched_targets} targets x {args.batched_steps} steps "
        "| prototypes/s (wall) | prototypes per CPU-s |"
    )
    print("|---|---|---|")
    print(f"| one call, batched | {tput_wall['batched']:.3f} | {tput_cpu['batched']:.3f} |")
    print(f"| one call per target | {tput_wall['sequential']:.3f} | {tput_cpu['sequential']:.3f} |")
    print(
        f"| batched speed-up | {result['batched_speedup_wall']:.2f}x | "
        f"{result['batched_speedup_cpu']:.2f}x |"
    )
    print(
        f"| bare model alone, batch {args.batched_targets} vs batch 1 (per image) | | "
        f"{result['bare_batched_speedup_cpu']:.2f}x |"
    )
    print(
        f"\ntimes: medians of {args.repeats} alternating repeats; overheads: median paired "
        f"ratio; torch {torch.__version__}; {machine}"
    )
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
