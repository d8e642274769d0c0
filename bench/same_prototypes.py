#!/usr/bin/env python3
"""Are two engines' default prototypes the same pixels? (an engine change that should
leave some models alone, checked on them)

Save each model's default prototypes (seed 0) with the engine on the path, then compare
two saved files; an older engine is run from a worktree first on ``PYTHONPATH``:

    python bench/same_prototypes.py save new.pt MODEL [MODEL ...] --targets 0,3
    git worktree add /tmp/engine-old COMMIT
    PYTHONPATH=/tmp/engine-old/server python bench/same_prototypes.py save old.pt MODEL ...
    python bench/same_prototypes.py compare old.pt new.pt

CPU, one thread.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from protolens_server import ENGINE_VERSION
from protolens_server.engine import GenerationConfig, generate
from protolens_server.models import load_model


def save(out: Path, models: list[str], targets: list[int]) -> None:
    images = {}
    for ref in models:
        protos = generate(load_model(ref), targets, GenerationConfig(), seed=0)
        images[ref] = torch.stack([p.image for p in protos])
        probabilities = [round(p.probability, 3) for p in protos]
        print(f"{ref}: p {probabilities}, steps {[p.steps for p in protos]}")
    torch.save({"engine": ENGINE_VERSION, "targets": targets, "images": images}, out)
    print(f"engine {ENGINE_VERSION}: {len(images)} models -> {out}")


def compare(a: Path, b: Path) -> None:
    first, second = torch.load(a), torch.load(b)
    print(f"{a}: engine {first['engine']}; {b}: engine {second['engine']}")
    for ref, image in first["images"].items():
        other = second["images"].get(ref)
        if other is None:
            print(f"{ref}: only in {a}")
            continue
        verdict = "same pixels" if torch.equal(image, other) else "differ"
        print(f"{ref}: {verdict} (max |diff| {(image - other).abs().max():.3g})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("save")
    s.add_argument("out", type=Path)
    s.add_argument("models", nargs="+")
    s.add_argument("--targets", default="0,3")
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.command == "save":
        save(args.out, args.models, [int(t) for t in args.targets.split(",")])
    else:
        compare(args.a, args.b)


if __name__ == "__main__":
    main()
