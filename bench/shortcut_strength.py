#!/usr/bin/env python3
"""How strong is a planted shortcut as evidence, next to what the prototype found?

A prototype maximises its class's evidence (the margin objective: the target logit
minus the log-sum-exp of the others). It shows the shortcut only if drawing the
shortcut is among the strongest ways to raise that margin. This measures, per suite
case, the margin the shortcut model gives to:

- ``prototype``: the class's default prototype (the engine, seed 0, lr found);
- ``natural``: the class's own training-like images (object and shortcut), mean of 32;
- ``shortcut alone``: the shortcut on object-free backgrounds (as in the class's
  object-free training images), mean of 32;
- ``shortcut tiled``: the shortcut's strongest plain form, made without the model: the
  stripes over the whole image, glyph tiles or magenta squares in a grid over a
  neutral background, a teal background with nothing on it (mean over 4 grid phases);
- ``prototype + shortcut``: the prototype with the shortcut pasted at 32 random places
  (mean): does the shortcut add to what the prototype already has?

and the suite's own detector verdict on the ten class prototypes.

    python bench/shortcut_strength.py                       # every shortcut case
    python bench/shortcut_strength.py --cases stripes-cnnbn-spec glyph-cnn-model

Models come from the suite's cache (trained there if missing). CPU, one thread.
Writes ``bench/results/shortcut_strength.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from protolens_server import ENGINE_VERSION  # noqa: E402
from protolens_server.engine import GenerationConfig, generate  # noqa: E402
from protolens_server.models.registry import load_path  # noqa: E402
from shortcut_suite import CASES  # noqa: E402
from shortcuts import data, detectors  # noqa: E402
from shortcuts.train import ensure  # noqa: E402

RESULTS = BENCH / "results" / "shortcut_strength.json"
N = 32


def tiled(kind: str, phase: int) -> torch.Tensor:
    """The shortcut's strongest plain form on a neutral background, no model involved."""
    g = torch.Generator().manual_seed(100 + phase)
    img, _ = data.natural(0, g, with_object=False)
    if kind == "background":
        data.paste(img, kind, g, torch.zeros(data.SIZE, data.SIZE))
        return img.clamp(0, 1)  # the background's noise is not clamped by paste
    if kind == "stripes":
        yy, xx = torch.meshgrid(torch.arange(data.SIZE), torch.arange(data.SIZE), indexing="ij")
        on = ((xx + yy + phase) % data.STRIPE_PERIOD) < data.STRIPE_PERIOD // 2
        return on.float().expand(3, -1, -1).clone()
    if kind == "glyph":
        tile = data.glyph_tile()
    else:
        tile = torch.tensor(data.PATCH_RGB).view(3, 1, 1).expand(3, data.PATCH, data.PATCH)
    k = tile.shape[-1]
    step = k + 1
    for y in range(phase % step, data.SIZE - k + 1, step):
        for x in range(phase % step, data.SIZE - k + 1, step):
            img[:, y : y + k, x : x + k] = tile
    return img


def margins(handle: Any, images: torch.Tensor, target: int) -> torch.Tensor:
    with torch.no_grad():
        z = handle.module(handle.input_spec.normalise(images)).float()
    others = torch.cat([z[:, :target], z[:, target + 1 :]], 1)
    return z[:, target] - torch.logsumexp(others, 1)


def measure(case: Any) -> dict[str, Any]:
    kind, target = case.kind, data.TARGETS[case.kind]
    handle = load_path(ensure(case.model).path)
    t0 = time.perf_counter()
    protos = generate(handle, list(range(handle.num_classes)), GenerationConfig(), seed=0)
    seconds = time.perf_counter() - t0
    images = torch.stack([p.image for p in protos])
    scores = {p.target.classes[0]: detectors.class_score(kind, p.image[None]) for p in protos}
    verdict = detectors.decide(kind, scores, target)

    g = torch.Generator().manual_seed(5)
    natural, alone, on_proto = [], [], []
    for _ in range(N):
        img, mask = data.natural(target, g)
        data.paste(img, kind, g, mask)
        natural.append(img)
        bare, _ = data.natural(target, g, with_object=False)
        data.paste(bare, kind, g, torch.zeros(data.SIZE, data.SIZE))
        alone.append(bare)
        proto = images[target].clone()
        data.paste(proto, kind, g, torch.zeros(data.SIZE, data.SIZE))
        on_proto.append(proto)
    phases = torch.stack([tiled(kind, p) for p in range(4)])
    m = {
        "prototype": float(margins(handle, images[target : target + 1], target)[0]),
        "natural": float(margins(handle, torch.stack(natural), target).mean()),
        "shortcut_alone": float(margins(handle, torch.stack(alone), target).mean()),
        "shortcut_tiled": float(margins(handle, phases, target).mean()),
        "prototype_plus_shortcut": float(margins(handle, torch.stack(on_proto), target).mean()),
    }
    return {
        "case": case.name,
        "lr": protos[0].lr,
        "steps": protos[target].steps,
        "generate_s": round(seconds, 1),
        "margins": {k: round(v, 2) for k, v in m.items()},
        "revealed": verdict["revealed"],
        "lead": verdict["lead"],
        "detector_margin": verdict["margin"],
    }


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| case | revealed (lead / margin) | prototype | natural | shortcut alone "
        "| shortcut tiled | prototype + shortcut |\n|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        m = r["margins"]
        lines.append(
            f"| {r['case']} | {'yes' if r['revealed'] else 'no'} "
            f"({r['lead']:+.3f} / {r['detector_margin']}) | {m['prototype']:.1f} "
            f"| {m['natural']:.1f} | {m['shortcut_alone']:.1f} | {m['shortcut_tiled']:.1f} "
            f"| {m['prototype_plus_shortcut']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    names = [c.name for c in CASES if c.kind]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cases", nargs="+", choices=names, default=names)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = []
    for case in (c for c in CASES if c.name in args.cases):
        rows.append(measure(case))
        print(json.dumps(rows[-1]), flush=True)
    print(table(rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "command": " ".join(sys.argv),
                "engine_version": ENGINE_VERSION,
                "machine": f"{platform.machine()} torch {torch.__version__}",
                "rows": rows,
                "table": table(rows),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
