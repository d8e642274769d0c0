"""How the CPU chunk size changes the cost of a step, and what the engine's CPU cap saves.

On the CPU the engine holds a chunk to ``cpu_chunk_cap`` (engine/_memory.py: four 224-px
RGB images' worth of input values per torch thread). This script measures, in one run,
alternating so machine load hits every setting alike:

1. CPU seconds per image-step of ``generate`` (fixed rate and steps, noise start) at
   explicit chunk sizes, for a 32-px CNN with BatchNorm, a 384-px CNN without, and
   EfficientNet-Lite0 at 224 px (``--skip-lite0`` leaves it out);
2. the learning-rate finder (a one-step ``generate`` with ``lr = 0``, an empty rate
   memo) with the cap (the engine's default) and without it in chunks of
   ``--finder-chunks`` (``cpu_chunk_values=0``): wall seconds and the rate each picks.

    python bench/cpu_chunks.py --threads 1 --json bench/results/cpu_chunks.json
    python bench/cpu_chunks.py --only lite0 --skip-steps --finder-chunks 32 8 4 3 2

Times mean something only as ratios within one run on one machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from typing import Any

import torch
from protolens_server.engine import (
    Classifier,
    GenerationConfig,
    InputSpec,
    cpu_chunk_cap,
    generate,
)
from torch import nn

SIZES = (1, 2, 4, 8, 16, 32)


def _cnn(size: int, batchnorm: bool) -> Classifier:
    """A small random CNN whose convolutions cost about the same at any input size (the
    first one strides by size/32), so what grows with the input is the engine's own
    image-sized work."""
    torch.manual_seed(0)
    stride = max(1, size // 32)
    norm: list[nn.Module] = [nn.BatchNorm2d(16)] if batchnorm else []
    net = nn.Sequential(
        nn.Conv2d(3, 16, 5, stride, 2), *norm, nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    )  # fmt: skip
    return Classifier(net.eval().requires_grad_(False), InputSpec(3, size, size), 10)


def _lite0() -> Any:
    from protolens_server.models import load_model

    return load_model("efficientnet_lite0")


def step_cost(model: Any, images: int, chunk: int, steps: int) -> float:
    """CPU seconds per image-step of ``images`` prototypes in chunks of ``chunk``."""
    config = GenerationConfig(steps=steps, lr=0.07, start="noise", max_batch=chunk)
    targets = [k % model.num_classes for k in range(images)]
    began = time.process_time()
    generate(model, targets, config, cpu_chunk_values=0)
    return (time.process_time() - began) / (images * steps)


def finder(model: Any, chunk: int | None) -> tuple[float, float]:
    """(wall seconds, rate) of the learning-rate finder in chunks of ``chunk`` (the cap
    lifted), or as the engine chunks it (``None``: ``max_batch`` 32, capped)."""
    config = GenerationConfig(steps=1, max_batch=chunk or 32)  # lr 0: the finder runs first
    began = time.perf_counter()
    kwargs = {} if chunk is None else {"cpu_chunk_values": 0}
    (proto,) = generate(model, [0], config, lr_cache={}, **kwargs)
    return time.perf_counter() - began, proto.lr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--finder-repeats", type=int, default=1)
    ap.add_argument(
        "--finder-chunks",
        type=int,
        nargs="*",
        default=[32],
        help="uncapped chunk sizes to run the finder at, beside the capped run",
    )
    ap.add_argument("--skip-steps", action="store_true", help="only the finder rows")
    ap.add_argument("--only", help="only the cases whose name contains this")
    ap.add_argument("--skip-lite0", action="store_true")
    ap.add_argument("--json", help="write the numbers here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    # name, a model maker (a fresh model for each finder run: the rate is memoised per
    # model object), images, steps
    cases: list[tuple[str, Callable[[], Any], int, int]] = [
        ("cnn-bn 32 px", lambda: _cnn(32, True), 32, 12),
        ("cnn 384 px", lambda: _cnn(384, False), 16, 12),
    ]
    if not args.skip_lite0:
        cases.append(("efficientnet_lite0 224 px", _lite0, 16, 3))
    cases = [c for c in cases if args.only is None or args.only in c[0]]
    out: dict[str, Any] = {"threads": args.threads, "machine": platform.processor(), "cases": {}}
    if not args.skip_steps:
        print("| model | " + " | ".join(f"chunk {s}" for s in SIZES) + " | cap picks |")
        print("|---|" + "---|" * (len(SIZES) + 1))
    for name, make, images, steps in [] if args.skip_steps else cases:
        model = make()
        sizes = [s for s in SIZES if s <= images]
        runs: dict[int, list[float]] = {s: [] for s in sizes}
        for _ in range(args.repeats):
            for s in sizes:
                runs[s].append(step_cost(model, images, s, steps))
        best = {s: min(v) for s, v in runs.items()}
        spec = model.input_spec
        cap = cpu_chunk_cap(spec.channels * spec.height * spec.width, args.threads)
        cells = [f"{1000 * best[s]:.2f} ms" if s in best else "-" for s in SIZES]
        print(f"| {name} | " + " | ".join(cells) + f" | {min(cap, 32)} |", flush=True)
        out["cases"][name] = {"ms_per_image_step": {s: 1000 * best[s] for s in sizes}, "cap": cap}
    chunks = args.finder_chunks
    print("\n| model | " + " | ".join(f"finder, chunks of {c}" for c in chunks) + " | capped |")
    print("|---|" + "---|" * (len(chunks) + 1))
    for name, make, _, _ in cases:
        out["cases"].setdefault(name, {})
        runs: dict[str, list[tuple[float, float]]] = {str(c): [] for c in [*chunks, "capped"]}
        for _ in range(args.finder_repeats):
            for c in chunks:
                runs[str(c)].append(finder(make(), c))
            runs["capped"].append(finder(make(), None))
        cells = [f"{min(t for t, _ in v):.1f} s, lr {v[0][1]:g}" for v in runs.values()]
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
        out["cases"][name]["finder"] = {
            k: {"wall_s": min(t for t, _ in v), "rates": [r for _, r in v]} for k, v in runs.items()
        }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
