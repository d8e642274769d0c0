"""Alert rules (promtool check + a unit test per alert) and the Grafana dashboard."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import yaml

from tests.deploy.promql_names import (
    ALERTS,
    DASHBOARD,
    PROMETHEUS_BUILTINS,
    dashboard_exprs,
    exposition_names,
    metric_names,
    rule_exprs,
    used_names,
)

ALERT_TESTS = ALERTS.parent / "alerts_test.yaml"


def promtool() -> str:
    exe = shutil.which("promtool")
    if not exe:
        pytest.skip(
            "SKIPPED LOUDLY: promtool not installed, alert rules NOT checked "
            "(apt-get install prometheus)"
        )
    return exe


def test_promtool_check_rules():
    done = subprocess.run(
        [promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(list(rule_exprs()))} rules found" in done.stdout


def test_promtool_unit_tests_pass():
    done = subprocess.run(
        [promtool(), "test", "rules", ALERT_TESTS.name],
        cwd=ALERT_TESTS.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_has_a_firing_unit_test():
    alerts = {name for name, _ in rule_exprs()}
    firing = set()
    for case in yaml.safe_load(ALERT_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            if check.get("exp_alerts"):
                firing.add(check["alertname"])
    assert alerts == firing, f"alerts without a firing test: {alerts - firing}"


def test_required_alerts_exist():
    alerts = {name for name, _ in rule_exprs()}
    assert {
        "ProtolensBacklogGrowing",
        "ProtolensOldestJobTooOld",
        "ProtolensJobFailureRatioHigh",
        "ProtolensNoWorkerHeartbeat",
        "ProtolensDeadLetterGrowing",
    } <= alerts


def test_metric_name_extraction():
    assert metric_names(
        'histogram_quantile(0.99, sum by (le, method) (rate(a_bucket{x="b c"}[$__rate_interval])))'
    ) == {"a_bucket"}
    assert metric_names("sum(x) > 10 and on () max(y offset 5m) == 0") == {"x", "y"}
    assert metric_names("deriv(sum(max by (priority) (q))[15m:1m]) > 1e3") == {"q"}
    assert metric_names('up{job=~"protolens.*"} == 0') == {"up"}


def test_dashboard_covers_what_an_operator_needs():
    used = set()
    for _title, expr in dashboard_exprs():
        used |= metric_names(expr)
    for needed in (
        "protolens_queue_depth",
        "protolens_queue_oldest_age_seconds",
        "protolens_jobs",
        "protolens_job_running_seconds_bucket",
        "protolens_generation_steps_total",
        "protolens_cache_lookups_total",
        "protolens_gpu_memory_allocated_bytes",
        "protolens_gpu_utilization_ratio",
        "protolens_workers_alive",
        "protolens_dead_letter_jobs",
    ):
        assert needed in used, needed


def test_dashboard_is_well_formed():
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            assert panel["datasource"]["uid"] == "${datasource}"
    assert dashboard["templating"]["list"][0]["type"] == "datasource"


def test_names_are_defined_in_the_metrics_module():
    """Fast static check; test_live_metric_names checks the running processes too."""
    from prometheus_client import generate_latest
    from protolens_server.metrics import REGISTRY

    defined = exposition_names(generate_latest(REGISTRY).decode())
    unknown = {n: w for n, w in used_names().items() if n not in defined | PROMETHEUS_BUILTINS}
    assert not unknown, f"not exported by protolens_server.metrics: {unknown}"
