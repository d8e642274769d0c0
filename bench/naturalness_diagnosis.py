"""Which property of a prototype puts a layer below the natural level? Edit and rescore.

``bench/eval_path_similarity.py`` says *where* prototypes leave the natural path
(on EfficientNet-Lite0, ``_blocks.1``-``.7``); this script asks *why*. It generates
the prototypes of one config for the evaluation's photo classes, then rescores
edited copies of them, layer by layer, against the same references:

- ``blur 1`` / ``blur 2``: a Gaussian blur of 1 or 2 pixels (removes pixel-scale detail);
- ``half resolution``: down to half size (antialiased) and back up;
- ``contrast 0.5`` / ``contrast 1.5``: each image's deviation from its mean colour scaled;
- ``desaturate 0.5`` / ``grey``: halfway to, or all the way to, its grey image.

A layer that rises under an edit is reading what the edit removed. Each edit's
target probability says what the model still sees. The radial amplitude spectrum
(luminance, eight log-spaced bands from 2 cycles per image to Nyquist, log of the
band's RMS amplitude) of the prototypes, the reference crops and the unrelated
photos says how much detail of each scale they hold.

    python bench/naturalness_diagnosis.py                      # the defaults, coffee and camera
    python bench/naturalness_diagnosis.py --photos coffee,chelsea   # two colour photos
    python bench/naturalness_diagnosis.py --set parameterisation=maco --set lr=0.0707

Scores are one run's (one seed unless ``--seeds``); the optimisation is chaotic, so
read differences of a few hundredths as noise (docs/scores.md).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

import eval_path_similarity as evaluation  # noqa: E402
from protolens_server.engine import (  # noqa: E402
    LOGITS,
    GenerationConfig,
    capture,
    generate,
    score_activations,
)
from protolens_server.scores.references import ReferenceSet, load_image  # noqa: E402
from protolens_server.scores.samples import SKIMAGE_CLASSES, photo  # noqa: E402
from protolens_server.scores.samples import crops as photo_crops  # noqa: E402
from protolens_server.scores.statistics import reference_statistics  # noqa: E402

BANDS = 8
REFERENCE_CROPS = 12  # per photo, as the evaluation
SHOWN_LAYERS = (
    "_conv_stem",
    "_blocks.0",
    "_blocks.1",
    "_blocks.2",
    "_blocks.3",
    "_blocks.5",
    "_blocks.7",
    "_blocks.10",
    "_blocks.15",
    "logits",
)


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``sigma`` pixels, reflected at the borders."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=images.dtype)
    kernel = torch.exp(-(t**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    c = images.shape[1]
    x = F.pad(images, (radius,) * 4, mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(x, kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def _grey(images: torch.Tensor) -> torch.Tensor:
    return images.mean(dim=1, keepdim=True).expand_as(images)


def _contrast(images: torch.Tensor, k: float) -> torch.Tensor:
    mean = images.mean(dim=(2, 3), keepdim=True)
    return mean + k * (images - mean)


def _half_resolution(images: torch.Tensor) -> torch.Tensor:
    small = F.interpolate(images, scale_factor=0.5, mode="bilinear", antialias=True)
    return F.interpolate(small, size=images.shape[-2:], mode="bilinear", align_corners=False)


EDITS = {
    "as generated": lambda x: x,
    "blur 1": lambda x: gaussian_blur(x, 1.0),
    "blur 2": lambda x: gaussian_blur(x, 2.0),
    "half resolution": _half_resolution,
    "contrast 0.5": lambda x: _contrast(x, 0.5),
    "contrast 1.5": lambda x: _contrast(x, 1.5),
    "desaturate 0.5": lambda x: 0.5 * x + 0.5 * _grey(x),
    "grey": lambda x: _grey(x).contiguous(),
}


def edited(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every edit of ``images`` (N, C, H, W) in [0, 1], clamped back into [0, 1]."""
    return {name: edit(images).clamp(0, 1) for name, edit in EDITS.items()}


def radial_spectrum(image: torch.Tensor) -> tuple[list[float], float]:
    """Log RMS amplitude of the luminance in ``BANDS`` log-spaced radial bands (2 cycles
    per image to Nyquist) and the slope of log amplitude on log frequency over them
    (natural photos: about -1 to -1.5)."""
    grey = image.float().mean(dim=0)
    grey = grey - grey.mean()
    h, w = grey.shape
    amplitude = torch.fft.rfft2(grey, norm="ortho").abs()
    fy = torch.fft.fftfreq(h)[:, None]
    fx = torch.fft.rfftfreq(w)[None, :]
    f = torch.sqrt(fx * fx + fy * fy)
    edges = np.geomspace(2 / max(h, w), 0.5, BANDS + 1)
    centres, logs = [], []
    for lo, hi in pairwise(edges):
        band = (f >= lo) & (f < hi) if hi < 0.5 else (f >= lo)
        rms = float((amplitude[band] ** 2).mean().sqrt())
        centres.append(math.sqrt(lo * hi))
        logs.append(math.log(max(rms, 1e-12)))
    slope = float(np.polyfit(np.log(centres), logs, 1)[0])
    return logs, slope


def _mean_spectrum(images: torch.Tensor) -> dict[str, object]:
    spectra = [radial_spectrum(img) for img in images]
    return {
        "bands": [round(float(v), 3) for v in np.mean([s[0] for s in spectra], axis=0)],
        "slope": round(float(np.mean([s[1] for s in spectra])), 3),
    }


