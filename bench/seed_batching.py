#!/usr/bin/env python3
"""What do per-job seeds cost? One engine call for N one-class targets, each with its
own seed (a worker's batch: one seed per job), against the same call with one shared
seed, on the tiny test model (CPU seconds, one torch thread, median of ``--reps``).

Each seed has its own equidistant baseline (engine/_baseline.py). Since engine 0.3.0's
batched baselines the N baselines are one batched run, so the two calls should cost
about the same; before, N seeds paid N batch-1 runs.

    python bench/seed_batching.py [--targets 32] [--steps 32] [--reps 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from protolens_server.api.testkit import TINY_MODEL, make_tiny_model_store
from protolens_server.engine import GenerationConfig, Target, generate
from protolens_server.models.catalog import ModelCatalog


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=32)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        handle = ModelCatalog(make_tiny_model_store(folder), builtins=False).load(TINY_MODEL)
        config = GenerationConfig(steps=args.steps, lr=0.05)
        targets = [Target((i % 5,)) for i in range(args.targets)]
        generate(handle, targets[:2], config, seed=0)  # warm up
        times: dict[str, list[float]] = {"one shared seed": [], "one seed per target": []}
        for rep in range(args.reps):
            base = 1000 * (rep + 1)  # fresh seeds each rep: no baseline is memoised yet
            for label, seeds in (
                ("one shared seed", [base] * args.targets),
                ("one seed per target", [base + i for i in range(args.targets)]),
            ):
                started = time.process_time()
                generate(handle, targets, config, seed=seeds)
                times[label].append(time.process_time() - started)
    shared = statistics.median(times["one shared seed"])
    per_target = statistics.median(times["one seed per target"])
    print(f"{args.targets} targets x {args.steps} steps, tiny model, CPU seconds (median):")
    print(f"  one shared seed      {shared:.3f}")
    print(f"  one seed per target  {per_target:.3f}  ({per_target / shared:.2f}x)")


if __name__ == "__main__":
    main()
