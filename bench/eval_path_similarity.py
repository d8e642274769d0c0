"""Do prototypes follow a natural activation path? The comparison of Tagade & Rumbelow (2023).

For each model, prototypes of the same classes are generated three ways and
scored layer by layer against natural images of their class (normalised as in
Geirhos et al. 2023: 1 = as similar as a held-out natural image of the class,
0 = as similar as a natural image of another class):

- ``default``: the product's default ``GenerationConfig`` (learning rate found per
  model, stops by convergence; its time includes the finder's probes);
- ``previous default``: engine 0.2's defaults (64 fixed steps at lr 0.05, target
  logit + log-probability);
- ``pixel``: plain gradient ascent in pixel space (no transforms, no penalties,
  noise start, no decorrelation; 64 steps);
- ``lucent 512``: a Lucent-style render (Fourier + decorrelated colour, standard
  transforms, no high-frequency penalty, noise start, the target logit) for 512
  steps at Lucent's lr 0.05: the reference the defaults must beat, in a quarter of
  its time.

Models:
- ``efficientnet_lite0`` (built in) with natural images shipped by
  scikit-image (chelsea the cat, coffee, the rocket, the cameraman), each turned
  into several reference images by random square crops and flips, for the
  ImageNet class the model predicts for it;
- ``ShapeNet``, a small CNN trained here (about 10 s) on a synthetic 10-class set of
  coloured shapes and textures (tests/scores/scores_synthetic.py), with fresh
  natural images of every class as references and held-out checks.

Run: ``python bench/eval_path_similarity.py`` (about 2 minutes on a 2-core CPU
with the 64-step default; ``--quick`` for a smaller smoke run). Writes
``docs/path_similarity.png`` and ``docs/path_similarity_results.md`` (tables).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "scores"))  # the synthetic data set and ShapeNet

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import scores_synthetic as synth  # noqa: E402
from protolens_server.engine import (  # noqa: E402
    LOGITS,
    GenerationConfig,
    PrototypeScores,
    capture,
    generate,
    score_activations,
)
from protolens_server.scores.references import ReferenceSet, load_image  # noqa: E402
from protolens_server.scores.samples import SKIMAGE_CLASSES  # noqa: E402
from protolens_server.scores.samples import crops as _crops  # noqa: E402
from protolens_server.scores.samples import photo as _photo  # noqa: E402
from protolens_server.scores.scoring import score_prototypes  # noqa: E402
from protolens_server.scores.statistics import reference_statistics  # noqa: E402

CONFIGS = {
    "default": GenerationConfig(),
    "previous default": GenerationConfig(
        steps=64, lr=0.05, objective="logit", parameterisation="fourier", fourier_decay=1.0
    ),
    "pixel": GenerationConfig(
        steps=64,
        lr=0.05,
        objective="logit",
        parameterisation="pixel",
        decorrelate=False,
        transforms="none",
        hf_penalty=0.0,
        start="noise",
        blur_every=0,
        bn_prior=0.0,  # no activation prior (the engine's default has one)
    ),
    "lucent 512": GenerationConfig(
        steps=512,
        lr=0.05,
        objective="logit",
        parameterisation="fourier",
        fourier_decay=1.0,
        decorrelate=True,
        transforms="medium",
        hf_penalty=0.0,
        start="noise",
        blur_every=0,
        bn_prior=0.0,  # no activation prior (the engine's default has one)
    ),
}
# scikit-image sample photos of none of the reference classes: what a natural image that is
# not of a class's photo scores for that class, layer by layer (``_unrelated_levels``)
UNRELATED_PHOTOS = (
    "astronaut",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "grass",
    "gravel",
)
UNRELATED_CROPS = 4  # crops per unrelated photo


@dataclass
class Result:
    model: str
    layers: list[str]
    curves: dict[str, list[float]] = field(default_factory=dict)  # config -> per-layer mean
    summary: dict[str, list[float]] = field(default_factory=dict)  # config -> per prototype
    intervals: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # 95% ends
    determinate: dict[str, list[int]] = field(default_factory=dict)  # layers per prototype
    probability: dict[str, float] = field(default_factory=dict)
    robust: dict[str, float] = field(default_factory=dict)
    natural: dict[str, list[PrototypeScores]] = field(default_factory=dict)  # held-out levels
    seconds: dict[str, float] = field(default_factory=dict)
    generation_seconds: dict[str, float] = field(default_factory=dict)  # without scoring
    seed_curves: dict[str, list[list[float]]] = field(default_factory=dict)  # per seed
    unrelated_curves: list[list[float]] = field(default_factory=list)  # per unrelated photo
    steps: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _mean_curve(scores: list[PrototypeScores]) -> list[float]:
    curves = np.array([[np.nan if v is None else v for v in s.curve()] for s in scores])
    with warnings.catch_warnings():  # a layer no prototype has a number for stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        return [float(v) for v in np.nanmean(curves, axis=0)]


def _run_configs(
    result: Result, handle, classes: list[int], refset, configs, seeds, cache: Path
) -> None:
    for name, config in configs.items():
        start = time.perf_counter()
        protos = [p for s in seeds for p in generate(handle, classes, config, seed=s)]
        result.generation_seconds[name] = time.perf_counter() - start
        scores = score_prototypes(handle, protos, refset, cache_dir=cache, robustness_samples=16)
        result.seconds[name] = time.perf_counter() - start
        per_seed = len(classes)
        result.seed_curves[name] = [
            _mean_curve(scores[k : k + per_seed]) for k in range(0, len(scores), per_seed)
        ]
        result.steps[name] = max(p.steps for p in protos)
        result.curves[name] = _mean_curve(scores)
        _keep_summaries(result, name, scores)
        result.probability[name] = float(np.mean([p.probability for p in protos]))
        result.robust[name] = float(
            np.mean([s.robustness.probability_mean_over_transforms for s in scores])
        )
        print(
            f"  {name:8s} path similarity {_summary_cell(result, name)}  "
            f"p={result.probability[name]:.3f}  ({result.seconds[name]:.0f} s)",
            flush=True,
        )


def _keep_summaries(result: Result, name: str, scores: list[PrototypeScores]) -> None:
    """Each prototype's headline, its 95% interval and the layers it rests on."""
    result.summary[name] = [s.path_similarity for s in scores]
    result.intervals[name] = [(s.summary.low, s.summary.high) for s in scores]
    result.determinate[name] = [s.summary.layers for s in scores]


