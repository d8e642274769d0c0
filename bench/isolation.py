"""Feature isolation against Captum's attributions on a planted-shortcut model.

The model is the team's planted-shortcut classifier (``tests/checks/checks_shortcut_models``:
four synthetic shape classes on 32x32 noise, fine-tuned on data where every ``bars``
image carries a red 6x6 patch in the top-left corner and half of them show only the
patch). Images of the other three classes with the patch pasted on, kept when the model
then calls them ``bars`` (p > 0.5): the patch is their only ``bars`` evidence, so
each method's map of the image for ``bars`` should land on the patch (36 of 1024
pixels, 3.5% of the image):

- ``isolate``: protolens' mask (this repo), at each sparsity weight of the sweep;
- Captum integrated gradients (grey baseline, 32 steps), absolute, summed over channels;
- Captum occlusion (6x6 grey window, stride 2), positive part (evidence removed).

Printed per method: the fraction of the map's mass on the patch (mean and minimum over
the images), the precision of its 36 highest pixels (how many lie on the patch), seconds
per image;
for ``isolate`` also the class probability of the whole image, of the kept part and
with the mask's part removed.

    .venv/bin/python bench/isolation.py [--images 12] [--out bench/results/isolation.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
from protolens_server.engine import Classifier, InputSpec, IsolationConfig, isolate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "checks"))
import checks_shortcut_models as shortcut

PATCH = (slice(1, 7), slice(1, 7))  # where the shortcut's red patch is painted
SPARSITY = (0.25, 0.5, 1.0, 2.0, 4.0)


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


def patched_images(model: Classifier, n: int) -> torch.Tensor:
    """Held-out images of the other classes with the red patch pasted on, that the model
    now calls ``bars``."""
    images, labels = shortcut.make_data(16 * n, seed=99)
    images = images[labels != shortcut.SHORTCUT].clone()
    images[:, :, PATCH[0], PATCH[1]] = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
    with torch.no_grad():
        logits = model.module(model.input_spec.normalise(images))
    fooled = torch.softmax(logits, dim=1)[:, shortcut.SHORTCUT] > 0.5
    return images[fooled][:n]


def on_patch(attribution: torch.Tensor) -> tuple[float, float]:
    """(mass fraction on the patch, precision of the 36 highest pixels) of an (H, W) map;
    negative values count as none."""
    a = attribution.clamp_min(0)
    inside = a[PATCH].sum()
    where = torch.zeros_like(a, dtype=torch.bool)
    where[PATCH] = True
    top = a.flatten().topk(int(where.sum())).indices
    return float(inside / a.sum().clamp_min(1e-12)), float(where.flatten()[top].float().mean())


def captum_maps(model: Classifier, image: torch.Tensor) -> dict[str, torch.Tensor]:
    from captum.attr import IntegratedGradients, Occlusion

    def forward(x01: torch.Tensor) -> torch.Tensor:
        return model.module(model.input_spec.normalise(x01))

    x = image[None].clone().requires_grad_(True)
    grey = torch.full_like(x, 0.5)
    target = shortcut.SHORTCUT
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument(
        "--contrast",
        type=float,
        default=IsolationConfig().background_contrast,
        help="background_contrast of the isolations (1.0: full-contrast random colours)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/isolation.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    model = shortcut_model()
    trained = round(time.perf_counter() - start, 1)
    images = patched_images(model, args.images)
    results: dict[str, dict[str, float]] = {}
    for sparsity in SPARSITY:
        rows, probs = [], []
        for k, image in enumerate(images):
            t = time.perf_counter()
            config = IsolationConfig(sparsity=sparsity, background_contrast=args.contrast)
            found = isolate(model, image, shortcut.SHORTCUT, config, seed=k)
            rows.append((*on_patch(found.mask[0]), time.perf_counter() - t))
            probs.append(
                (
                    found.probability,
                    found.probability_kept,
                    found.probability_removed,
                    found.mask_mean,
                )
            )
        p = torch.tensor(probs).mean(dim=0).tolist()
        results[f"isolate_sparsity_{sparsity:g}"] = {
            **summarise(rows),
            "probability_whole": round(p[0], 4),
            "probability_kept": round(p[1], 4),
            "probability_removed": round(p[2], 4),
            "mask_mean": round(p[3], 4),
        }
        print(
            f"isolate sparsity={sparsity:g}", json.dumps(results[f"isolate_sparsity_{sparsity:g}"])
        )
    captum_rows: dict[str, list[tuple[float, float, float]]] = {}
    for image in images:
        t = time.perf_counter()
        maps = captum_maps(model, image)
        elapsed = (time.perf_counter() - t) / len(maps)
        for name, attribution in maps.items():
            captum_rows.setdefault(name, []).append((*on_patch(attribution), elapsed))
    for name, rows in captum_rows.items():
        results[f"captum_{name}"] = summarise(rows)
        print(f"captum {name}", json.dumps(results[f"captum_{name}"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "machine": f"{platform.machine()}, 2-core VM shared with other work, CPU only",
                "model": "tests/checks/checks_shortcut_models version 2 (planted red patch)",
                "images": len(images),
                "patch_fraction_of_image": 36 / 1024,
                "training_seconds": trained,
                "isolation_config": IsolationConfig(background_contrast=args.contrast).to_dict(),
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
