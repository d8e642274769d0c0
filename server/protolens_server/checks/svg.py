"""The entanglement graph as inline SVG: classes on a circle, an arrow per entanglement.

Drawn by hand (no JS, no network): arrows kept from the baseline are grey, new
ones red, ones that went away dashed; flagged classes are filled red.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # a type only: the web gallery draws from report JSON without torch
    from protolens_server.checks.result import ClassCheck

NEW, KEPT, LOST = "#d62728", "#555555", "#aaaaaa"


def entanglement_svg(classes: Sequence[ClassCheck], size: int = 420) -> str:
    n = len(classes)
    if n == 0:
        return "<p>No classes checked.</p>"
    c, radius = size / 2, size / 2 - 70
    pos = {}
    for i, item in enumerate(classes):
        angle = 2 * math.pi * i / n - math.pi / 2
        pos[item.class_index] = (c + radius * math.cos(angle), c + radius * math.sin(angle))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" '
        f'viewBox="0 0 {size} {size}" role="img" aria-label="entanglement graph">',
        "<defs>",
        *(
            f'<marker id="arrow-{k}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
            f'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
            f'fill="{colour}"/></marker>'
            for k, colour in (("new", NEW), ("kept", KEPT), ("lost", LOST))
        ),
        "</defs>",
    ]
    for item in classes:
        before = {e.target for e in item.baseline_entangled}
        edges = [
            (e.target, e.probability, "new" if item.baseline and e.target not in before else "kept")
            for e in item.entangled
        ]
        edges += [(t, None, "lost") for t in item.lost]
        for target, prob, kind in edges:
            if target not in pos:
                continue
            parts.append(_arrow(pos[item.class_index], pos[target], kind, prob))
    for item in classes:
        x, y = pos[item.class_index]
        fill = "#f8d0d0" if item.flags else "#e8f0fa"
        stroke = NEW if item.flags else "#1f4e79"
        parts.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="22" fill="{fill}" stroke="{stroke}" '
            f'stroke-width="2"><title>{escape(item.name)}</title></circle>'
            f'<text x="{x:.1f}" y="{y + 4:.1f}" text-anchor="middle" font-size="11" '
            f'font-family="sans-serif">{escape(_short(item.name))}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _arrow(a: tuple[float, float], b: tuple[float, float], kind: str, prob: float | None) -> str:
    dx, dy = b[0] - a[0], b[1] - a[1]
    dist = math.hypot(dx, dy) or 1.0
    ux, uy = dx / dist, dy / dist
    x1, y1 = a[0] + 24 * ux, a[1] + 24 * uy
    x2, y2 = b[0] - 24 * ux, b[1] - 24 * uy
    colour = {"new": NEW, "kept": KEPT, "lost": LOST}[kind]
    dash = ' stroke-dasharray="5,4"' if kind == "lost" else ""
    width = 1.5 + 3 * (prob or 0)
    label = f"{kind} entanglement" + (f", p={prob:.2f}" if prob is not None else "")
    return (
        f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{colour}" '
        f'stroke-width="{width:.1f}"{dash} marker-end="url(#arrow-{kind})">'
        f"<title>{escape(label)}</title></line>"
    )


def _short(name: str, limit: int = 9) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"
