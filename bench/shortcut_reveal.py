#!/usr/bin/env python3
"""Does a generation config show a suite model's planted shortcut? The quick loop.

The shortcut suite (``shortcut_suite.py``) runs the whole ``protolens check`` against
each case's twin; this runs only the engine on the case's shortcut model, with any
``GenerationConfig`` changes, and applies the suite's own detector to the prototypes:

    python bench/shortcut_reveal.py stripes-cnnbn-spec transforms=none hf_penalty=0
    python bench/shortcut_reveal.py patch-vit-model parameterisation=maco

Prints the rate, steps and probabilities of the ten class prototypes and the detector's
verdict (score per class, lead over the best other class, the kind's margin). Models come
from the suite's cache (``$PROTOLENS_CACHE_DIR/shortcut_suite``), trained there if missing.
CPU, one thread, seed 0 (the suite's), or each of ``--seeds`` in turn: a lead measured
on one seed can move by several hundredths with the seed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from protolens_server.engine import GenerationConfig, generate  # noqa: E402
from protolens_server.models.registry import load_path  # noqa: E402
from shortcut_suite import CASES  # noqa: E402
from shortcuts import data, detectors  # noqa: E402
from shortcuts.train import ensure  # noqa: E402


def config_from(changes: list[str]) -> GenerationConfig:
    """The default config with ``field=value`` changes, each value typed as the field's."""
    return GenerationConfig().replace(**GenerationConfig.parse_changes(changes))


def main() -> None:
    shortcut_cases = [c.name for c in CASES if c.kind]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("case", choices=shortcut_cases)
    p.add_argument("changes", nargs="*", metavar="FIELD=VALUE", help="GenerationConfig changes")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds to run (default 0)")
    args = p.parse_args()
    torch.set_num_threads(1)
    case = next(c for c in CASES if c.name == args.case)
    config = config_from(args.changes)
    handle = load_path(ensure(case.model).path)
    for seed in args.seeds:
        reveal(case, handle, config, args.changes, seed)


def reveal(case: Any, handle: Any, config: GenerationConfig, changes: list[str], seed: int) -> None:
    """Generate the ten class prototypes with ``seed`` and print the detector's verdict."""
    started = time.perf_counter()
    protos = generate(handle, list(range(handle.num_classes)), config, seed=seed)
    seconds = time.perf_counter() - started
    kind, target = case.kind, data.TARGETS[case.kind]
    scores = {p.target.classes[0]: detectors.class_score(kind, p.image[None]) for p in protos}
    verdict = detectors.decide(kind, scores, target)
    print(
        f"{case.name} {' '.join(changes) or '(defaults)'}"
        f"{f' seed {seed}' if seed else ''}: {seconds:.0f} s, lr {protos[0].lr}"
    )
    print(f"  steps {[p.steps for p in protos]}")
    print(f"  p(target) {[round(p.probability, 2) for p in protos]}")
    print(detectors.describe(scores, verdict, target))


if __name__ == "__main__":
    main()
