#!/usr/bin/env python3
"""Does a *second* prototype, made once the first one's evidence is explained away, show
a fine-structure shortcut that the first does not? Measured, not adopted.

    python bench/shortcut_explain_away.py stripes-cnnbn-spec
    python bench/shortcut_explain_away.py glyph-cnn-model --share 0.8 --seeds 0 1

A prototype shows the strongest evidence its class can reach, and on the suite's stripes
and glyph models that is not the shortcut, though the models rely on it
(``bench/shortcut_strength.py``). If the shortcut is the class's *second* strongest
evidence, taking the first away should leave it to the next prototype. So, per class: the
default prototype P1; the head's input features (the last ``nn.Linear``'s) that carry
the top ``--share`` of P1's positive evidence for the class (weight times feature,
largest first); then P2, default settings, on a copy of the model with those features
zeroed. The suite's engine-free detector judges the ten P1s, the ten P2s and, per class,
the higher of the two (as if a caller looked at both).

Models come from the suite's cache (``$PROTOLENS_CACHE_DIR/shortcut_suite``), trained
there if missing; each model is rebuilt eagerly from its exported weights so the head's
input can be edited. CPU, one thread.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch
from torch import nn

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from protolens_server.engine import GenerationConfig, generate  # noqa: E402
from protolens_server.models.registry import load_path  # noqa: E402
from shortcut_suite import CASES  # noqa: E402
from shortcuts import data, detectors, models  # noqa: E402
from shortcuts.train import ensure  # noqa: E402


def eager(case: object) -> tuple[nn.Module, nn.Linear]:
    """The case's network rebuilt from its exported weights, and its head (last Linear)."""
    recipe = case.model  # type: ignore[attr-defined]
    program = torch.export.load(str(ensure(recipe).path))
    net = models.build(recipe.arch, recipe.norm, len(data.CLASSES), width=recipe.width)
    net.load_state_dict(program.state_dict, strict=False)
    net.eval().requires_grad_(False)
    head = [m for m in net.modules() if isinstance(m, nn.Linear)][-1]
    return net, head


def evidence_mask(features: torch.Tensor, weight: torch.Tensor, share: float) -> torch.Tensor:
    """1 everywhere but on the features that carry the top ``share`` of the positive
    evidence ``weight * features`` (largest first), which are 0."""
    positive = (weight * features).clamp_min(0)
    order = torch.argsort(positive, descending=True)
    cumulative = torch.cumsum(positive[order], 0) / positive.sum().clamp_min(1e-12)
    k = int((cumulative < share).sum()) + 1
    mask = torch.ones_like(features)
    mask[order[:k]] = 0
    return mask


class HeadInputMasked(nn.Module):
    """``net`` with its head's input multiplied by ``mask`` (a forward pre-hook)."""

    def __init__(self, net: nn.Module, head: nn.Linear, mask: torch.Tensor) -> None:
        super().__init__()
        self.net = net
        self.mask = mask
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hook = self.head.register_forward_pre_hook(lambda _m, args: (args[0] * self.mask,))
        try:
            return self.net(x)
        finally:
            hook.remove()


def head_input(net: nn.Module, head: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    seen: list[torch.Tensor] = []
    hook = head.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    try:
        net(x)
    finally:
        hook.remove()
    return seen[0]


def run(case: object, share: float, seed: int) -> None:
    handle = load_path(ensure(case.model).path)  # type: ignore[attr-defined]
    net, head = eager(case)
    spec = handle.input_spec
    kind, target = case.kind, data.TARGETS[case.kind]  # type: ignore[attr-defined]
    config = GenerationConfig()
    started = time.perf_counter()
    first = generate(handle, list(range(handle.num_classes)), config, seed=seed)
    second = []
    ablated = []
    for p in first:
        c = p.target.classes[0]
        features = head_input(net, head, spec.normalise(p.image[None]))[0]
        mask = evidence_mask(features, head.weight[c], share)
        ablated.append(int((mask == 0).sum()))
        edited = dataclasses.replace(
            handle,
            module=HeadInputMasked(net, head, mask).eval(),
            format="eager",
            program=None,
            digest=f"{handle.digest}-explain-away-{c}-{share}",
        )
        second += generate(edited, [c], config, seed=seed)
    seconds = time.perf_counter() - started
    s1 = {p.target.classes[0]: detectors.class_score(kind, p.image[None]) for p in first}
    s2 = {p.target.classes[0]: detectors.class_score(kind, p.image[None]) for p in second}
    both = {c: max(s1[c], s2[c]) for c in s1}
    print(
        f"{case.name} seed {seed}, share {share}: {seconds:.0f} s; features zeroed per class "  # type: ignore[attr-defined]
        f"{ablated} of {head.in_features}; P2 p(target) {[round(p.probability, 2) for p in second]}"
    )
    for label, scores in (("P1", s1), ("P2", s2), ("max(P1, P2)", both)):
        verdict = detectors.decide(kind, scores, target)
        print(
            f"  {label}: lead {verdict['lead']:+.3f} / {verdict['margin']} -> "
            f"{'revealed' if verdict['revealed'] else 'not revealed'}"
        )


def main() -> None:
    shortcut_cases = [c.name for c in CASES if c.kind]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("cases", nargs="+", choices=shortcut_cases)
    p.add_argument("--share", type=float, default=0.5, help="evidence share to zero (0.5)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = p.parse_args()
    torch.set_num_threads(1)
    for name in args.cases:
        case = next(c for c in CASES if c.name == name)
        for seed in args.seeds:
            run(case, args.share, seed)


if __name__ == "__main__":
    main()
