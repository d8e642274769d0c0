#!/usr/bin/env python3
"""Write the Prometheus Operator copy of the alert rules.

deploy/monitoring/prometheus/alerts.yaml is the one source (promtool checks and
unit-tests it); this wraps its groups in a PrometheusRule at
deploy/k8s/components/monitoring/prometheusrule.yaml. tests/deploy fails when
the two differ: run ``python deploy/monitoring/sync_prometheusrule.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "deploy/monitoring/prometheus/alerts.yaml"
TARGET = ROOT / "deploy/k8s/components/monitoring/prometheusrule.yaml"
HEADER = """\
# GENERATED from deploy/monitoring/prometheus/alerts.yaml by
# deploy/monitoring/sync_prometheusrule.py: edit the source, then rerun it.
"""


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render() -> str:
    groups = yaml.safe_load(SOURCE.read_text())["groups"]
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "protolens",
            "labels": {"release": "prometheus"},  # match your ruleSelector
        },
        "spec": {"groups": groups},
    }
    body = yaml.dump(rule, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True)
    return HEADER + body


def main() -> int:
    TARGET.write_text(render())
    print(f"wrote {TARGET.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
