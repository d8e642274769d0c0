"""A small per-prototype plot: its normalised path similarity, layer by layer.

The prototype's curve is drawn against two bands: natural images of its class
(1 by construction, widened by their spread) and natural images of other
classes (0, widened likewise). A prototype on a natural path stays near the
upper band; a classic feature visualisation dips to the lower one or below.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display, safe in workers and threads

import matplotlib.pyplot as plt

from protolens_server.engine._scores import PrototypeScores


def _band(scores: PrototypeScores, metric: str, which: str) -> tuple[list[float], list[float]]:
    """Lower and upper edges of a natural band on the normalised scale (centre +- 1 sd)."""
    centre = 1.0 if which == "same" else 0.0
    lows, highs = [], []
    for layer in scores.layers:
        m = layer.metric(metric)
        sd = m.natural_same_sd if which == "same" else m.natural_other_sd
        span = None
        if m.natural_same is not None and m.natural_other is not None:
            span = abs(m.natural_same - m.natural_other)
        width = sd / span if sd is not None and span else math.nan
        lows.append(centre - width)
        highs.append(centre + width)
    return lows, highs


def _values(values: Sequence[float | None]) -> list[float]:
    return [math.nan if v is None else v for v in values]


def plot_scores(
    scores: PrototypeScores,
    path: str | Path,
    *,
    title: str = "",
    metrics: Sequence[str] = ("spearman", "cosine"),
) -> Path:
    """Write a PNG of ``scores``' per-layer normalised similarity to ``path``; returns it."""
    path = Path(path)
    x = list(range(len(scores.layers)))
    fig, ax = plt.subplots(figsize=(max(4.5, 0.32 * len(x) + 2), 3.2), dpi=110)
    try:
        for which, colour, label in (
            ("same", "tab:green", "natural, same class"),
            ("other", "tab:red", "natural, other classes"),
        ):
            low, high = _band(scores, metrics[0], which)
            ax.fill_between(x, low, high, color=colour, alpha=0.15, lw=0)
            ax.axhline(1.0 if which == "same" else 0.0, color=colour, lw=1, ls="--", label=label)
        for metric, style in zip(metrics, ("-o", ":s"), strict=False):
            ax.plot(
                x, _values(scores.curve(metric)), style, ms=3, lw=1.5, label=f"prototype ({metric})"
            )
        ax.set_xticks(x, scores.layer_names, rotation=70, fontsize=6)
        ax.set_ylabel("normalised similarity")
        summary = "n/a" if scores.path_similarity is None else f"{scores.path_similarity:.2f}"
        head = title or f"class {'+'.join(map(str, scores.target))}"
        note = "" if scores.layers_available else f" ({scores.reason})"
        ax.set_title(f"{head}: path similarity {summary}{note}", fontsize=8)
        ax.legend(fontsize=6, loc="best")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path
