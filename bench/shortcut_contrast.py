#!/usr/bin/env python3
"""Does a *contrast* prototype, optimised against the shortcut model and its twin, show the
planted shortcut? A measured idea for the check's "what changed" view, not adopted.

    python bench/shortcut_contrast.py stripes-cnnbn-spec
    python bench/shortcut_contrast.py glyph-cnnbn-spec --objective ratio

The class prototypes of a shortcut model need not show the shortcut: the model may reach
more for the class without it (stripes, glyph: ``bench/shortcut_strength.py``). A prototype
of what the new version responds to *and its twin does not* might: the engine optimises
one image against a module whose "logits" are, per class k,

- ``not-twin``: log p_new(k) + log(1 - p_twin(k)) (the new model says k, the twin does not;
  bounded: the twin's probability need only fall, not vanish);
- ``ratio``: log p_new(k) - log p_twin(k) (unbounded: the log-likelihood ratio).

with the default generation settings, and the suite's engine-free detector scores the
ten contrast prototypes. Prints both models' probabilities of each class on its contrast
prototype and the detector's verdict. Models come from the suite's cache
(``$PROTOLENS_CACHE_DIR/shortcut_suite``), trained there if missing. CPU, one thread, seed 0.
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


class Contrast(nn.Module):
    """Per class: how much more the new model says it than the twin (see the module doc).
    Takes images in [0, 1] and normalises them for each model by its own spec."""

    def __init__(self, new: object, twin: object, objective: str) -> None:
        super().__init__()
        self.new, self.twin = new.module, twin.module  # type: ignore[attr-defined]
        self.new_spec, self.twin_spec = new.input_spec, twin.input_spec  # type: ignore[attr-defined]
        self.objective = objective

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        new = torch.log_softmax(self.new(self.new_spec.normalise(x)).float(), dim=1)
        twin = torch.log_softmax(self.twin(self.twin_spec.normalise(x)).float(), dim=1)
        if self.objective == "ratio":
            return new - twin
        return new + torch.log1p(-twin.exp().clamp(max=1 - 1e-6))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("case", choices=[c.name for c in CASES if c.kind])
    p.add_argument("--objective", choices=("not-twin", "ratio"), default="not-twin")
    args = p.parse_args()
    torch.set_num_threads(1)
    case = next(c for c in CASES if c.name == args.case)
    new, twin = load_path(ensure(case.model).path), load_path(ensure(case.twin).path)
    c, h, w = new.input_spec.shape
    identity = InputSpec(c, h, w, (0.0,), (1.0,))  # the module normalises per model
    contrast = Classifier(Contrast(new, twin, args.objective), identity, new.num_classes)
    started = time.perf_counter()
    protos = generate(contrast, list(range(new.num_classes)), GenerationConfig(), seed=0)
    seconds = time.perf_counter() - started
    images = torch.stack([p.image for p in protos])
    with torch.no_grad():
        p_new = torch.softmax(new.module(new.input_spec.normalise(images)), 1).diagonal()
        p_twin = torch.softmax(twin.module(twin.input_spec.normalise(images)), 1).diagonal()
    kind, target = case.kind, data.TARGETS[case.kind]
    scores = {p.target.classes[0]: detectors.class_score(kind, p.image[None]) for p in protos}
    verdict = detectors.decide(kind, scores, target)
    print(f"{case.name}, contrast {args.objective}: {seconds:.0f} s, lr {protos[0].lr}")
    print(f"  p_new(class) {[round(float(v), 2) for v in p_new]}")
    print(f"  p_twin(class) {[round(float(v), 2) for v in p_twin]}")
    print(detectors.describe(scores, verdict, target))


if __name__ == "__main__":
    main()
