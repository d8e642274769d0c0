#!/usr/bin/env python3
"""What the learning-rate finder sees, and what the defaults then do, on one model.

For a model file (or a built-in name): the finder's probe losses per grid rate with
``--probe-classes`` probe classes (``_lr_finder.PROBE_CLASSES`` is 1 in the shipped
finder) and the rate each count would choose; then, with ``--generate``, every class's
default prototype: target probability, steps and why it stopped. CPU, one thread.

    python bench/finder_probe.py MODEL.pt2 [--probe-classes 1 4 10] [--generate]
    python bench/finder_probe.py efficientnet_lite0 --probe-classes 1 4
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from protolens_server.engine import GenerationConfig, _loop, _lr_finder, generate
from protolens_server.models import load_model
from protolens_server.models.registry import load_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a model file/folder, or a built-in model's name")
    parser.add_argument("--probe-classes", type=int, nargs="+", default=[1])
    parser.add_argument("--generate", action="store_true", help="also run the defaults")
    args = parser.parse_args()
    torch.set_num_threads(1)
    path = Path(args.model)
    handle = load_path(path) if path.exists() else load_model(args.model)
    config = GenerationConfig()
    shipped = _lr_finder.PROBE_CLASSES
    print(f"grid {list(_lr_finder.GRID)}")
    try:
        for n in args.probe_classes:
            _lr_finder.PROBE_CLASSES = n
            started = time.perf_counter()
            progress = _loop._Progress(1, config.step_budget, None)
            with _loop._chunker(handle, config, "cpu", False, progress, None, True) as chunk:
                losses = _loop._probe(chunk, _lr_finder.GRID, 64)
            classes = _lr_finder.probe_classes(handle.num_classes)
            print(
                f"probe classes {classes}: losses {[round(v, 2) for v in losses]} -> "
                f"lr {_lr_finder.choose(losses)} ({time.perf_counter() - started:.0f} s)"
            )
    finally:
        _lr_finder.PROBE_CLASSES = shipped
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
