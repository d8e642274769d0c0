"""A small per-prototype plot: its normalised path similarity, layer by layer, with intervals.

The prototype's curve is drawn with its bootstrap interval as a band, against two
reference bands: natural images of its class (1 by construction, widened by their
spread) and natural images of other classes (0, widened likewise). Layers where
the reference set does not separate the class have no value; they are marked on
the axis instead of being drawn. A prototype on a natural path stays near the
upper band; a classic feature visualisation dips to the lower one or below.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display, safe in workers and threads

import matplotlib.pyplot as plt

from protolens_server.engine import PrototypeScores


def _band(scores: PrototypeScores, metric: str, which: str) -> tuple[list[float], list[float]]:
    """Lower and upper edges of a natural band on the normalised scale (centre +- 1 sd)."""
    centre = 1.0 if which == "same" else 0.0
    lows, highs = [], []
    for layer in scores.layers:
        m = layer.metric(metric)
        sd = m.natural_same_sd if which == "same" else m.natural_other_sd
        span = None
        if m.normalised is not None and m.natural_same is not None and m.natural_other is not None:
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
            ax.fill_between(x, low, high, color=colour, alpha=0.12, lw=0)
            ax.axhline(1.0 if which == "same" else 0.0, color=colour, lw=1, ls="--", label=label)
        for metric, style, colour in zip(
            metrics, ("-o", ":s"), ("tab:blue", "tab:orange"), strict=False
        ):
            low, high = scores.band(metric)
            ax.fill_between(x, _values(low), _values(high), color=colour, alpha=0.25, lw=0)
            ax.plot(
                x,
                _values(scores.curve(metric)),
                style,
                color=colour,
                ms=3,
                lw=1.5,
                label=f"prototype ({metric}), 95% interval",
            )
        missing = [i for i, v in enumerate(scores.curve(metrics[0])) if v is None]
        if missing:
            ax.plot(
                missing,
                [0.5] * len(missing),
                "x",
                color="grey",
                ms=5,
                label="not separated by the reference set",
            )
        ax.set_xticks(x, scores.layer_names, rotation=70, fontsize=6)
        ax.set_ylabel("normalised similarity")
        head = title or f"class {'+'.join(map(str, scores.target))}"
        note = "" if scores.layers_available else f" ({scores.reason})"
        codes = sorted({c.code for c in scores.caveats})
        if codes:  # the reference set cannot fully support these numbers (docs/scores.md)
            note += f" [caveat: {', '.join(codes)}]"
        ax.set_title(f"{head}: path similarity {scores.summary_text()}{note}", fontsize=8)
        ax.legend(fontsize=6, loc="best")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path
