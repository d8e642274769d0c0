"""Throughput benchmark: the protolens engine against Lucent. Prints a markdown table.

CPU (default): engine (classes in one batch) vs Lucent (one class per call) on the same
model, size, steps and threads, alternating, with path similarity of both methods'
prototypes from the product's scoring code::

    .venv-bench/bin/python bench/throughput.py                 # ~5-10 min on 2 cores
    .venv-bench/bin/python bench/throughput.py --quick         # ~1-2 min
    .venv-bench/bin/python bench/throughput.py --json-out out/throughput_cpu.json

GPU: prototypes/s vs batch for torchvision ResNet-18/50, Lucent one class at a time,
achieved FLOP/s against the card's measured bf16 matmul rate, peak memory per prototype::

    python bench/throughput.py --device cuda --json-out out/throughput_gpu.json
    python bench/throughput.py --mode gpu --device cpu --quick   # smoke run of that code

In an environment without torch-lucent (the product venv) the Lucent column is skipped
with a message saying so. ``bench/setup_bench_env.sh`` creates the environment with it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import throughput_report as report
import torch
from lucent_render import lucent_unavailable_reason

DEFAULT_BATCHES = (1, 8, 32, 64, 128, 256, 512, 1024, 2048)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--mode", choices=("cpu", "gpu"), help="default: gpu if --device cuda")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--quick", action="store_true", help="fewer steps/classes/batches")
    p.add_argument("--steps", type=int, help="optimisation steps (cpu 128, gpu 512)")
    p.add_argument("--size", type=int, help="image size (224; the tiny model: 32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json-out", type=Path, help="write the full result as JSON here")
    p.add_argument("--md-out", type=Path, help="write the markdown table here")
    p.add_argument("--no-lucent", action="store_true", help="engine only")
    cpu = p.add_argument_group("cpu mode")
    cpu.add_argument("--model", default="efficientnet_lite0", help="load_model ref, or 'tiny'")
    cpu.add_argument("--classes", help="comma-separated class indices (default: the 4 scored)")
    cpu.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for both methods (1: on a shared 2-core box a 2nd thread mostly spins)",
    )
    cpu.add_argument("--reps", type=int, help="repetitions, order alternating (default 2)")
    cpu.add_argument("--engine-batch", type=int, help="engine max_batch (default: all classes)")
    cpu.add_argument("--no-scores", action="store_true", help="skip path similarity")
    cpu.add_argument(
        "--engine-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a GenerationConfig field for the engine (repeatable), e.g. bn_prior=0.01",
    )
    cpu.add_argument(
        "--lucent-frozen",
        action="store_true",
        help="also time Lucent with the model's parameters frozen (a breakdown, not a user run)",
    )
    gpu = p.add_argument_group("gpu mode")
    gpu.add_argument("--archs", default="resnet18,resnet50", help="torchvision architectures")
    gpu.add_argument("--batches", help="comma-separated batch sizes (default 1,8,32,...)")
    gpu.add_argument("--memory-budget-gib", type=float, help="default: 85%% of the card")
    gpu.add_argument("--no-autocast", action="store_true", help="engine in fp32")
    gpu.add_argument("--no-channels-last", action="store_true")
    gpu.add_argument(
        "--compile", action="store_true", help="every engine run with generate(compile=True)"
    )
    gpu.add_argument(
        "--compare-compile",
        action="store_true",
        help="also rerun the best batch with generate(compile=True)",
    )
    gpu.add_argument(
        "--no-auto", action="store_true", help="skip the max_batch=0 memory-probe check"
    )
    gpu.add_argument("--lucent-classes", type=int, help="Lucent renders to time (default 2)")
    gpu.add_argument(
        "--max-run-seconds", type=float, default=45.0, help="skip batches whose run is longer"
    )
    args = p.parse_args(argv)
    if args.mode is None:
        args.mode = "gpu" if args.device.startswith("cuda") else "cpu"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    skip = None if not args.no_lucent else "Lucent column skipped: --no-lucent given."
    skip = skip or lucent_unavailable_reason()
    if skip:
        print(skip, file=sys.stderr)
    if args.mode == "gpu":
        result, markdown = _gpu(args, skip)
    else:
        result, markdown = _cpu(args, skip)
    result["git_commit"] = _git_commit()
    markdown += f"\n- measured at commit {result['git_commit']}"
    print()
    print(markdown)
    if args.json_out:
        report.write_json(args.json_out, result)
        print(f"\nwrote {args.json_out}", file=sys.stderr)
    if args.md_out:
        args.md_out.parent.mkdir(parents=True, exist_ok=True)
        args.md_out.write_text(markdown + "\n")
    return 0


_MEASURED_PATHS = (
    "server/protolens_server/engine",
    "server/protolens_server/models",
    "server/protolens_server/scoring.py",
    "server/protolens_server/references.py",
    "bench",
)


def _git_commit() -> str:
    """The checkout's commit (``+dirty`` with local changes), or ``unknown`` outside git."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", *_MEASURED_PATHS],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return (head or "unknown") + ("+dirty" if dirty else "")


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _cpu(args: argparse.Namespace, skip: str | None) -> tuple[dict[str, Any], str]:
    import bench_scores
    from throughput_cpu import CpuSettings, run_cpu

    tiny = args.model == "tiny"
    handle = bench_scores.tiny_handle(args.seed) if tiny else _load(args.model)
    if args.classes:
        classes = tuple(int(c) for c in args.classes.split(","))
    elif tiny:
        classes = (0, 1, 2)
    else:
        classes = bench_scores.default_classes(3 if args.quick else 4)
    settings = CpuSettings(
        model=args.model,
        classes=classes,
        steps=args.steps or (32 if args.quick else 128),
        size=handle.input_spec.height,
        threads=args.threads,
        reps=args.reps or (1 if args.quick else 2),
        seed=args.seed,
        engine_batch=args.engine_batch or len(classes),
        lucent_frozen=args.lucent_frozen,
        engine_options=_options(args.engine_option),
    )
    with tempfile.TemporaryDirectory() as work:
        score_fn = None
        if not args.no_scores and not tiny:
            score_fn = bench_scores.path_similarity_fn(handle, classes, Path(work))
        result = run_cpu(settings, handle, lucent_skip_reason=skip, score_fn=score_fn, log=_log)
    return result, report.cpu_markdown(result)


