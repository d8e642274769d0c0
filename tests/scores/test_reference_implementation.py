"""The product agrees with an independent numpy implementation (numpy_scores.py) on random
activations: levels, normalised values, reasons, intervals, the summary and its interval."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from numpy_scores import Reference, summary
from protolens_server.engine import METRICS, reference_stats, score_activations

CLASSES, PER_CLASS = 4, 7


def _activations(seed: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Layers of several kinds: separated classes, integer ties, near-identical classes, and
    a layer where other classes sit closer to each class mean than its own images do."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(CLASSES).repeat_interleave(PER_CLASS)
    centres = torch.randn(CLASSES, 24, generator=g)
    n = labels.numel()
    separated = centres[labels] + 0.6 * torch.randn(n, 24, generator=g)
    wide = torch.cat([centres, centres.flip(1)], 1)[labels] + 0.9 * torch.randn(n, 48, generator=g)
    narrow = centres[labels, :10] + 0.3 * torch.randn(n, 10, generator=g)
    ties = torch.randint(0, 5, (n, 16), generator=g).float() + 2 * (labels[:, None] == 1)
    alike = torch.randn(1, 20, generator=g) + 0.3 * torch.randn(n, 20, generator=g)
    spread = (torch.randn(n, 12, generator=g) * torch.where(labels[:, None] == 0, 3.0, 0.05)).abs()
    logits = 3 * torch.nn.functional.one_hot(labels, CLASSES).float()
    logits = logits + torch.randn(n, CLASSES, generator=g)
    acts = {"separated": separated, "wide": wide, "narrow": narrow, "ties": ties}
    acts |= {"alike": alike, "spread": spread}
    return {**acts, "logits": logits}, labels


def _close(a: float | None, b: float | None, tol: float = 1e-8) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=tol, abs_tol=tol)


@pytest.mark.parametrize("seed", [0, 1])
def test_product_matches_numpy_reference(seed):
    acts, labels = _activations(seed)
    stats = reference_stats(acts, labels, resamples=60, seed=seed)
    resamples = stats.resamples.numpy()
    g = torch.Generator().manual_seed(100 + seed)
    items = {k: v[:3] + 0.5 * torch.randn(3, v.shape[1], generator=g) for k, v in acts.items()}
    targets = [0, 1, 3]
    product = score_activations(items, targets, stats)
    x = {k: v.numpy() for k, v in acts.items()}
    y = labels.numpy()
    reasons = set()
    for i, (c, result) in enumerate(zip(targets, product, strict=True)):
        spearman_layers = []
        for layer in result.layers:
            for metric in METRICS:
                ref = Reference(x[layer.name], y, c, metric, resamples)
                mine = ref.score(items[layer.name][i].numpy().astype(np.float64))
                got = layer.metric(metric)
                where = (seed, c, layer.name, metric)
                assert _close(got.natural_same, ref.same), where
                assert _close(got.natural_other, ref.other), where
                assert _close(got.value, mine["value"]), where
                assert got.reason == mine["reason"], (where, got.reason, mine["reason"])
                assert _close(got.normalised, mine["normalised"]), where
                if mine["normalised"] is not None:
                    assert _close(got.normalised_low, mine["interval"][0], 1e-7), where
                    assert _close(got.normalised_high, mine["interval"][1], 1e-7), where
                    assert _close(got.span_z, ref.z, 1e-7), where
                reasons.add(got.reason)
                if metric == "spearman":
                    spearman_layers.append(mine)
        expected = summary(spearman_layers)
        assert _close(result.path_similarity, expected["value"]), (seed, c)
        assert result.summary.layers == expected["layers"]
        if expected["interval"] is not None:
            assert _close(result.summary.low, expected["interval"][0], 1e-7)
            assert _close(result.summary.high, expected["interval"][1], 1e-7)
        assert result.summary.layers >= 3  # so that a median differs from a mean
    # the activations exercise determinate layers and both kinds of "not separated"
    assert {"", "SPAN_UNRESOLVED", "SPAN_NOT_POSITIVE"} <= reasons