def _scored_as(acts, stats, targets: list[list[int]]) -> list[PrototypeScores]:
    """Image ``i`` (its captured activations ``acts``) scored as each class of
    ``targets[i]``, in that order."""
    rows = [i for i, classes in enumerate(targets) for _ in classes]
    flat = [c for classes in targets for c in classes]
    return score_activations({n: v[rows] for n, v in acts.items()}, flat, stats)


def _natural_levels(
    handle, stats, images: torch.Tensor, labels: list[int]
) -> dict[str, list[PrototypeScores]]:
    """Summary scores of held-out natural images for their own class and for other classes."""
    acts = capture(handle, images, list(stats.layers))
    others = [[c for c in stats.classes if c != label] for label in labels]
    return {
        "same": _scored_as(acts, stats, [[label] for label in labels]),
        "other": _scored_as(acts, stats, others),
    }


def _unrelated_levels(
    handle, stats, photos: dict[str, list[torch.Tensor]]
) -> tuple[list[PrototypeScores], list[list[float]]]:
    """Crops of natural photos of no reference class, each scored as every reference class:
    their summary scores, and per photo the mean curve over its crops and the classes.

    The reference classes are crops of one photo each, so a layer whose class mean is
    that photo's texture and colour statistics puts another natural photo below 0 there
    (as far from the class as from the other photos, or further): this row is the level a
    natural image reaches at each layer without being that photo."""
    scores: list[PrototypeScores] = []
    curves: list[list[float]] = []
    for images in photos.values():
        acts = capture(handle, torch.stack(images), list(stats.layers))
        photo_scores = _scored_as(acts, stats, [list(stats.classes)] * len(images))
        scores += photo_scores
        curves.append(_mean_curve(photo_scores))
    return scores, curves


# -- efficientnet_lite0 with scikit-image photos ----------------------------------------


