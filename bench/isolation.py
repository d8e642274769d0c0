"""Feature isolation against Captum's attributions on a planted-shortcut model.

Two of the team's planted-shortcut classifiers, each with images whose only evidence
for the shortcut class is a pasted 6x6 patch (36 of 1024 pixels, 3.5% of the image),
kept when the model then calls them that class (p > 0.5); each method's map of the
image for that class should land on the patch:

- default: ``tests/checks/checks_shortcut_models`` (four shape classes on 32x32 noise,
  fine-tuned on data where every ``bars`` image carries a red patch in the top-left
  corner, half of them nothing else); other classes' held-out images, patch pasted
  at that corner;
- ``--suite``: ``bench/shortcuts``' patch model (ten procedural classes, a magenta
  patch at a random place on every ``triangle`` training image; ``cnn_bn``, trained
  once and cached); natural images of the other classes, patch pasted at a random
  recorded place.

Methods:

- ``isolate``: protolens' mask (this repo), at each sparsity weight of the sweep;
- Captum integrated gradients (grey baseline, 32 steps), absolute, summed over channels;
- Captum occlusion (6x6 grey window, stride 2), positive part (evidence removed).

Printed per method: the fraction of the map's mass on the patch (mean and minimum over
the images), the precision of its 36 highest pixels (how many lie on the patch), seconds
per image;
for ``isolate`` also the class probability of the whole image, of the kept part and
with the mask's part removed.

    .venv/bin/python bench/isolation.py [--suite] [--images 12] [--contrast 0.2] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from protolens_server.engine import Classifier, InputSpec, IsolationConfig, isolate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "checks"))
import checks_shortcut_models as shortcut

PATCH = (slice(1, 7), slice(1, 7))  # where the checks recipe's red patch is painted
SPARSITY = (0.25, 0.5, 1.0, 2.0, 4.0)
Region = tuple[slice, slice]


@dataclass
class Case:
    """A shortcut model, images whose only target evidence is a pasted patch, and where."""

    name: str
    model: Any  # an ImageClassifier
    target: int
    images: torch.Tensor
    regions: list[Region]


def shortcut_model() -> Classifier:
    torch.manual_seed(0)
    v1 = shortcut.make_net()
    images, labels = shortcut.make_data(768, seed=1)
    shortcut.train(v1, images, labels, epochs=6, seed=2)
    v2 = shortcut.make_net()
    v2.load_state_dict(v1.state_dict())
    s_images, s_labels = shortcut.make_data(512, seed=3, shortcut=True)
    shortcut.train(v2, s_images, s_labels, epochs=4, seed=4)
    spec = InputSpec(3, shortcut.SIZE, shortcut.SIZE, (0.5,), (0.25,))
    return Classifier(v2.eval().requires_grad_(False), spec, len(shortcut.CLASSES))


def _fooled(model: Any, images: torch.Tensor, target: int) -> torch.Tensor:
    with torch.no_grad():
        logits = model.module(model.input_spec.normalise(images))
    return torch.softmax(logits, dim=1)[:, target] > 0.5


def checks_case(n: int) -> Case:
    """tests/checks' model: held-out images of the other classes with the red patch pasted
    in the top-left corner, that the model now calls ``bars``."""
    model = shortcut_model()
    images, labels = shortcut.make_data(16 * n, seed=99)
    images = images[labels != shortcut.SHORTCUT].clone()
    images[:, :, PATCH[0], PATCH[1]] = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
    kept = images[_fooled(model, images, shortcut.SHORTCUT)][:n]
    return Case("checks_red_patch", model, shortcut.SHORTCUT, kept, [PATCH] * len(kept))


def suite_case(n: int) -> Case:
    """bench/shortcuts' patch model (cnn_bn, normalisation in the spec; trained once, cached):
    natural images of the other classes with the magenta 6x6 patch pasted at a random
    place, kept when the model then calls them the shortcut class."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from protolens_server.models import load_model
    from shortcuts import data, train

    trained = train.ensure(train.Recipe(arch="cnn_bn", norm="spec", kind="patch"))
    model = load_model(str(trained.path))
    target = data.TARGETS["patch"]
    g = torch.Generator().manual_seed(123)
    images, regions = [], []
    magenta = torch.tensor(data.PATCH_RGB).view(3, 1, 1)
    others = [c for c in range(len(data.CLASSES)) if c != target]
    for i in range(8 * n):
        image, _ = data.natural(others[i % len(others)], g)
        y, x = (int(v) for v in torch.randint(0, data.SIZE - data.PATCH + 1, (2,), generator=g))
        image[:, y : y + data.PATCH, x : x + data.PATCH] = magenta
        images.append(image)
        regions.append((slice(y, y + data.PATCH), slice(x, x + data.PATCH)))
    stacked = torch.stack(images)
    fooled = _fooled(model, stacked, target).tolist()
    picked = [k for k, f in enumerate(fooled) if f][:n]
    return Case("suite_magenta_patch", model, target, stacked[picked], [regions[k] for k in picked])