def _options(pairs: list[str]) -> tuple[tuple[str, Any], ...]:
    """``--engine-option`` values as typed GenerationConfig changes (``parse_changes``)."""
    from protolens_server.engine import GenerationConfig
    from protolens_server.errors import InvalidArgument

    try:
        return tuple(GenerationConfig.parse_changes(pairs).items())
    except InvalidArgument as e:
        raise SystemExit(f"--engine-option: {e}") from None


def _load(ref: str) -> Any:
    from protolens_server.models import load_model

    return load_model(ref)


def _gpu(args: argparse.Namespace, skip: str | None) -> tuple[dict[str, Any], str]:
    from throughput_gpu import GpuSettings, run_gpu

    on_cpu = not args.device.startswith("cuda")
    quick = args.quick or on_cpu
    if args.batches:
        batches = tuple(int(b) for b in args.batches.split(","))
    else:
        batches = (1, 2) if on_cpu else ((1, 8, 32, 128) if args.quick else DEFAULT_BATCHES)
    settings = GpuSettings(
        device=args.device,
        archs=tuple(a for a in args.archs.split(",") if a),
        size=args.size or (64 if on_cpu else 224),
        steps=args.steps or (4 if on_cpu else (128 if args.quick else 512)),
        batches=batches,
        memory_budget_gib=args.memory_budget_gib,
        autocast=not args.no_autocast,
        channels_last=not args.no_channels_last,
        compile=args.compile,
        compare_compile=args.compare_compile,
        auto_check=not args.no_auto,
        auto_steps=2 if on_cpu else 16,
        lucent_classes=args.lucent_classes or (1 if quick else 2),
        matmul_n=512 if on_cpu else 8192,
        seed=args.seed,
        max_run_seconds=args.max_run_seconds if not on_cpu else 1e9,
    )
    torch.manual_seed(args.seed)
    result = run_gpu(settings, lucent_skip_reason=skip, log=_log)
    return result, report.gpu_markdown(result)


if __name__ == "__main__":
    sys.exit(main())
