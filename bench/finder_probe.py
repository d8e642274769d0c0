#!/usr/bin/env python3
"""What the learning-rate finder sees, and what the defaults then do, on one model.

For a model file (or a built-in name): the finder's probe losses and scores (the mean
fraction of each probe class's best gain) per grid rate with ``--probe-classes`` probe
classes (0: the shipped finder's count) and the rate each count would choose
(``engine.probe_lr``); then, with ``--generate``, every class's default
prototype: target probability, steps and why it stopped. CPU, one thread (``--threads``).

    python bench/finder_probe.py MODEL.pt2 [--probe-classes 0 1 10] [--generate]
    python bench/finder_probe.py efficientnet_lite0 --probe-classes 1 4
    python bench/finder_probe.py efficientnet_lite0 --threads 2
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from protolens_server.engine import GenerationConfig, generate, probe_lr
from protolens_server.models import load_model
from protolens_server.models.registry import load_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a model file/folder, or a built-in model's name")
    parser.add_argument("--probe-classes", type=int, nargs="+", default=[0])
    parser.add_argument("--generate", action="store_true", help="also run the defaults")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1); a probe's losses move with the summation order, "
        "and a process keeps the count its first forward ran with: one run per count",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    path = Path(args.model)
    handle = load_path(path) if path.exists() else load_model(args.model)
    config = GenerationConfig()
    for n in args.probe_classes:
        started = time.perf_counter()
        probe = probe_lr(handle, config, classes=n)
        print(
            f"{args.threads} thread(s), probe classes {list(probe.classes)}: losses "
            f"{[round(v, 2) for v in probe.losses]}, scores "
            f"{[round(v, 2) for v in probe.scores]} over rates {list(probe.rates)} -> "
            f"lr {probe.chosen} ({time.perf_counter() - started:.0f} s); at tolerance "
            + ", ".join(f"{t}: {probe.chosen_at(t)}" for t in (0.1, 0.2, 0.3, 0.4, 0.5))
        )
    if args.generate:
        classes = list(range(handle.num_classes))
        started = time.perf_counter()
        protos = generate(handle, classes, config, seed=0)
        print(f"defaults ({time.perf_counter() - started:.0f} s), lr {protos[0].lr:.3g}:")
        for p in protos:
            print(
                f"  class {p.target.classes[0]}: p {p.probability:.2f}, {p.steps} steps, "
                f"{p.stop_reason}"
            )


if __name__ == "__main__":
    main()