def _per_layer(
    handle, stats, images: torch.Tensor, targets: list[int]
) -> tuple[dict[str, float], dict[int, dict[str, float]]]:
    """Mean normalised Spearman per layer over ``images``, each scored as its target, and
    the same per target class."""
    acts = capture(handle, images, list(stats.layers))
    out: dict[str, list[float]] = {}
    by_target: dict[int, dict[str, list[float]]] = {}
    for target, scores in zip(targets, score_activations(acts, targets, stats), strict=True):
        for layer in scores.layers:
            if layer.spearman.normalised is not None:
                out.setdefault(layer.name, []).append(layer.spearman.normalised)
                by_target.setdefault(target, {}).setdefault(layer.name, []).append(
                    layer.spearman.normalised
                )
    means = {name: float(np.mean(v)) for name, v in out.items()}
    return means, {t: {n: float(np.mean(v)) for n, v in d.items()} for t, d in by_target.items()}


def _probability(handle, images: torch.Tensor, targets: list[int]) -> float:
    logits = capture(handle, images, [LOGITS])[LOGITS].float()
    p = logits.softmax(dim=1)[torch.arange(len(targets)), torch.tensor(targets)]
    return float(p.mean())


def _references(handle, work: Path, classes: dict[str, int], rng: np.random.Generator):
    spec = handle.input_spec
    root = work / "references"
    paths: list[Path] = []
    for name, cls in classes.items():
        folder = root / str(cls)
        folder.mkdir(parents=True, exist_ok=True)
        for i, crop in enumerate(photo_crops(photo(name), REFERENCE_CROPS, spec.height, rng)):
            crop.save(folder / f"{name}-{i:02d}.png")
            paths.append(folder / f"{name}-{i:02d}.png")
    unrelated: list[Path] = []
    for name in evaluation.UNRELATED_PHOTOS:
        for i, crop in enumerate(
            photo_crops(photo(name), evaluation.UNRELATED_CROPS, spec.height, rng)
        ):
            path = work / "unrelated" / f"{name}-{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            crop.save(path)
            unrelated.append(path)
    load = lambda ps: torch.stack([load_image(p, spec) for p in ps])  # noqa: E731
    return ReferenceSet.from_folder(root, handle.class_names), load(paths), load(unrelated)


def diagnose(config: GenerationConfig, photos: list[str], seeds: int, work: Path) -> dict:
    from protolens_server.models import load_model

    handle = load_model("efficientnet_lite0")
    chosen = {name: SKIMAGE_CLASSES[name] for name in photos}
    refset, reference_images, unrelated_images = _references(
        handle, work, chosen, np.random.default_rng(0)
    )
    stats = reference_statistics(handle, refset, cache_dir=work / "cache")
    started = time.perf_counter()
    protos = [
        p for s in range(seeds) for p in generate(handle, list(chosen.values()), config, seed=s)
    ]
    seconds = time.perf_counter() - started
    images = torch.stack([p.image for p in protos])
    targets = [p.target.classes[0] for p in protos]
    rows = {}
    for name, x in edited(images).items():
        layers, by_target = _per_layer(handle, stats, x, targets)
        rows[name] = {
            "layers": layers,
            "layers_by_target": by_target,
            "probability": _probability(handle, x, targets),
            "spectrum": _mean_spectrum(x),
        }
    return {
        "config": config.to_dict(),
        "classes": chosen,
        "seeds": seeds,
        "generation_seconds": round(seconds, 1),
        "edits": rows,
        "spectra": {
            "reference crops": _mean_spectrum(reference_images),
            "unrelated photos": _mean_spectrum(unrelated_images),
        },
    }


def tables(result: dict) -> str:
    shown = [n for n in SHOWN_LAYERS if n in result["edits"]["as generated"]["layers"]]
    head = "| edit | p(target) | " + " | ".join(shown) + " |"
    lines = [head, "|" + "---|" * (len(shown) + 2)]
    for name, row in result["edits"].items():
        cells = " | ".join(f"{row['layers'].get(n, float('nan')):+.2f}" for n in shown)
        lines.append(f"| {name} | {row['probability']:.2f} | {cells} |")
    lines += ["", "| images | slope | band log amplitudes (coarse to fine) |", "|---|---|---|"]
    spectra = {f"prototypes, {k}": v["spectrum"] for k, v in result["edits"].items()}
    for name, s in {**result["spectra"], **spectra}.items():
        bands = " ".join(f"{b:+.1f}" for b in s["bands"])
        lines.append(f"| {name} | {s['slope']:.2f} | {bands} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--photos",
        default="coffee,camera",
        help="comma-separated photo classes, at least two, of "
        + ", ".join(SKIMAGE_CLASSES)
        + " (default: the evaluation's first two)",
    )
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="also write the result as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = GenerationConfig().replace(**GenerationConfig.parse_changes(args.set))
    photos = [p.strip() for p in args.photos.split(",") if p.strip()]
    unknown = [p for p in photos if p not in SKIMAGE_CLASSES]
    if unknown or len(photos) < 2:
        parser.error(f"--photos: need two or more of {', '.join(SKIMAGE_CLASSES)}")
    with tempfile.TemporaryDirectory() as tmp:
        result = diagnose(config, photos, args.seeds, Path(tmp))
    print(tables(result))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
