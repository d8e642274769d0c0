"""Reference sets too weak for a score, before and after the significance rule (issue 13).

efficientnet_lite0 prototypes of 967 espresso, scored against three reference sets
made from scikit-image's sample photos (random square crops with flips):

- ``2 photos``: crops of coffee (967) and chelsea (285): two classes only;
- ``near-identical``: crops of the coffee photo, split at random into 967 espresso
  and 968 cup: two classes nothing separates;
- ``4 photos``: the evaluation's set (coffee, camera, chelsea, rocket) for contrast.

"Before" is the old normalisation, ``(value - other) / (same - other)`` wherever
``|same - other| >= 1e-12``, averaged over layers, computed from the same numbers
the new scores report; "after" is the product now: the median over the layers the
reference set separates, its 95% interval, and how many layers that is.

Run: ``python bench/degenerate_references.py`` (a few minutes on a 2-core CPU).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
from protolens_server.engine import GenerationConfig, generate  # noqa: E402
from protolens_server.scores.samples import crops, photo  # noqa: E402
from protolens_server.scores.scoring import score_prototypes  # noqa: E402

ESPRESSO = 967


def write(root: Path, sources: dict[int, str], per_class: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for cls, name in sources.items():
        (root / str(cls)).mkdir(parents=True, exist_ok=True)
        for i, crop in enumerate(crops(photo(name), per_class, 224, rng)):
            crop.save(root / str(cls) / f"{name}-{i:02d}.png")
    return root


def near_identical(root: Path, per_class: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    images = crops(photo("coffee"), 2 * per_class, 224, rng)
    for cls, part in ((967, images[:per_class]), (968, images[per_class:])):
        (root / str(cls)).mkdir(parents=True, exist_ok=True)
        for i, crop in enumerate(part):
            crop.save(root / str(cls) / f"coffee-{i:02d}.png")
    return root


def old_normalisation(d: dict) -> tuple[float, float]:
    """(mean over layers, largest |layer|) of the old unguarded ratio of Spearman."""
    values = [
        (v - o) / (s - o)
        for v, s, o in zip(
            d["spearman"], d["spearman_natural_same"], d["spearman_natural_other"], strict=True
        )
        if None not in (v, s, o) and abs(s - o) >= 1e-12
    ]
    return float(np.mean(values)), float(max(abs(v) for v in values))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--per-class", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from protolens_server.models import load_model

    handle = load_model("efficientnet_lite0")
    start = time.perf_counter()
    config = GenerationConfig(steps=args.steps)
    protos = generate(handle, [ESPRESSO], config, seed=0)
    print(f"espresso prototype: p={protos[0].probability:.3f}, {args.steps} steps", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sets = {
            "2 photos (coffee 967, chelsea 285)": write(
                work / "two", {967: "coffee", 285: "chelsea"}, args.per_class, 0
            ),
            "near-identical (coffee crops as 967 and 968)": near_identical(
                work / "same", args.per_class, 0
            ),
            "4 photos (coffee, camera, chelsea, rocket)": write(
                work / "four",
                {967: "coffee", 872: "camera", 285: "chelsea", 657: "rocket"},
                args.per_class,
                0,
            ),
        }
        for name, folder in sets.items():
            (s,) = score_prototypes(
                handle, protos, folder, robustness_samples=0, cache_dir=work / "cache"
            )
            d = s.to_dict()
            mean, worst = old_normalisation(d)
            reasons = [r for r in d["spearman_reason"] if r]
            rows.append((name, mean, worst, s, reasons))
    print(f"\n{args.per_class} crops per class; {time.perf_counter() - start:.0f} s\n")
    print(
        "| reference set | before: mean over layers | before: largest layer | "
        "after: path similarity [95% interval] | layers not separated |"
    )
    print("|---|---|---|---|---|")
    for name, mean, worst, s, reasons in rows:
        counts = {r: reasons.count(r) for r in sorted(set(reasons))}
        why = ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"
        print(f"| {name} | {mean:+.2f} | {worst:.1f} | {s.summary_text()} | {why} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
