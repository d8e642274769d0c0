"""The per-layer path-similarity plot of a prototype, as inline SVG (no script, no image file).

The same picture as ``plots.plot_scores`` (docs/scores.md), drawn from the scores dict
the API returns: the prototype's normalised similarity per layer (Spearman, and
cosine dotted) over the natural bands (same class: 1 ± its spread; other classes:
0 ± its spread), with the layer's interval as a whisker where the service reports
one. Values far outside the usual range are drawn at the edge as a triangle whose
title gives the value, so one wild layer cannot flatten the rest. Every point has a
``<title>``; the page shows the same numbers in a table for keyboard and screen-reader
users.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from protolens_server.web.api import interval_of

SAME, OTHER = "#1a7f37", "#cf222e"
CURVES = (("spearman", "#0969da", ""), ("cosine", "#8250df", "4,3"))
_SHOWN = (-1.0, 2.0)  # the y range never grows past this: outliers sit on its edge
W_LAYER, H, LEFT, RIGHT, TOP, BOTTOM = 34, 300, 56, 16, 20, 96
Scale = Callable[[float], float]  # data -> SVG coordinate


@dataclass(frozen=True)
class LayerRow:
    """One layer's numbers, for the plot and its table."""

    name: str
    values: dict[str, float | None]  # metric -> normalised value
    interval: tuple[float, float] | None  # Spearman's, when reported
    reason: str  # why Spearman's normalised value is missing (a reason code), else ""
    same_band: float | None  # half-width of the natural same-class band (normalised)
    other_band: float | None


def layer_rows(scores: Mapping[str, Any]) -> list[LayerRow]:
    layers = [str(n) for n in scores.get("layers") or []]
    rows = []
    for i, name in enumerate(layers):
        values = {m: _at(scores.get(f"{m}_normalised"), i) for m, _, _ in CURVES}
        rows.append(
            LayerRow(
                name=name,
                values=values,
                interval=_layer_interval(scores, i),
                reason=str(_item(scores.get("spearman_reason"), i) or ""),
                same_band=_band(scores, "same", i),
                other_band=_band(scores, "other", i),
            )
        )
    return rows


def _item(series: Any, i: int) -> Any:
    if isinstance(series, Sequence) and not isinstance(series, str) and i < len(series):
        return series[i]
    return None


def _at(series: Any, i: int) -> float | None:
    if isinstance(series, Sequence) and i < len(series):
        v = series[i]
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            return float(v)
    return None


def _layer_interval(scores: Mapping[str, Any], i: int) -> tuple[float, float] | None:
    per_layer = {
        k: v[i] if isinstance(v, Sequence) and not isinstance(v, str) and i < len(v) else None
        for k, v in scores.items()
        if k.startswith("spearman_normalised_")
    }
    return interval_of(per_layer, "spearman_normalised")


def _band(scores: Mapping[str, Any], which: str, i: int) -> float | None:
    """Half-width of a natural band on the normalised scale: sd / |same - other|."""
    sd = _at(scores.get(f"spearman_natural_{which}_sd"), i)
    same = _at(scores.get("spearman_natural_same"), i)
    other = _at(scores.get("spearman_natural_other"), i)
    if sd is None or same is None or other is None or same == other:
        return None
    return sd / abs(same - other)


def layer_plot_svg(rows: Sequence[LayerRow], title: str) -> str:
    """The plot as an ``<svg>`` element ("" when there are no layers)."""
    if not rows:
        return ""
    n = len(rows)
    width = LEFT + RIGHT + W_LAYER * max(n, 6)
    lo, hi = _y_range(rows)

    def x(i: float) -> float:
        return LEFT + W_LAYER * (i + 0.5)

    def y(v: float) -> float:
        v = min(max(v, lo), hi)
        return TOP + (hi - v) / (hi - lo) * (H - TOP - BOTTOM)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {H}" '
        f'width="{width}" height="{H}" role="img" aria-labelledby="plot-title" '
        'class="layer-plot">',
        f'<title id="plot-title">{escape(title)}</title>',
    ]
    for which, centre, colour in (("same", 1.0, SAME), ("other", 0.0, OTHER)):
        out.append(_band_path(rows, which, centre, colour, x, y))
        out.append(
            f'<line x1="{LEFT}" x2="{width - RIGHT}" y1="{y(centre):.1f}" y2="{y(centre):.1f}" '
            f'stroke="{colour}" stroke-dasharray="6,4" stroke-width="1"/>'
        )
    out += _axes(lo, hi, width, y)
    for i, row in enumerate(rows):
        if row.interval is not None:
            a, b = row.interval
            out.append(
                f'<line x1="{x(i):.1f}" x2="{x(i):.1f}" y1="{y(a):.1f}" y2="{y(b):.1f}" '
                f'stroke="{CURVES[0][1]}" stroke-width="2" opacity="0.45">'
                f"<title>{escape(row.name)}: interval [{a:.2f}, {b:.2f}]</title></line>"
            )
    for metric, colour, dash in CURVES:
        out += _curve(rows, metric, colour, dash, x, y, lo, hi)
    for i, row in enumerate(rows):
        out.append(
            f'<text x="{x(i):.1f}" y="{H - BOTTOM + 10}" font-size="10" text-anchor="end" '
            f'transform="rotate(-60 {x(i):.1f} {H - BOTTOM + 10})">{escape(_short(row.name))}'
            "</text>"
        )
    out.append("</svg>")
    return "".join(out)


