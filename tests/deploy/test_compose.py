"""The Compose stack: validated by Compose itself (offline), and wired the way the service needs."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from protolens_server.config import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "deploy" / "compose"


def compose_command() -> list[str]:
    """Compose v2 (`docker compose`) if its plugin is installed, else v1 `docker-compose`."""
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    if exe := shutil.which("docker-compose"):
        return [exe]
    pytest.skip(
        "SKIPPED LOUDLY: no Compose (docker compose / docker-compose) installed, so "
        "deploy/compose/compose.yaml was NOT validated (apt-get install docker-compose)"
    )


def compose_config(profiles: str) -> dict:
    env = {"PATH": "/usr/bin:/bin:/usr/local/bin", "COMPOSE_PROFILES": profiles}
    done = subprocess.run(
        [*compose_command(), "config"],
        cwd=COMPOSE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


@pytest.fixture(scope="module")
def config() -> dict:
    return compose_config("cpu,gpu")


def test_default_profile_is_cpu():
    env_file = (COMPOSE_DIR / ".env").read_text()
    assert re.search(r"^COMPOSE_PROFILES=cpu$", env_file, re.M)
    assert re.search(r"^COMPOSE_PROJECT_NAME=protolens$", env_file, re.M)


def test_redis_keeps_an_append_only_file(config):
    redis = config["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(v["target"] == "/data" for v in _volumes(redis))
    assert redis["healthcheck"]["test"][-1] == "ping"


def test_gpu_worker_reserves_a_gpu_only_in_its_profile(config):
    gpu = config["services"]["worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    [device] = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert gpu["build"]["target"] == "cuda"
    cpu = config["services"]["worker"]
    assert cpu["profiles"] == ["cpu"] and "deploy" not in cpu
    assert cpu["build"]["target"] == "cpu"


def test_build_targets_exist_in_the_dockerfile(config):
    stages = set(re.findall(r"^FROM \S+ AS (\S+)$", (ROOT / "Dockerfile").read_text(), re.M))
    for service in config["services"].values():
        if "build" in service:
            assert service["build"]["target"] in stages


def test_settings_are_known_and_grace_periods_fit(config):
    fields = set(Settings.model_fields)
    for name, service in config["services"].items():
        env = service.get("environment", {})
        for key in env:
            if key.startswith("PROTOLENS_"):
                assert key[10:].lower() in fields, f"{name}: {key} is not a Settings field"
        if "PROTOLENS_SHUTDOWN_GRACE_S" in env:
            grace = float(env["PROTOLENS_SHUTDOWN_GRACE_S"])
            assert _seconds(service["stop_grace_period"]) >= grace + 10, name
        if service.get("command") in (["serve"], ["worker"]):
            assert env["PROTOLENS_REDIS_URL"] == "redis://redis:6379/0"
            assert env["PROTOLENS_GRPC_HOST"] == "0.0.0.0"


def test_gallery_reads_the_api_service_and_nothing_else(config):
    web = config["services"]["web"]
    assert web["command"] == ["web"]
    env = web["environment"]
    host, port = env["PROTOLENS_WEB_API_ADDRESS"].rsplit(":", 1)
    assert host == "api" and int(port) == int(config["services"]["api"]["ports"][0]["target"])
    assert not any(k.startswith("PROTOLENS_REDIS") for k in env)
    assert web["depends_on"]["api"]["condition"] == "service_healthy"
    assert int(web["ports"][0]["target"]) == int(env["PROTOLENS_WEB_PORT"])
    assert "/healthz" in " ".join(web["healthcheck"]["test"])


def test_workers_health_check_reads_metrics(config):
    for name in ("worker", "worker-gpu"):
        test = config["services"][name]["healthcheck"]["test"]
        assert test[-2:] == ["protolens_server.healthcheck", "--metrics"]


def test_prometheus_config_and_rules_pass_promtool(tmp_path):
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.skip("SKIPPED LOUDLY: promtool missing (apt-get install prometheus)")
    text = (COMPOSE_DIR / "prometheus.yml").read_text()
    rules = ROOT / "deploy/monitoring/prometheus/alerts.yaml"
    assert "/etc/prometheus/alerts.yaml" in text
    (tmp_path / "prometheus.yml").write_text(
        text.replace("/etc/prometheus/alerts.yaml", str(rules))
    )
    done = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    scrape = yaml.safe_load(text)["scrape_configs"]
    assert {s["job_name"] for s in scrape} == {"protolens-api", "protolens-worker"}


def test_grafana_gets_the_dashboard_and_the_rules_are_mounted(config):
    grafana = _volumes(config["services"]["grafana"])
    dashboard = ROOT / "deploy/monitoring/grafana/protolens-dashboard.json"
    assert any(Path(v["source"]) == dashboard for v in grafana)
    provider = yaml.safe_load(
        (COMPOSE_DIR / "grafana/provisioning/dashboards/protolens.yaml").read_text()
    )
    folder = provider["providers"][0]["options"]["path"]
    assert any(v["target"] == f"{folder}/{dashboard.name}" for v in grafana)
    prometheus = _volumes(config["services"]["prometheus"])
    assert any(v["target"] == "/etc/prometheus/alerts.yaml" for v in prometheus)


def _volumes(service: dict) -> list[dict]:
    """Volumes in long form (Compose v1 prints short 'src:dst:mode' strings)."""
    out = []
    for v in service.get("volumes", []):
        if isinstance(v, str):
            source, target, *_ = v.split(":")
            v = {"source": source, "target": target}
        out.append(v)
    return out


def _seconds(value: str | int | float) -> float:
    if isinstance(value, int | float):
        return float(value)
    match = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", value)
    assert match, value
    return 60 * int(match.group(1) or 0) + int(match.group(2) or 0)