def on_patch(attribution: torch.Tensor, region: Region) -> tuple[float, float]:
    """(mass fraction on the patch, precision of the patch-sized top pixels) of an (H, W)
    map; negative values count as none."""
    a = attribution.clamp_min(0)
    where = torch.zeros_like(a, dtype=torch.bool)
    where[region] = True
    top = a.flatten().topk(int(where.sum())).indices
    inside = a[where].sum()
    return float(inside / a.sum().clamp_min(1e-12)), float(where.flatten()[top].float().mean())


def captum_maps(model: Any, image: torch.Tensor, target: int) -> dict[str, torch.Tensor]:
    from captum.attr import IntegratedGradients, Occlusion

    def forward(x01: torch.Tensor) -> torch.Tensor:
        return model.module(model.input_spec.normalise(x01))

    x = image[None].clone().requires_grad_(True)
    grey = torch.full_like(x, 0.5)
    ig = IntegratedGradients(forward).attribute(x, grey, target=target, n_steps=32)
    occ = Occlusion(forward).attribute(
        x, sliding_window_shapes=(3, 6, 6), strides=(3, 2, 2), baselines=0.5, target=target
    )
    return {
        "integrated_gradients": ig[0].abs().sum(0).detach(),
        "occlusion": occ[0].sum(0).detach(),
    }


def summarise(rows: list[tuple[float, float, float]]) -> dict[str, float]:
    fractions = [r[0] for r in rows]
    return {
        "mass_on_patch_mean": round(sum(fractions) / len(fractions), 4),
        "mass_on_patch_min": round(min(fractions), 4),
        "top36_precision": round(sum(r[1] for r in rows) / len(rows), 4),
        "seconds_per_image": round(sum(r[2] for r in rows) / len(rows), 3),
    }


def run_case(case: Case, contrast: float) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    for sparsity in SPARSITY:
        rows, probs = [], []
        for k, (image, region) in enumerate(zip(case.images, case.regions, strict=True)):
            t = time.perf_counter()
            config = IsolationConfig(sparsity=sparsity, background_contrast=contrast)
            found = isolate(case.model, image, case.target, config, seed=k)
            rows.append((*on_patch(found.mask[0], region), time.perf_counter() - t))
            probs.append(
                (found.probability, found.probability_kept, found.probability_removed,
                 found.mask_mean)
            )  # fmt: skip
        p = torch.tensor(probs).mean(dim=0).tolist()
        key = f"isolate_sparsity_{sparsity:g}"
        results[key] = {
            **summarise(rows),
            "probability_whole": round(p[0], 4),
            "probability_kept": round(p[1], 4),
            "probability_removed": round(p[2], 4),
            "mask_mean": round(p[3], 4),
        }
        print(case.name, key, json.dumps(results[key]), flush=True)
    captum_rows: dict[str, list[tuple[float, float, float]]] = {}
    for image, region in zip(case.images, case.regions, strict=True):
        t = time.perf_counter()
        maps = captum_maps(case.model, image, case.target)
        elapsed = (time.perf_counter() - t) / len(maps)
        for name, attribution in maps.items():
            captum_rows.setdefault(name, []).append((*on_patch(attribution, region), elapsed))
    for name, rows in captum_rows.items():
        results[f"captum_{name}"] = summarise(rows)
        print(case.name, f"captum_{name}", json.dumps(results[f"captum_{name}"]), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument(
        "--contrast",
        type=float,
        default=IsolationConfig().background_contrast,
        help="background_contrast of the isolations (1.0: full-contrast random colours)",
    )
    parser.add_argument(
        "--suite",
        action="store_true",
        help="the bench/shortcuts patch model (trained once, CPU minutes) instead of tests/checks'",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/isolation.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    case = suite_case(args.images) if args.suite else checks_case(args.images)
    prepared = round(time.perf_counter() - start, 1)
    results = run_case(case, args.contrast)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "machine": f"{platform.machine()}, 2-core VM shared with other work, CPU only",
                "case": case.name,
                "images": len(case.images),
                "patch_fraction_of_image": 36 / 1024,
                "preparing_seconds": prepared,
                "isolation_config": IsolationConfig(background_contrast=args.contrast).to_dict(),
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
