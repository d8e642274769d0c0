"""How far a class's prototypes moved between two model versions.

- *drift*: the old and new prototypes are both run through the NEW model and
  their activations compared layer by layer (Spearman over the channels of the
  spatially averaged activations, SCORES' capture). As with path similarity,
  each layer's similarity is normalised against a natural scale: 1 = the same
  as the new prototype itself, 0 = as similar as the new prototypes of *other*
  classes are to it. ``drift = 1 - mean normalised similarity`` (0: unchanged;
  1: the old prototype now looks like another class; above 1: even less alike).
  With a single class checked there is no other class to scale by and the raw
  Spearman similarity is used.
- *cross-scoring*: each version's prototype classified by the other model
  (target probability): a new model that no longer recognises what the old one
  looked for, or an old model that does not recognise the new prototype, means
  the class now rests on different evidence.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from protolens_server.engine._activations import capture, resolve_layers, run_model
from protolens_server.engine._scores import spearman

_EPS = 1e-6


@dataclass
class Drift:
    drift: float
    layers: dict[str, float]  # layer -> normalised similarity of old vs new prototypes


def _sim(a: torch.Tensor, b: torch.Tensor) -> float | None:
    v = float(spearman(a, b))
    return v if v == v else None  # constant vectors give NaN


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def drifts(
    model: Any, old: Mapping[int, torch.Tensor], new: Mapping[int, torch.Tensor]
) -> dict[int, Drift]:
    """Drift per class (classes present in both), measured in ``model`` (the new version)."""
    classes = sorted(set(old) & set(new))
    layer_set = resolve_layers(model)
    n = {c: min(old[c].shape[0], new[c].shape[0]) for c in classes}
    batch = torch.cat([old[c][: n[c]] for c in classes] + [new[c][: n[c]] for c in classes])
    acts = capture(model, batch, layer_set)
    offsets, at = {}, 0
    for c in classes:
        offsets[c] = at
        at += n[c]
    half = at
    out = {}
    for c in classes:
        layers: dict[str, float] = {}
        for name in layer_set.names:
            a = acts[name].float()
            olds = [a[offsets[c] + i] for i in range(n[c])]
            news = [a[half + offsets[c] + i] for i in range(n[c])]
            raw = _mean([_sim(o, w) for o, w in zip(olds, news, strict=True)])
            others = [
                _sim(a[half + offsets[d] + j], w)
                for d in classes
                if d != c
                for j in range(n[d])
                for w in news
            ]
            other = _mean(others)
            if raw is None:
                layers[name] = 0.0
            elif other is None or 1.0 - other < _EPS:
                layers[name] = raw
            else:
                layers[name] = (raw - other) / (1.0 - other)
        mean = sum(layers.values()) / len(layers)
        out[c] = Drift(drift=max(0.0, 1.0 - mean), layers=layers)
    return out


def probabilities(model: Any, images: torch.Tensor) -> torch.Tensor:
    """Softmax over classes for a batch in [0, 1] image space: (B, K)."""
    x = model.input_spec.normalise(images.float())
    return torch.softmax(run_model(model, x).float(), dim=1)


def target_probability(model: Any, images: torch.Tensor, cls: int) -> float:
    return float(probabilities(model, images)[:, cls].mean())
