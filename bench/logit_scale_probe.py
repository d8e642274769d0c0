#!/usr/bin/env python3
"""Do a model's prototypes depend on its temperature? (engine/_logit_scale.py)

For one model (a built-in name or a model file), the same classifier with its logits
multiplied by each ``--scales`` factor: its default prototypes of ``--targets`` (seed 0),
judged by the model at its own scale (``p own``: a prototype of the tempered model should
be one of the model itself), their fine structure (mean absolute difference of vertical
neighbours, in [0, 1] pixels) against the scale-1 prototypes', the rate the finder chose
and the penalty unit. Engine 0.3.7 (penalties in absolute units) is the before: run the
same script with an older engine first on the path (it then prints no spread or unit):

    python bench/logit_scale_probe.py efficientnet_lite0 --targets 281,967 --scales 0.05,1
    python bench/logit_scale_probe.py MODEL.pt2 --targets 2,5,8 --scales 0.02,0.1,1
    git worktree add /tmp/engine-0.3.7 b5d5094
    PYTHONPATH=/tmp/engine-0.3.7/server python bench/logit_scale_probe.py MODEL.pt2 ...

CPU, one thread (``--threads``). Prints one markdown table; ``--json-out`` keeps the rows.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from protolens_server import ENGINE_VERSION, engine
from protolens_server.engine import Classifier, GenerationConfig, generate
from protolens_server.models import load_model
from torch import nn


class Tempered(nn.Module):
    """``forward``'s logits times ``scale``."""

    def __init__(self, forward: Any, scale: float) -> None:
        super().__init__()
        self.forward_, self.scale = forward, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_(x) * self.scale


def fine_structure(images: torch.Tensor) -> float:
    return float((images[..., 1:, :] - images[..., :-1, :]).abs().mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--targets", default="1,2", help="comma-separated class indices")
    ap.add_argument("--scales", default="0.01,0.1,1", help="comma-separated logit factors")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    spread_of = getattr(engine, "logit_spread", None)  # engine 0.3.8 on
    handle = load_model(args.model)
    targets = [int(t) for t in args.targets.split(",")]
    scales = [float(s) for s in args.scales.split(",")]
    rows: list[dict[str, Any]] = []
    reference: float | None = None
    for scale in sorted(scales, reverse=True):  # scale 1 (if asked) first: the reference
        model = Classifier(
            Tempered(handle.module, scale).eval(), handle.input_spec, handle.num_classes
        )
        spread = spread_of(model) if spread_of else float("nan")
        t0 = time.perf_counter()
        protos = generate(model, targets, GenerationConfig(), seed=0)
        seconds = time.perf_counter() - t0
        images = torch.stack([p.image for p in protos])
        with torch.no_grad():
            own = torch.softmax(handle.module(handle.input_spec.normalise(images)).float(), -1)
        fine = fine_structure(images)
        if scale == 1.0:
            reference = fine
        rows.append(
            {
                "scale": scale,
                "spread": spread,
                "unit": engine.penalty_unit(spread) if spread_of else 1.0,
                "lr": protos[0].lr,
                "p": [round(p.probability, 3) for p in protos],
                "top1": [p.top5[0][0] for p in protos],
                "p_own": [round(float(own[i, t]), 3) for i, t in enumerate(targets)],
                "fine": fine,
                "steps": [p.steps for p in protos],
                "seconds": round(seconds, 1),
            }
        )
    mode = ENGINE_VERSION + ("" if spread_of else " (penalties in absolute units)")
    print(f"{args.model}, targets {targets}, engine {mode}\n")
    print(
        "| logit scale | spread | penalty unit | lr found | p (tempered) | top-1 | p own"
        " | fine structure (vs scale 1) | steps | time |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: r["scale"]):
        ratio = f" ({r['fine'] / reference:.2f}x)" if reference else ""
        print(
            f"| {r['scale']:g} | {r['spread']:.3g} | {r['unit']:.3g} | {r['lr']:.3g} | "
            f"{' / '.join(map(str, r['p']))} | {' / '.join(map(str, r['top1']))} | "
            f"{' / '.join(map(str, r['p_own']))} | {r['fine']:.3f}{ratio} | "
            f"{' / '.join(map(str, r['steps']))} | {r['seconds']} s |"
        )
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(
            json.dumps({"model": args.model, "engine": mode, "rows": rows}, indent=1)
        )


if __name__ == "__main__":
    main()