def run_efficientnet(
    quick: bool, work: Path, classes: int = 4, seeds: int = 1, configs: list[str] | None = None
) -> Result:
    from protolens_server.models import load_model

    print("efficientnet_lite0 + scikit-image photos", flush=True)
    handle = load_model("efficientnet_lite0")
    spec = handle.input_spec
    photos = dict(list(SKIMAGE_CLASSES.items())[: 3 if quick else classes])
    rng = np.random.default_rng(0)
    per_class, held_per_class = (8, 3) if quick else (12, 4)
    root = work / "skimage_refs"
    held_images, held_labels = [], []
    for name, cls in photos.items():
        crops = _crops(_photo(name), per_class + held_per_class, spec.height, rng)
        for i, crop in enumerate(crops[:per_class]):
            (root / str(cls)).mkdir(parents=True, exist_ok=True)
            crop.save(root / str(cls) / f"{name}-{i:02d}.png")
        for i, crop in enumerate(crops[per_class:]):
            path = work / "held" / f"{name}-{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            crop.save(path)
            held_images.append(path)
            held_labels.append(cls)
    refset = ReferenceSet.from_folder(root, handle.class_names)
    stats = reference_statistics(handle, refset, cache_dir=work / "cache")
    result = Result("efficientnet_lite0", list(stats.layers))

    held = torch.stack([load_image(p, spec) for p in held_images])
    predicted = capture(handle, held, [LOGITS])[LOGITS].argmax(1).tolist()
    agree = np.mean([p == c for p, c in zip(predicted, held_labels, strict=True)])
    result.natural = _natural_levels(handle, stats, held, held_labels)
    unrelated: dict[str, list[torch.Tensor]] = {}
    for name in UNRELATED_PHOTOS:  # saved and read back as the references are
        for i, crop in enumerate(_crops(_photo(name), UNRELATED_CROPS, spec.height, rng)):
            path = work / "unrelated" / f"{name}-{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            crop.save(path)
            unrelated.setdefault(name, []).append(load_image(path, spec))
    result.natural["unrelated"], result.unrelated_curves = _unrelated_levels(
        handle, stats, unrelated
    )
    described = ", ".join(f"{n}: {c} {handle.class_names[c]}" for n, c in photos.items())
    result.notes.append(
        f"{len(photos)} classes ({described}); "
        f"{per_class} reference crops per photo; {held_per_class} held-out crops per photo, "
        f"top-1 = the photo's class for {agree:.0%} of them"
    )
    chosen = {k: v for k, v in CONFIGS.items() if configs is None or k in configs}
    if quick:
        chosen = {
            k: v.replace(steps=32 if v.steps else 0, max_steps=32, equidistant_steps=8)
            for k, v in chosen.items()
        }
        result.notes.append("--quick: at most 32 steps per config")
    result.notes.append(f"{seeds} seed(s) per class and config")
    _run_configs(
        result, handle, list(photos.values()), refset, chosen, list(range(seeds)), work / "cache"
    )
    return result


# -- ShapeNet on synthetic shapes --------------------------------------------------------


def run_shapenet(quick: bool, work: Path) -> Result:
    print("ShapeNet (trained here) + synthetic shapes", flush=True)
    start = time.perf_counter()
    net, accuracy = synth.train_shapenet(per_class=200, epochs=10, seed=0)
    trained = time.perf_counter() - start
    handle = synth.handle_for(net, net)
    ref_x, ref_y = synth.make_dataset(16, seed=1234)
    root = work / "shape_refs"
    for i, (image, label) in enumerate(zip(ref_x, ref_y.tolist(), strict=True)):
        synth.write_png(image, root / str(label) / f"{i:03d}.png")
    refset = ReferenceSet.from_folder(root, handle.class_names)
    stats = reference_statistics(handle, refset, cache_dir=work / "cache")
    result = Result("ShapeNet (synthetic shapes)", list(stats.layers))
    held_x, held_y = synth.make_dataset(8, seed=777)
    result.natural = _natural_levels(handle, stats, held_x, held_y.tolist())
    seeds = [0] if quick else [0, 1, 2]
    result.notes.append(
        f"10 classes, trained in {trained:.0f} s to {accuracy:.0%} held-out accuracy; "
        f"16 reference images per class; {len(seeds)} prototype(s) per class per config"
    )
    _run_configs(result, handle, list(range(10)), refset, CONFIGS, seeds, work / "cache")
    return result


# -- report --------------------------------------------------------------------------------


def _fmt(v: float) -> str:
    return "n/a" if v is None or math.isnan(v) else f"{v:.2f}"