def _y_range(rows: Sequence[LayerRow]) -> tuple[float, float]:
    lo, hi = -0.5, 1.5
    for row in rows:
        values = [v for v in row.values.values() if v is not None]
        if row.interval:
            values += list(row.interval)
        for band, centre in ((row.same_band, 1.0), (row.other_band, 0.0)):
            if band is not None:
                values += [centre - band, centre + band]
        for v in values:
            lo, hi = min(lo, max(v, _SHOWN[0])), max(hi, min(v, _SHOWN[1]))
    return lo, hi


def _band_path(
    rows: Sequence[LayerRow], which: str, centre: float, colour: str, x: Scale, y: Scale
) -> str:
    widths = [r.same_band if which == "same" else r.other_band for r in rows]
    points = [(i, w) for i, w in enumerate(widths) if w is not None]
    if not points:
        return ""
    upper = " ".join(f"{x(i):.1f},{y(centre + w):.1f}" for i, w in points)
    lower = " ".join(f"{x(i):.1f},{y(centre - w):.1f}" for i, w in reversed(points))
    label = "natural images, same class" if which == "same" else "natural images, other classes"
    return (
        f'<polygon points="{upper} {lower}" fill="{colour}" opacity="0.13">'
        f"<title>{label}: {centre:g} ± spread</title></polygon>"
    )


def _axes(lo: float, hi: float, width: int, y: Scale) -> list[str]:
    out = [
        f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{H - BOTTOM}" stroke="#57606a"/>',
        f'<text x="14" y="{(TOP + H - BOTTOM) / 2:.0f}" font-size="11" text-anchor="middle" '
        f'transform="rotate(-90 14 {(TOP + H - BOTTOM) / 2:.0f})">normalised similarity</text>',
    ]
    step = 0.5 if hi - lo <= 3 else 1.0
    tick = math.ceil(lo / step) * step
    while tick <= hi + 1e-9:
        out.append(
            f'<line x1="{LEFT - 4}" x2="{width - RIGHT}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
            'stroke="#d0d7de" stroke-width="0.6"/>'
            f'<text x="{LEFT - 7}" y="{y(tick) + 3.5:.1f}" font-size="10" text-anchor="end">'
            f"{tick:g}</text>"
        )
        tick += step
    return out


def _curve(
    rows: Sequence[LayerRow],
    metric: str,
    colour: str,
    dash: str,
    x: Scale,
    y: Scale,
    lo: float,
    hi: float,
) -> list[str]:
    points = [(i, r.values.get(metric)) for i, r in enumerate(rows)]
    out = []
    segment: list[str] = []
    for i, v in [*points, (len(rows), None)]:
        if v is None:
            if len(segment) > 1:
                extra = f' stroke-dasharray="{dash}"' if dash else ""
                out.append(
                    f'<polyline points="{" ".join(segment)}" fill="none" stroke="{colour}" '
                    f'stroke-width="1.8"{extra}/>'
                )
            segment = []
            continue
        segment.append(f"{x(i):.1f},{y(v):.1f}")
    for i, v in points:
        if v is None:
            continue
        label = f"{rows[i].name}: {metric} {v:.3f}"
        if v < lo or v > hi:  # off the chart: a triangle on its edge
            tip = y(v) + (-6 if v > hi else 6)
            out.append(
                f'<polygon points="{x(i) - 5:.1f},{y(v):.1f} {x(i) + 5:.1f},{y(v):.1f} '
                f'{x(i):.1f},{tip:.1f}" fill="{colour}"><title>{escape(label)} (off the chart)'
                "</title></polygon>"
            )
        elif not dash:
            out.append(
                f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="3" fill="{colour}">'
                f"<title>{escape(label)}</title></circle>"
            )
    return out


def _short(name: str, limit: int = 14) -> str:
    return name if len(name) <= limit else "…" + name[-(limit - 1) :]
