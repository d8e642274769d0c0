#!/usr/bin/env python3
"""Does a *patch* prototype, a small square the model sees pasted on a neutral canvas,
show a fine-structure shortcut that the whole-image prototype does not? Measured, not adopted.

    python bench/shortcut_patch.py stripes-cnnbn-spec
    python bench/shortcut_patch.py glyph-cnn-model --grey

A whole-image prototype shows the strongest evidence it can reach, and on the suite's
stripes and glyph models that is not the shortcut (``bench/shortcut_strength.py``). The
common real shortcuts (a ruler beside a lesion, a marker token on an X-ray, a watermark)
are small and local, so a prototype confined to a small area might have to use them.
The engine optimises a ``--patch``-pixel square (default 3/8 of the input side: the
stripes window on the suite's 32-pixel images) against a module that pastes it, at
``--placements`` fixed places spread over a canvas of the model's mean colour, and
averages the model's logits over the places; ``--grey`` makes the patch grey (the planted
shortcuts are black and white). Default generation settings otherwise.

Prints the model's probability of each class on its patch (at the centre of the mean-colour
canvas), the same for the pure planted shortcut pasted there, and the suite's engine-free
detector's verdict on the ten patches (each at the canvas's centre). Models come from the
suite's cache (``$PROTOLENS_CACHE_DIR/shortcut_suite``), trained there if missing. CPU, one
thread, seed 0.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from protolens_server.engine import Classifier, GenerationConfig, InputSpec, generate  # noqa: E402
from protolens_server.models.registry import load_path  # noqa: E402
from shortcut_suite import CASES  # noqa: E402
from shortcuts import data, detectors  # noqa: E402
from shortcuts.train import ensure  # noqa: E402


def on_canvas(
    patches: torch.Tensor, size: int, mean: torch.Tensor, at: tuple[int, int]
) -> torch.Tensor:
    """(N, 3, k, k) patches in [0, 1] pasted at ``at`` (top, left) on mean-colour canvases."""
    n, _, k, _ = patches.shape
    canvas = mean.view(1, 3, 1, 1).expand(n, 3, size, size).clone()
    top, left = at
    canvas[:, :, top : top + k, left : left + k] = patches
    return canvas


def places(size: int, k: int, count: int) -> list[tuple[int, int]]:
    """``count`` (top, left) places on a square grid spread over the canvas, centre first."""
    centre = (size - k) // 2
    side = max(1, round(count**0.5))
    steps = [round(i * (size - k) / (side - 1)) for i in range(side)] if side > 1 else [centre]
    grid = [(y, x) for y in steps for x in steps if (y, x) != (centre, centre)]
    return [(centre, centre), *grid][:count]


class PatchOnCanvas(nn.Module):
    """Per class: the model's logits averaged over the patch's places on the canvas. Takes
    patches in [0, 1] and normalises the canvases by the model's spec."""

    def __init__(self, handle: object, k: int, count: int, grey: bool) -> None:
        super().__init__()
        self.model, self.spec = handle.module, handle.input_spec  # type: ignore[attr-defined]
        self.size, self.grey = self.spec.height, grey
        self.places = places(self.size, k, count)
        self.register_buffer("mean", torch.tensor(self.spec.mean).expand(3).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.grey:
            x = x.mean(1, keepdim=True).expand_as(x)
        canvases = torch.cat([on_canvas(x, self.size, self.mean, at) for at in self.places])
        logits = self.model(self.spec.normalise(canvases)).float()
        return logits.view(len(self.places), x.shape[0], -1).mean(0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("case", choices=[c.name for c in CASES if c.kind in ("stripes", "glyph")])
    p.add_argument("--patch", type=int, default=0, help="side in pixels (default 3/8 of the input)")
    p.add_argument("--placements", type=int, default=5)
    p.add_argument("--grey", action="store_true")
    p.add_argument("changes", nargs="*", metavar="FIELD=VALUE", help="GenerationConfig changes")
    args = p.parse_args()
    torch.set_num_threads(1)
    case = next(c for c in CASES if c.name == args.case)
    handle = load_path(ensure(case.model).path)
    size = handle.input_spec.height
    k = args.patch or round(size * 3 / 8)
    module = PatchOnCanvas(handle, k, args.placements, args.grey)
    spec = InputSpec(3, k, k, (0.0,), (1.0,))  # the module normalises
    started = time.perf_counter()
    config = GenerationConfig().replace(**GenerationConfig.parse_changes(args.changes))
    protos = generate(Classifier(module, spec, handle.num_classes), list(range(10)), config, seed=0)
    seconds = time.perf_counter() - started
    patches = torch.stack([q.image for q in protos])
    if args.grey:
        patches = patches.mean(1, keepdim=True).expand_as(patches)
    centre = places(size, k, 1)[0]
    shown = on_canvas(patches, size, module.mean, centre)
    kind, target = case.kind, data.TARGETS[case.kind]
    planted = data.stripes(0) if kind == "stripes" else data.glyph_tile().expand(3, -1, -1)
    pure = on_canvas(planted[None], size, module.mean, places(size, planted.shape[-1], 1)[0])
    with torch.no_grad():
        p_patch = torch.softmax(handle.module(handle.input_spec.normalise(shown)), 1).diagonal()
        p_pure = torch.softmax(handle.module(handle.input_spec.normalise(pure)), 1)[0, target]
    scores = {c: detectors.class_score(kind, shown[c : c + 1]) for c in range(len(shown))}
    verdict = detectors.decide(kind, scores, target)
    what = f"{k}-px {'grey ' if args.grey else ''}patch {' '.join(args.changes)}".strip()
    print(f"{case.name}, {what}: {seconds:.0f} s, lr {protos[0].lr}")
    print(f"  steps {[q.steps for q in protos]}")
    print(f"  p(class) on its patch {[round(float(v), 2) for v in p_patch]}")
    print(f"  p(class {target}) on the pure planted shortcut at the centre: {float(p_pure):.2f}")
    print(detectors.describe(scores, verdict, target))


if __name__ == "__main__":
    main()
