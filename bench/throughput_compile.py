"""Eager against ``torch.compile``: seconds per optimisation step of ``generate``, same model,
batch, config and seed, plus what the first (compiling) call costs.

Per path, one untimed warm-up call (for ``compile``: the call that compiles; its wall time
is reported as the compile cost), then ``--repeats`` timed calls alternating the two paths.
A step's time is taken between the first and the last progress event of a call (events
every 2 steps), so setup, the eager first step and the final evaluation are excluded. CPU
time is this process's (robust to other load on a shared machine); on CUDA wall time is
the number that matters. Also checks that both paths end at the same images (max pixel
difference) and target probabilities, next to the difference between the eager path in
one chunk and in chunks of one image (how far float rounding alone moves a prototype).

    python bench/throughput_compile.py --model efficientnet_lite0 --batch 4 --steps 16
    python bench/throughput_compile.py --device cuda --model torchvision:resnet50 --batch 64
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from protolens_server.engine import GenerationConfig, InputSpec, ProgressEvent, generate

sys.path.insert(0, str(Path(__file__).resolve().parent))


def load(ref: str, size: int | None) -> Any:
    """``tiny`` (bench_scores), ``torchvision:<arch>`` (random weights) or a load_model ref."""
    if ref == "tiny":
        import bench_scores

        return bench_scores.tiny_handle()
    if ref.startswith("torchvision:"):
        import torchvision
        from protolens_server.engine import Classifier

        torch.manual_seed(0)
        arch = ref.split(":", 1)[1]
        module = getattr(torchvision.models, arch)(weights=None).eval().requires_grad_(False)
        return Classifier(module, InputSpec(height=size or 224, width=size or 224), 1000)
    from protolens_server.models import load_model

    return load_model(ref)


def _commit() -> str:
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
    )
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no", "server/protolens_server/engine"],
        cwd=root,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return (out.stdout.strip() or "unknown") + ("+dirty" if dirty else "")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_call(
    model: Any,
    config: GenerationConfig,
    batch: int,
    device: torch.device,
    compile: bool,
) -> dict[str, Any]:
    """One generate call: total wall/CPU seconds, seconds per step between progress events."""
    stamps: list[tuple[int, float, float]] = []

    def record(e: ProgressEvent) -> None:
        stamps.append((e.step, time.perf_counter(), time.process_time()))

    classes = [c % model.num_classes for c in range(batch)]
    _sync(device)
    w0, c0 = time.perf_counter(), time.process_time()
    protos = generate(
        model, classes, config, seed=0, device=device, on_progress=record, compile=compile
    )
    _sync(device)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    (s0, sw0, sc0), (s1, sw1, sc1) = stamps[0], stamps[-1]
    return {
        "wall": wall,
        "cpu": cpu,
        "step_wall": (sw1 - sw0) / (s1 - s0),
        "step_cpu": (sc1 - sc0) / (s1 - s0),
        "images": torch.stack([p.image for p in protos]),
        "probabilities": [p.probability for p in protos],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=4, help="images per call (one chunk)")
    p.add_argument("--steps", type=int, default=16, help="steps per timed call")
    p.add_argument("--size", type=int, help="image size for torchvision models (224)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-autocast", action="store_true")
    p.add_argument("--json-out", type=Path)
    p.add_argument("--md-out", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = load(args.model, args.size)
    # the defaults, but a noise start (the baseline is eager either way) and one chunk
    config = GenerationConfig(
        steps=args.steps,
        start="noise",
        progress_every=2,
        max_batch=args.batch,
        autocast=not args.no_autocast,
    )
    warm = {}
    for name, compile in (("eager", False), ("compile", True)):
        call = timed_call(model, config.replace(steps=4), args.batch, device, compile)
        warm[name] = call["wall"]
        print(f"warm-up {name}: {call['wall']:.1f} s wall", file=sys.stderr, flush=True)
    runs: dict[str, list[dict[str, Any]]] = {"eager": [], "compile": []}
    for rep in range(args.repeats):
        order = ["eager", "compile"] if rep % 2 == 0 else ["compile", "eager"]
        for name in order:
            call = timed_call(model, config, args.batch, device, name == "compile")
            runs[name].append(call)
            print(
                f"rep {rep + 1} {name}: {call['step_wall']:.4f} s/step wall, "
                f"{call['step_cpu']:.4f} CPU",
                file=sys.stderr,
                flush=True,
            )
    med = {
        name: {k: statistics.median(c[k] for c in calls) for k in ("step_wall", "step_cpu")}
        for name, calls in runs.items()
    }
    pixel_diff = float((runs["eager"][0]["images"] - runs["compile"][0]["images"]).abs().max())
    p_diff = max(
        abs(a - b)
        for a, b in zip(
            runs["eager"][0]["probabilities"], runs["compile"][0]["probabilities"], strict=True
        )
    )
    singles = timed_call(model, config.replace(max_batch=1), args.batch, device, False)
    chunk_diff = float((runs["eager"][0]["images"] - singles["images"]).abs().max())
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine()
    head = (
        f"eager vs torch.compile: {args.model}, batch {args.batch}, {args.steps} steps, "
        f"device {args.device} ({name}), {args.threads} torch threads, torch {torch.__version__}, "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; medians of "
        f"{args.repeats} alternating repeats; commit {_commit()}"
    )
    lines = [
        head,
        "",
        "| path | first call s (wall) | s/step (wall) | CPU s/step | speed-up (wall) "
        "| speed-up (CPU) |",
        "|---|---|---|---|---|---|",
    ]
    for path in ("eager", "compile"):
        speed = med["eager"]["step_wall"] / med[path]["step_wall"]
        speed_cpu = med["eager"]["step_cpu"] / med[path]["step_cpu"]
        lines.append(
            f"| {path} | {warm[path]:.1f} | {med[path]['step_wall']:.4f} | "
            f"{med[path]['step_cpu']:.4f} | {speed:.2f}x | {speed_cpu:.2f}x |"
        )
    lines.append("")
    lines.append(
        f"same result: max pixel difference {pixel_diff:.2e}, max |Δ target p| {p_diff:.2e}; "
        f"for scale, eager in one chunk vs chunks of 1: max pixel difference {chunk_diff:.2e}"
    )
    text = "\n".join(lines)
    print(text)
    result = {
        "model": args.model,
        "device": args.device,
        "device_name": name,
        "batch": args.batch,
        "steps": args.steps,
        "threads": args.threads,
        "torch": torch.__version__,
        "commit": _commit(),
        "loadavg_end": os.getloadavg()[0],
        "first_call_seconds": warm,
        "median_seconds_per_step": med,
        "runs": {
            k: [{x: c[x] for x in ("wall", "cpu", "step_wall", "step_cpu")} for c in v]
            for k, v in runs.items()
        },
        "max_pixel_difference": pixel_diff,
        "max_probability_difference": p_diff,
        "eager_chunk_vs_single_max_pixel_difference": chunk_diff,
        "speedup_wall": med["eager"]["step_wall"] / med["compile"]["step_wall"],
        "speedup_cpu": med["eager"]["step_cpu"] / med["compile"]["step_cpu"],
    }
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")
    if args.md_out:
        args.md_out.parent.mkdir(parents=True, exist_ok=True)
        args.md_out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
