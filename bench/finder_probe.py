#!/usr/bin/env python3
"""What the learning-rate finder sees, and what the defaults then do, on one model.

For a model file (or a built-in name): the finder's probe losses and scores (the mean
fraction of each probe class's best gain) per grid rate with ``--probe-classes`` probe
classes (0: the shipped finder's count) and the rate each count would choose
(``engine.probe_lr``); ``--probe-seeds`` runs the probes once per listed seed set (each
a comma-separated list: ``0 1`` is two runs on one seed each, ``0,1`` one run on both);
``--rates`` runs the probes on other grids (``--repeat`` alternates them in one process:
a cost comparison on a shared machine); ``--per-class`` prints each probe's end loss;
``--json-out`` keeps every probe's step-by-step losses (for ``bench/finder_rules.py``).
Then, with ``--generate``, every class's default prototype: target probability, steps
and why it stopped. CPU, one thread (``--threads``). Each probe run's wall and CPU
seconds and the load are printed and kept.

    python bench/finder_probe.py MODEL.pt2 [--probe-classes 0 1 10] [--generate]
    python bench/finder_probe.py efficientnet_lite0 --probe-classes 1 4
    python bench/finder_probe.py efficientnet_lite0 --set transform_copies=4
    python bench/finder_probe.py efficientnet_lite0 --threads 2 --probe-seeds 0 1 \\
        --json-out bench/results/finder_robustness/efficientnet_lite0_t2.json
    python bench/finder_probe.py efficientnet_lite0 --repeat 3 \\
        --rates 0.025,0.05,0.1,0.2,0.4,0.8 0.025,0.05,0.1,0.2,0.4
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch
from protolens_server import ENGINE_VERSION
from protolens_server.engine import GenerationConfig, generate, probe_lr
from protolens_server.models import load_model
from protolens_server.models.registry import load_path


def seed_sets(text: list[str]) -> list[tuple[int, ...]]:
    """``["0", "1", "0,1"]`` -> ``[(0,), (1,), (0, 1)]``; ``[]`` -> the finder's own."""
    return [tuple(int(s) for s in t.split(",")) for t in text] or [()]


def rate_sets(text: list[str]) -> list[tuple[float, ...]]:
    """``["0.025,0.05", "0.1"]`` -> ``[(0.025, 0.05), (0.1,)]``; ``[]`` -> the finder's grid."""
    return [tuple(float(r) for r in t.split(",")) for t in text] or [()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a model file/folder, or a built-in model's name")
    parser.add_argument("--probe-classes", type=int, nargs="+", default=[0])
    parser.add_argument(
        "--probe-seeds",
        nargs="+",
        default=[],
        metavar="SEEDS",
        help="one probe run per item, each a comma-separated seed list (default: the "
        "finder's own seeds)",
    )
    parser.add_argument(
        "--rates",
        nargs="+",
        default=[],
        metavar="RATES",
        help="one probe run per item, each a comma-separated grid (default: the finder's "
        "grid); with --repeat, the grids alternate in one process (a cost comparison)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="run every probe set this often")
    parser.add_argument("--per-class", action="store_true", help="print each probe's end loss")
    parser.add_argument("--json-out", type=Path, help="write every run's probes here")
    parser.add_argument("--generate", action="store_true", help="also run the defaults")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="a generation option the probes run with, repeatable (e.g. transform_copies=4)",
    )
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
    config = GenerationConfig().replace(**GenerationConfig.parse_changes(args.set))
    runs: list[dict[str, Any]] = []
    sets = [
        (n, seeds, rates)
        for _ in range(args.repeat)
        for n in args.probe_classes
        for seeds in seed_sets(args.probe_seeds)
        for rates in rate_sets(args.rates)
    ]
    for n, seeds, rates in sets:
        started, cpu_started = time.perf_counter(), time.process_time()
        probe = probe_lr(handle, config, classes=n, seeds=seeds, rates=rates)
        seconds = time.perf_counter() - started
        cpu_seconds = time.process_time() - cpu_started
        load = os.getloadavg()[0]
        print(
            f"{args.threads} thread(s), probe classes {list(probe.classes)}, seeds "
            f"{list(probe.seeds)}: losses {[round(v, 2) for v in probe.losses]}, scores "
            f"{[round(v, 2) for v in probe.scores]} over rates {list(probe.rates)} -> "
            f"lr {probe.chosen} ({seconds:.0f} s, {cpu_seconds:.0f} CPU-s, load "
            f"{load:.1f}); at tolerance "
            + ", ".join(f"{t}: {probe.chosen_at(t)}" for t in (0.1, 0.2, 0.3, 0.4, 0.5)),
            flush=True,
        )
        if args.per_class:
            for rate, ends in zip(probe.rates, probe.ends, strict=True):
                print(f"  {rate:<6} end losses {[round(v, 3) for v in ends]}")
        runs.append(
            {
                "threads": args.threads,
                "classes": list(probe.classes),
                "seeds": list(probe.seeds),
                "rates": list(probe.rates),
                "scores": list(probe.scores),
                "chosen": probe.chosen,
                "seconds": round(seconds, 1),
                "cpu_seconds": round(cpu_seconds, 1),
                "load": round(load, 2),
                "ends": [list(e) for e in probe.ends],
                "traces": [[list(t) for t in rate] for rate in probe.traces],
            }
        )
    if args.json_out:
        doc = {
            "command": shlex.join(["python", "bench/finder_probe.py", *sys.argv[1:]]),
            "model": args.model,
            "engine_version": ENGINE_VERSION,
            "machine": f"{platform.machine()} {os.cpu_count()} CPUs, torch {torch.__version__}",
            "load_at_start": round(os.getloadavg()[0], 2),
            "runs": runs,
        }
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(doc) + "\n")
        print(f"wrote {args.json_out}")
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