def _thirds(curve: list[float]) -> list[float]:
    inner, logits = curve[:-1], curve[-1]
    k = len(inner)
    cuts = [0, k // 3, 2 * k // 3, k]
    parts = [float(np.nanmean(inner[a:b])) if b > a else math.nan for a, b in pairwise(cuts)]
    return [*parts, logits]


def _summary_cell(result: Result, name: str) -> str:
    """``mean [mean low, mean high]`` over the prototypes the reference set could score."""
    return _cell(result.summary[name], result.intervals[name])


def _cell(values: list[float | None], intervals: list[tuple[float | None, float | None]]) -> str:
    kept = [(v, iv) for v, iv in zip(values, intervals, strict=True) if v is not None]
    if not kept:
        return "n/a"
    mean = float(np.mean([v for v, _ in kept]))
    ends = [iv for _, iv in kept if iv[0] is not None and iv[1] is not None]
    text = f"{mean:.2f}"
    if ends:
        text += f" [{np.mean([a for a, _ in ends]):.2f}, {np.mean([b for _, b in ends]):.2f}]"
    missing = len(values) - len(kept)
    return text + (f" ({missing} n/a)" if missing else "")


def _sd(values: list[float | None]) -> str:
    kept = [v for v in values if v is not None]
    return f"{statistics.pstdev(kept):.2f}" if len(kept) > 1 else "–"


def _unrelated_floor(result: Result) -> list[float] | None:
    """Per layer, the lowest unrelated photo's mean (NaN where none has a number), or None
    without the unrelated photos (ShapeNet)."""
    if not result.unrelated_curves:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return [float(v) for v in np.nanmin(np.array(result.unrelated_curves), axis=0)]


def table(result: Result) -> str:
    total = len(result.layers)
    lines = [
        f"**{result.model}** — " + "; ".join(result.notes),
        "",
        "| prototypes | path similarity [95% interval] | sd over prototypes | layers scored "
        "| early layers | middle | late | logits | layers below 0 | below every unrelated photo "
        "| p(target) | p under transforms | steps | time |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    floor = _unrelated_floor(result)
    for name in result.curves:
        values = result.summary[name]
        curve = result.curves[name]
        early, middle, late, logits = _thirds(curve)
        layers = np.mean(result.determinate[name])
        below = sum(1 for v in curve if v < 0)
        under = (
            "n/a"
            if floor is None
            else str(sum(1 for v, f in zip(curve, floor, strict=True) if v < f))
        )
        lines.append(
            f"| {name} | {_summary_cell(result, name)} | {_sd(values)} | {layers:.0f}/{total} "
            f"| {_fmt(early)} | {_fmt(middle)} | {_fmt(late)} | {_fmt(logits)} | {below} | {under} "
            f"| {result.probability[name]:.2f} "
            f"| {result.robust[name]:.2f} | {result.steps[name]} "
            f"| {result.generation_seconds[name]:.0f} s |"
        )
    naturals = (
        ("natural, held out (own class)", "same"),
        ("natural, held out (other classes)", "other"),
        ("natural, unrelated photos (as each class)", "unrelated"),
    )
    for label, key in naturals:
        if key not in result.natural:
            continue
        scores = result.natural[key]
        values = [s.path_similarity for s in scores]
        cell = _cell(values, [(s.summary.low, s.summary.high) for s in scores])
        layers = np.mean([s.summary.layers for s in scores])
        blanks = " |" * 10
        lines.append(f"| {label} | {cell} | {_sd(values)} | {layers:.0f}/{total} |{blanks}")
    return "\n".join(lines)


def layer_table(result: Result) -> str:
    names = list(result.curves)
    lines = [
        f"Per layer, {result.model} (normalised Spearman, mean over prototypes):",
        "",
        "| layer | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    spread = any(len(v) > 1 for v in result.seed_curves.values())
    if spread:
        lines[0] = lines[0].replace("):", "; ± sd of the per-seed means):")

    def cell(name: str, i: int) -> str:
        per_seed = [c[i] for c in result.seed_curves.get(name, [])]
        text = _fmt(result.curves[name][i])
        if spread and len(per_seed) > 1 and not any(math.isnan(v) for v in per_seed):
            text += f" ± {float(np.std(per_seed, ddof=1)):.2f}"
        return text

    unrelated = result.unrelated_curves
    if unrelated:  # a natural image that is not of the class's photo, layer by layer
        lines[2] += " natural, unrelated photos: mean [lowest, highest photo] |"
        lines[3] += "---|"

    def natural_cell(i: int) -> str:
        values = [c[i] for c in unrelated if not math.isnan(c[i])]
        if not values:
            return " n/a |"
        return f" {np.mean(values):.2f} [{min(values):.2f}, {max(values):.2f}] |"

    for i, layer in enumerate(result.layers):
        row = " | ".join(cell(n, i) for n in names)
        lines.append(f"| {layer} | {row} |" + (natural_cell(i) if unrelated else ""))
    means = {n: [float(np.nanmean(c)) for c in result.seed_curves.get(n, [])] for n in names}
    lines.append(
        "| mean over layers, per seed | "
        + " | ".join(" / ".join(f"{v:.2f}" for v in means[n]) or "n/a" for n in names)
        + " |"
        + (" |" if unrelated else "")
    )
    lines.append(
        "| generation time (no scoring) | "
        + " | ".join(f"{result.generation_seconds[n]:.0f} s" for n in names)
        + " |"
        + (" |" if unrelated else "")
    )
    return "\n".join(lines)


def plot(results: list[Result], path: Path) -> None:
    fig, axes = plt.subplots(1, len(results), figsize=(6.2 * len(results), 3.8), dpi=120)
    axes = np.atleast_1d(axes)
    colours = {"default": "tab:blue", "pixel": "tab:red", "lucent": "tab:orange"}
    extra = iter(["tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan"])
    for ax, result in zip(axes, results, strict=True):
        x = np.arange(len(result.layers))
        ax.axhline(1, color="tab:green", ls="--", lw=1, label="natural, same class (=1)")
        ax.axhline(0, color="grey", ls="--", lw=1, label="natural, other classes (=0)")
        for name, curve in result.curves.items():
            colour = colours.get(name) or colours.setdefault(name, next(extra, None))
            ax.plot(x, curve, "-o", ms=3, color=colour, label=name)
        ax.set_xticks(x, result.layers, rotation=75, fontsize=6)
        ax.set_ylabel("normalised Spearman similarity")
        ax.set_title(result.model, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and classes")
    parser.add_argument("--out", default=str(ROOT / "docs"), help="folder for the PNG and tables")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: on a small shared CPU more threads are slower)",
    )
    parser.add_argument("--skip-efficientnet", action="store_true")
    parser.add_argument("--skip-shapenet", action="store_true")
    parser.add_argument(
        "--classes", type=int, default=4, help="EfficientNet photo classes (1-4; default 4)"
    )
    parser.add_argument("--seeds", type=int, default=1, help="EfficientNet seeds per class")
    parser.add_argument(
        "--configs",
        default="",
        help="comma-separated configs to run on EfficientNet (default: all of "
        + ", ".join(CONFIGS)
        + ")",
    )
    parser.add_argument(
        "--bn-prior",
        type=float,
        action="append",
        default=[],
        metavar="W",
        help="also run the default config with this BatchNorm-statistics prior weight "
        "(repeatable): the data-free activation prior DESIGN.md asks to measure",
    )
    parser.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="FIELD=VALUE[,FIELD=VALUE]",
        help="also run the default config with these changes (repeatable), e.g. "
        "--also fourier_decay=2",
    )
    args = parser.parse_args(argv)
    for changes in args.also:
        typed = GenerationConfig.parse_changes(changes.split(","))
        CONFIGS[f"default + {changes}"] = CONFIGS["default"].replace(**typed)
    for weight in args.bn_prior:
        CONFIGS[f"default + bn_prior {weight:g}"] = CONFIGS["default"].replace(bn_prior=weight)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        results = [] if args.skip_shapenet else [run_shapenet(args.quick, work)]
        if not args.skip_efficientnet:
            configs = [c.strip() for c in args.configs.split(",") if c.strip()] or None
            if configs is not None:
                configs += [f"default + {a}" for a in args.also]
            results.insert(0, run_efficientnet(args.quick, work, args.classes, args.seeds, configs))
    command = "python bench/eval_path_similarity.py" + (" --quick" if args.quick else "")
    skips = (
        ("--skip-shapenet", args.skip_shapenet),
        ("--skip-efficientnet", args.skip_efficientnet),
    )
    command += "".join(f" {flag}" for flag, on in skips if on)
    if not args.skip_efficientnet:
        command += f" --classes {args.classes} --seeds {args.seeds}"
        if args.configs:
            command += f" --configs '{args.configs}'"
    command += "".join(f" --bn-prior {w:g}" for w in args.bn_prior)
    command += "".join(f" --also {a}" for a in args.also)
    report = [
        f"Generated by `{command}` in {time.perf_counter() - started:.0f} s "
        f"(torch {torch.__version__}, {args.threads} thread(s)).",
        "",
    ]
    for r in results:
        report += [table(r), ""]
    for r in results:
        report += [layer_table(r), ""]
    text = "\n".join(report)
    out.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if args.quick else ""
    (out / f"path_similarity_results{suffix}.md").write_text(text)
    plot(results, out / f"path_similarity{suffix}.png")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
