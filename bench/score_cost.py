"""What the scores' bootstrap costs, next to what scoring cost before it.

Measured on efficientnet_lite0 (built in) with the scikit-image reference set the
evaluation uses (4 photos x 12 crops, 21 layers), then on synthetic activations to
show how the per-class bootstrap grows with the reference set (N images, C channels):

- reference forward pass: every reference image through the model (once per model
  and reference set; cached in memory and on disk);
- reference statistics: class means and natural levels (+ drawing the resamples);
- per-class bootstrap: the class mean and both natural levels in each of the 200
  resamples, for every layer and metric (once per class, when a prototype of it is
  first scored; kept with the statistics);
- one prototype: its forward pass and scores against the cached statistics, with the
  class's bootstrap levels already there (every later prototype of that class; the
  resampled means are recomputed per call), and in a new process that read the
  statistics (bootstrap levels included) from their disk file;
- robustness: 16 transformed forward passes (unchanged by this work, for scale).

Run: ``python bench/score_cost.py`` (about a minute on a 2-core CPU); ``--threads``.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from protolens_server.engine import (  # noqa: E402
    GenerationConfig,
    Prototype,
    ReferenceStats,
    Target,
    capture,
    layers_of,
    reference_stats,
    score,
    score_activations,
)
from protolens_server.scores.references import ReferenceSet, load_images  # noqa: E402


def timed(fn: Callable[[], object], repeats: int = 1) -> tuple[float, object]:
    """Best wall time of ``repeats`` runs (seconds) and the last result."""
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def efficientnet(work: Path) -> list[tuple[str, float]]:
    import bench_scores
    from protolens_server.models import load_model

    handle = load_model("efficientnet_lite0")
    folder = bench_scores.reference_folder(handle, work / "refs")
    refset = ReferenceSet.from_folder(folder, handle.class_names)
    images, labels = load_images(refset, handle.input_spec)
    layer_set = layers_of(handle)
    t_forward, acts = timed(lambda: capture(handle, images, layer_set))
    t_stats, stats = timed(lambda: reference_stats(acts, labels))
    cls = int(labels[0])
    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, 224, 224, generator=g)
    proto = Prototype(
        image=image,
        target=Target.of(cls),
        index=0,
        probability=0.0,
        logit=0.0,
        top5=[],
        steps=0,
        seed=1,
        config=GenerationConfig(),
    )
    t_first, _ = timed(lambda: score(handle, [proto], stats, robustness_samples=0))
    t_next, _ = timed(lambda: score(handle, [proto], stats, robustness_samples=0), repeats=3)
    t_robust, _ = timed(lambda: score(handle, [proto], stats, robustness_samples=16))
    restored = ReferenceStats.from_state(stats.to_state())  # a new process, from the disk file
    t_disk, _ = timed(lambda: score(handle, [proto], restored, robustness_samples=0))
    t_plain, _ = timed(lambda: capture(handle, image[None], layer_set), repeats=3)
    widths = [int(acts[n].shape[1]) for n in layer_set.names]
    print(
        f"efficientnet_lite0: {len(labels)} reference images, {len(set(labels.tolist()))} "
        f"classes, {len(widths)} layers, {sum(widths)} channels in all",
        flush=True,
    )
    return [
        ("reference forward pass (48 images)", t_forward),
        ("reference statistics (means, levels, resamples)", t_stats),
        ("per-class bootstrap, first prototype of a class", t_first - t_next),
        ("one prototype: forward + scores (class bootstrap levels cached)", t_next),
        ("first prototype of a class in a new process (bootstrap levels on disk)", t_disk),
        ("of which the prototype's forward pass", t_plain),
        ("robustness, 16 transformed forward passes (unchanged, for scale)", t_robust - t_next),
    ]


def scaling() -> list[tuple[str, float]]:
    """The per-class bootstrap for one layer of C channels as the reference set grows."""
    rows = []
    g = torch.Generator().manual_seed(0)
    for classes, per_class, channels in ((4, 12, 1280), (10, 20, 1280), (20, 50, 1280)):
        labels = torch.arange(classes).repeat_interleave(per_class)
        centres = torch.randn(classes, channels, generator=g)
        x = centres[labels] + torch.randn(labels.numel(), channels, generator=g)
        stats = reference_stats({"layer": x}, labels)
        item = {"layer": x[:1]}
        t, _ = timed(lambda stats=stats, item=item: score_activations(item, [0], stats))
        rows.append((f"per-class bootstrap, N={labels.numel()} images, C={channels}, 1 layer", t))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-efficientnet", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_efficientnet:
            rows += efficientnet(Path(tmp))
    rows += scaling()
    print(
        f"\n{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{args.threads} thread(s), 200 resamples\n"
    )
    print("| step | seconds |\n|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.3f} |")
    assert np.isfinite([s for _, s in rows]).all()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
