"""The check report: one self-contained HTML file (and the same facts as JSON).

Everything is inline: prototypes and plots are ``data:`` PNG URIs, the
entanglement graph is inline SVG, styles are in a ``<style>`` block; there are
no scripts and no external URLs, so the file opens offline, from an artifact
store or an e-mail. Order: verdict, the reference set's caveats (if any) and failed
rules first, then the prototype grid (baseline beside new), score tables,
entanglement graph, and the per-layer path-similarity plots.
"""

from __future__ import annotations

import base64
import json
import tempfile
from html import escape
from pathlib import Path
from typing import Any

from protolens_server.checks.matching import describe as describe_class_match
from protolens_server.checks.result import CheckResult, RuleResult
from protolens_server.checks.svg import entanglement_svg

PASS, FAIL = "#1a7f37", "#cf222e"

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;
color:#1f2328;background:#fff}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px}
.verdict{display:inline-block;padding:4px 12px;border-radius:6px;color:#fff;font-weight:700}
.meta{color:#57606a;font-size:13px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
td,th{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa}
tr.fail td{background:#ffebe9} tr.skipped td{color:#57606a}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:12px}
.card{border:2px solid #d0d7de;border-radius:8px;padding:8px;background:#f6f8fa}
.card.flagged{border-color:#cf222e;background:#fff5f5}
.card h3{font-size:14px;margin:0 0 6px}
.pair{display:flex;flex-wrap:wrap;gap:8px}
.pair figure{margin:0;text-align:center;font-size:11px;color:#57606a}
.pair img{width:84px;height:84px;image-rendering:pixelated;border:1px solid #8c959f;
display:block;margin:2px 0}
.flag{display:inline-block;background:#cf222e;color:#fff;border-radius:4px;padding:0 5px;
font-size:11px;margin:1px}
.plots img{max-width:480px;border:1px solid #d0d7de;margin:4px}
ul.caveats{background:#fff8c5;border:1px solid #d4a72c;border-radius:6px;padding:8px 8px 8px 28px;
font-size:13px}
"""


def png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def write_json(result: CheckResult, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.to_dict(), indent=2))
    return path


def write_html(result: CheckResult, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(result), encoding="utf-8")
    return path


def render_html(result: CheckResult) -> str:
    title = f"protolens check: {result.model.ref}"
    body = [
        _header(result),
        _caveats(result),
        _rules(result.rules),
        "<h2>Prototypes</h2>",
        _grid(result),
        "<h2>Scores</h2>",
        _scores_table(result),
        "<h2>Entanglement</h2>",
        _entanglement(result),
        _drift_layers(result),
        _plots(result),
    ]
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>"
        + "".join(body)
        + "</body></html>"
    )


def _header(r: CheckResult) -> str:
    colour, word = (PASS, "PASS") if r.passed else (FAIL, "FAIL")
    base = (
        f"baseline <b>{escape(r.baseline.ref)}</b> ({escape(r.baseline.digest[:12])})"
        if r.baseline
        else "no baseline"
    )
    g = r.generation
    paired = describe_class_match(r.class_match)
    return (
        f'<h1>{escape(r.model.ref)} <span class="verdict" style="background:{colour}">'
        f"{word}</span></h1>"
        f'<p class="meta">digest {escape(r.model.digest[:12])} · {base} · '
        f"{len(r.classes)} classes · {r.config.get('prototypes', 1)} prototypes per class · "
        f"{r.config.get('steps')} steps · seed {r.seed} · "
        f"{g.jobs} jobs: {g.cache_hits} from the cache, {g.generated} generated</p>"
        f'<p class="meta">flagged: {escape(", ".join(c.name for c in r.flagged) or "none")}</p>'
        + (f'<p class="meta">{escape(paired)}</p>' if paired else "")
    )


def _caveats(r: CheckResult) -> str:
    """The reference set's caveats, if any: what its path similarities partly measure."""
    caveats = r.caveats
    if not caveats:
        return ""
    items = "".join(
        f"<li><b>{escape(c.get('code', ''))}</b>: {escape(c.get('message', ''))}</li>"
        for c in caveats
    )
    return (
        '<h2>Reference-set caveats</h2><p class="meta">The path similarities of these classes '
        "rest on a reference set that cannot fully support them (docs/scores.md); the numbers "
        f'are unchanged.</p><ul class="caveats">{items}</ul>'
    )


def _rules(rules: list[RuleResult]) -> str:
    if not rules:
        return "<h2>Policy</h2><p>No policy rules set.</p>"
    rows = "".join(
        f'<tr class="{r.status}"><td><b>{r.status.upper()}</b></td><td>{escape(r.rule)}</td>'
        f"<td>{escape(json.dumps(r.threshold))}</td><td>{escape(', '.join(r.classes))}</td>"
        f"<td>{escape(r.message)}</td></tr>"
        for r in rules
    )
    return (
        "<h2>Policy (failed rules first)</h2><table><tr><th>result</th><th>rule</th>"
        f"<th>threshold</th><th>classes</th><th>detail</th></tr>{rows}</table>"
    )


def _figures(label: str, pngs: list[bytes], probs: list[float]) -> str:
    return "".join(
        f'<figure><img alt="{escape(label)} prototype {i}" src="{png_uri(png)}">'
        f"{escape(label)} p={p:.2f}</figure>"
        for i, (png, p) in enumerate(zip(pngs, probs, strict=True))
    )


def _grid(r: CheckResult) -> str:
    cards = []
    for c in r.classes:
        flags = "".join(f'<span class="flag">{escape(f)}</span>' for f in c.flags)
        figures = ""
        if c.baseline is not None:
            figures += _figures("baseline", c.baseline.pngs[:1], c.baseline.probabilities[:1])
        figures += _figures("new", c.new.pngs, c.new.probabilities)
        drift = "" if c.drift is None else f" · drift {_fmt_interval(c.drift, c.drift_interval)}"
        # where the classes were paired by name: the baseline's own index when it differs,
        # or that the baseline had no such class (checks/matching.py)
        moved = c.baseline_class_index not in (None, c.class_index)
        where = f" · baseline ({c.baseline_class_index})" if moved else ""
        if r.baseline is not None and c.baseline is None:
            where = " · new class"
        cards.append(
            f'<div class="card{" flagged" if c.flags else ""}" id="class-{c.class_index}">'
            f"<h3>{escape(c.name)} ({c.class_index}){where}{drift}</h3>"
            f'<div class="pair">{figures}</div><div>{flags}</div></div>'
        )
    return f'<div class="grid">{"".join(cards)}</div>'


def _fmt(v: float | None, signed: bool = False) -> str:
    if v is None:
        return "–"
    return f"{v:+.3f}" if signed else f"{v:.3f}"


def _fmt_interval(
    v: float | None, interval: tuple[float, float] | None, signed: bool = False
) -> str:
    """``0.420 [0.310, 0.550]``: a value with its 95% bootstrap interval."""
    if v is None or interval is None:
        return _fmt(v, signed)
    return f"{_fmt(v, signed)} [{_fmt(interval[0], signed)}, {_fmt(interval[1], signed)}]"


def _scores_table(r: CheckResult) -> str:
    rows = []
    for c in r.classes:
        ch_interval = c.path_similarity_change_interval
        rows.append(
            f'<tr class="{"fail" if c.flags else ""}"><td>{escape(c.name)}</td>'
            f"<td>{_fmt(c.new.probability)}</td>"
            f"<td>{_fmt(c.baseline.probability if c.baseline else None)}</td>"
            f"<td>{_fmt(c.confidence_change, True)}</td>"
            f"<td>{_fmt_interval(c.new.path_similarity, c.new.path_similarity_interval)}</td>"
            f"<td>{_fmt_interval(c.path_similarity_change, ch_interval, True)}</td>"
            f"<td>{_fmt_interval(c.drift, c.drift_interval)}</td>"
            f"<td>{_fmt(c.baseline_by_new_model)}</td><td>{_fmt(c.new_by_baseline_model)}</td>"
            f"<td>{escape(', '.join(c.flags))}</td></tr>"
        )
    return (
        '<p class="meta">Path similarity, its change and drift show a 95% bootstrap interval '
        "over the reference images (or the other classes' prototypes) in brackets; a flag needs "
        "the whole interval past its threshold; – : not determined (docs/scores.md).</p>"
        "<table><tr><th>class</th><th>confidence</th><th>baseline confidence</th>"
        "<th>Δ confidence</th><th>path similarity</th><th>Δ path similarity</th><th>drift</th>"
        "<th>baseline prototype in new model</th><th>new prototype in baseline model</th>"
        f"<th>flags</th></tr>{''.join(rows)}</table>"
    )


def _entanglement(r: CheckResult) -> str:
    names = r.class_names

    def listed(edges: list[Any]) -> str:
        return escape(", ".join(f"{names[e.target]} ({e.probability:.2f})" for e in edges))

    rows = "".join(
        f"<tr><td>{escape(c.name)}</td>"
        f"<td>{listed(c.entangled)}</td><td>{listed(c.baseline_entangled)}</td>"
        f"<td>{escape(', '.join(names[i] for i in c.gained))}</td>"
        f"<td>{escape(', '.join(names[i] for i in c.lost))}</td></tr>"
        for c in r.classes
    )
    return (
        f'<p class="meta">An arrow A→B: the prototype of A also gives B probability ≥ '
        f"{r.entanglement_threshold:g} (top {r.entanglement_top_k}). Red: new since the baseline; "
        "grey: kept; dashed: gone.</p>"
        f"{entanglement_svg(r.classes)}"
        "<table><tr><th>class</th><th>entangled with (new)</th><th>baseline</th>"
        f"<th>gained</th><th>lost</th></tr>{rows}</table>"
    )


def _drift_layers(r: CheckResult) -> str:
    with_layers = [c for c in r.classes if c.layer_drift]
    if not with_layers:
        return ""
    layers = list(with_layers[0].layer_drift)
    head = "".join(f"<th>{escape(n)}</th>" for n in layers)
    rows = "".join(
        f"<tr><td>{escape(c.name)}</td>"
        + "".join(f"<td>{_fmt(c.layer_drift.get(n))}</td>" for n in layers)
        + "</tr>"
        for c in with_layers
    )
    return (
        "<h2>Drift of the baseline prototype, layer by layer (in the new model)</h2>"
        '<p class="meta">0 = the same as the new prototype, 1 = at least as different as '
        "another class's prototype; – : other classes' prototypes are not clearly less alike "
        "at this layer, so it says nothing.</p>"
        f"<table><tr><th>class</th>{head}</tr>{rows}</table>"
    )


def _plots(r: CheckResult) -> str:
    items = [(c, s) for c in r.classes for s in c.new.scores[:1] if s]
    if not items:
        return ""
    from protolens_server.engine import PrototypeScores
    from protolens_server.plots import plot_scores

    images = []
    with tempfile.TemporaryDirectory() as tmp:
        for c, s in items:
            path = plot_scores(
                PrototypeScores.from_dict(s), Path(tmp) / f"{c.class_index}.png", title=c.name
            )
            images.append(
                f'<img alt="path similarity of {escape(c.name)}" '
                f'src="{png_uri(path.read_bytes())}">'
            )
    return f'<h2>Path similarity per layer</h2><div class="plots">{"".join(images)}</div>'
