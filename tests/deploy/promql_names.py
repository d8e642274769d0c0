"""Metric names used by the dashboard and the alert rules, and names a registry exports."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy/monitoring/grafana/protolens-dashboard.json"
ALERTS = ROOT / "deploy/monitoring/prometheus/alerts.yaml"
# Series Prometheus makes itself; anything else must come from protolens.
PROMETHEUS_BUILTINS = {"up"}

_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w.:])[A-Za-z_:][\w:]*")


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (not functions, keywords or label names)."""
    text = re.sub(r"\$\{[^}]*\}|\$\w+", "", expr)  # Grafana variables
    text = _STRING.sub('""', text)
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries
    text = _GROUPING.sub("", text)
    text = re.sub(r"\boffset\s+\w+", "", text)
    names = set()
    for match in _IDENT.finditer(text):
        if text[match.end() :].lstrip().startswith("("):
            continue  # a function or aggregation
        if match.group(0) not in _KEYWORDS:
            names.add(match.group(0))
    return names


def dashboard_exprs(path: Path = DASHBOARD) -> Iterator[tuple[str, str]]:
    """(panel title, expr) for every query in the Grafana dashboard."""

    def walk(panels: Iterable[dict]) -> Iterator[tuple[str, str]]:
        for panel in panels:
            for target in panel.get("targets", []):
                yield panel["title"], target["expr"]
            yield from walk(panel.get("panels", []))

    yield from walk(json.loads(path.read_text())["panels"])


def rule_exprs(path: Path = ALERTS) -> Iterator[tuple[str, str]]:
    """(alert or record name, expr) for every rule in the Prometheus rule file."""
    for group in yaml.safe_load(path.read_text())["groups"]:
        for rule in group["rules"]:
            yield rule.get("alert") or rule["record"], rule["expr"]


def used_names() -> dict[str, set[str]]:
    """Metric name -> where it is used (panel titles and alert names)."""
    used: dict[str, set[str]] = {}
    for where, expr in [*dashboard_exprs(), *rule_exprs()]:
        for name in metric_names(expr):
            used.setdefault(name, set()).add(where)
    return used


def exposition_names(text: str) -> set[str]:
    """Series names a /metrics page exports, including families with no samples yet.

    Counters export ``_total``, histograms ``_bucket``/``_sum``/``_count``; a
    labelled family with no children still has its ``# TYPE`` line.
    """
    from prometheus_client.parser import text_string_to_metric_families

    names = set()
    for family in text_string_to_metric_families(text):
        suffixes = {
            "counter": ("_total", "_created"),
            "histogram": ("_bucket", "_sum", "_count", "_created"),
            "summary": ("", "_sum", "_count", "_created"),
        }.get(family.type, ("",))
        names |= {family.name + s for s in suffixes}
        names |= {sample.name for sample in family.samples}
    return names
