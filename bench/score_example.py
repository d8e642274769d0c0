"""The worked example in docs/scores.md: one prototype's scores, layer by layer.

Trains ShapeNet (tests/scores/scores_synthetic.py, a few seconds), writes 16
natural images per class as the reference set, generates one default prototype of
"ring" and prints, per layer, the Spearman levels, the gap and its z, the
prototype's similarity, its normalised value with the 95% interval (or the reason
there is none), then the headline. Run: ``python bench/score_example.py``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "scores"))

import scores_synthetic as synth  # noqa: E402
from protolens_server.engine import REASONS, GenerationConfig, generate  # noqa: E402
from protolens_server.scores.scoring import score_prototypes  # noqa: E402

RING = 2


def _f(v: float | None, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def main() -> int:
    torch.set_num_threads(1)
    net, _ = synth.train_shapenet(per_class=200, epochs=10, seed=0)
    handle = synth.handle_for(net, net)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "refs"
        images, labels = synth.make_dataset(16, seed=1234)
        for i, (image, label) in enumerate(zip(images, labels.tolist(), strict=True)):
            synth.write_png(image, root / str(label) / f"{i:03d}.png")
        (proto,) = generate(handle, [RING], GenerationConfig(), seed=0)
        (s,) = score_prototypes(handle, [proto], root, cache_dir=Path(tmp) / "cache")
    print(f"ShapeNet, class {RING} (ring), p={proto.probability:.3f}; 10 classes x 16 images\n")
    print(
        "| layer | natural same | natural other | gap | z | prototype | normalised [95% interval] |"
    )
    print("|---|---|---|---|---|---|---|")
    for layer in s.layers:
        m = layer.spearman
        gap = (
            None if None in (m.natural_same, m.natural_other) else m.natural_same - m.natural_other
        )
        if m.normalised is None:
            cell = f"none: {m.reason}"
        else:
            cell = f"{m.normalised:.2f} [{m.normalised_low:.2f}, {m.normalised_high:.2f}]"
        print(
            f"| {layer.name} | {_f(m.natural_same)} | {_f(m.natural_other)} | {_f(gap)} "
            f"| {_f(m.span_z, 1)} | {_f(m.value)} | {cell} |"
        )
    print(f"\npath similarity: {s.summary_text()}")
    for code in sorted({layer.spearman.reason for layer in s.layers} - {""}):
        print(f"{code}: {REASONS[code]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
