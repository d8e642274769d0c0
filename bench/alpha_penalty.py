"""Choose the default ``alpha_penalty``: where does an alpha prototype's opacity go?

A location-aware model whose class-1 evidence sits in one place: a linear classifier
on the flattened 32x32 image whose class-1 logit reads red-minus-green/blue in the
top-left 8x8 patch only (6.25% of the image) and nothing elsewhere. An ideal alpha
prototype of class 1 is opaque on that patch and transparent everywhere else. For
each penalty, the default config with ``alpha=True`` (3 seeds): the class
probability (over mid-grey), the mean alpha inside and outside the patch, and the
fraction of the alpha mass on the patch (0.0625 = uniform).

    .venv/bin/python bench/alpha_penalty.py [--out bench/results/alpha_penalty.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from protolens_server.engine import Classifier, GenerationConfig, InputSpec, generate
from torch import nn

SIZE, PATCH = 32, 8
PENALTIES = (0.0, 0.5, 2.0, 8.0, 32.0)
SEEDS = (0, 1, 2)


def patch_model() -> Classifier:
    lin = nn.Linear(3 * SIZE * SIZE, 2)
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.zero_()
        w = torch.zeros(3, SIZE, SIZE)
        w[0, :PATCH, :PATCH], w[1:, :PATCH, :PATCH] = 1.0, -0.5
        lin.weight[1] = w.flatten() / PATCH
    return Classifier(
        nn.Sequential(nn.Flatten(), lin).eval(), InputSpec(3, SIZE, SIZE, (0.5,), (0.25,)), 2
    )


def measure(model: Classifier, penalty: float) -> dict[str, float]:
    rows = []
    for seed in SEEDS:
        config = GenerationConfig(alpha=True, alpha_penalty=penalty)
        (proto,) = generate(model, [1], config, seed=seed)
        a = proto.image[-1]
        inside = a[:PATCH, :PATCH]
        outside_mean = (a.sum() - inside.sum()) / (a.numel() - inside.numel())
        rows.append(
            (
                proto.probability,
                float(inside.mean()),
                float(outside_mean),
                float(inside.sum() / a.sum()),
            )
        )
    t = torch.tensor(rows)
    keys = ("probability", "alpha_in_patch", "alpha_outside", "mass_on_patch")
    return {k: round(float(v), 4) for k, v in zip(keys, t.mean(dim=0), strict=True)}


def imagenet(penalties: tuple[float, ...]) -> list[dict[str, float]]:
    """The built-in EfficientNet-Lite0, class 285 (Egyptian Mau), seed 0: does the class
    survive the penalty (probability over mid-grey), and how opaque is the prototype?"""
    from protolens_server.models import builtin

    handle = builtin.load("efficientnet_lite0")
    rows = []
    for penalty in penalties:
        start = time.perf_counter()
        (proto,) = generate(handle, [285], GenerationConfig(alpha=True, alpha_penalty=penalty))
        row = {
            "alpha_penalty": penalty,
            "probability": round(proto.probability, 4),
            "alpha_mean": round(float(proto.image[-1].mean()), 4),
            "seconds": round(time.perf_counter() - start, 1),
        }
        print(json.dumps(row))
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/alpha_penalty.json"))
    parser.add_argument(
        "--imagenet", action="store_true", help="also EfficientNet-Lite0 class 285 (slow on CPU)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = patch_model()
    results = []
    for penalty in PENALTIES:
        start = time.perf_counter()
        row = {"alpha_penalty": penalty, **measure(model, penalty)}
        row["seconds"] = round(time.perf_counter() - start, 1)
        print(json.dumps(row))
        results.append(row)
    large = imagenet((2.0, 8.0, 32.0)) if args.imagenet else []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "machine": f"{platform.machine()}, 2-core VM shared with other work, CPU only",
                "config": "GenerationConfig() defaults + alpha=True; 3 seeds each",
                "patch_fraction_of_image": (PATCH * PATCH) / (SIZE * SIZE),
                "results": results,
                "efficientnet_lite0_class_285": large,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
