"""Kubernetes manifests: rendered with kustomize, validated against the Kubernetes and CRD
JSON schemas offline, and checked for the properties the deployment depends on."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from protolens_server.config import Settings
from protolens_server.queue.keys import Keys

from tests.deploy.k8s_render import OVERLAYS, ROOT, render

# Oldest Kubernetes we support (native gRPC probes are GA since 1.27) and the
# newest schema set kubernetes-validate ships.
K8S_VERSIONS = ("1.29.0", "1.37.0")
CRD_VALIDATOR = Path(__file__).parent / "crd_validate"
# Parameters KEDA documents for the redis-streams scaler.
KEDA_REDIS_STREAMS_KEYS = {
    "address", "host", "port", "addressFromEnv", "hostFromEnv", "portFromEnv",
    "usernameFromEnv", "passwordFromEnv", "stream", "consumerGroup",
    "pendingEntriesCount", "streamLength", "lagCount", "activationLagCount",
    "enableTLS", "unsafeSsl", "databaseIndex",
}  # fmt: skip


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict]]:
    return request.param, render(request.param)


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def workloads(docs: list[dict]) -> Iterator[dict]:
    yield from (d for d in docs if d["kind"] in ("Deployment", "StatefulSet"))


def config_data(docs: list[dict]) -> dict[str, str]:
    [config] = [
        d
        for d in docs
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("protolens-config")
    ]
    return config["data"]


def test_overlays_exist():
    assert {"cpu", "gpu"} <= set(OVERLAYS)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_core_objects_match_kubernetes_schemas(rendered, version):
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate",
        reason="SKIPPED LOUDLY: kubernetes-validate missing, manifests NOT schema-checked "
        "(pip install kubernetes-validate; it is in the dev extra)",
    )

    _, docs = rendered
    checked = 0
    for doc in docs:
        if doc["apiVersion"].startswith(("keda.sh/", "monitoring.coreos.com/")):
            continue  # CRDs: test_crd_objects_match_their_schemas
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} invalid for {version}: {exc}")
        checked += 1
    assert checked >= 15


def test_crd_objects_match_their_schemas(rendered):
    node = shutil.which("node")
    if not node or not (CRD_VALIDATOR / "node_modules").is_dir():
        pytest.skip(
            "SKIPPED LOUDLY: KEDA / Prometheus Operator objects NOT schema-checked: needs node and "
            "`npm ci --prefix tests/deploy/crd_validate` (see docs/deploy.md)"
        )
    name, docs = rendered
    crds = [d for d in docs if d["apiVersion"].startswith(("keda.sh/", "monitoring.coreos.com/"))]
    done = subprocess.run(
        [node, str(CRD_VALIDATOR / "validate.mjs")],
        input=json.dumps(crds),
        capture_output=True,
        text=True,
        timeout=60,
    )
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 0, f"{name}: {results or done.stderr}"
    assert {r["kind"].rsplit("/", 1)[1] for r in results} == {
        "ScaledObject",
        "ServiceMonitor",
        "PrometheusRule",
    }


def test_every_protolens_setting_is_a_settings_field(rendered):
    """Settings forbids unknown fields: a typo in the ConfigMap would stop every pod."""
    _, docs = rendered
    fields = set(Settings.model_fields)
    names = set(config_data(docs))
    for workload in workloads(docs):
        for c in workload["spec"]["template"]["spec"]["containers"]:
            names |= {e["name"] for e in c.get("env", [])}
    unknown = {n for n in names if n.startswith("PROTOLENS_") and n[10:].lower() not in fields}
    assert not unknown, f"not Settings fields: {unknown}"


def test_containers_have_limits_probes_and_run_unprivileged(rendered):
    _, docs = rendered
    for workload in workloads(docs):
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for c in pod["containers"]:
            where = f"{workload['metadata']['name']}/{c['name']}"
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][part]), where
            assert "readinessProbe" in c and "livenessProbe" in c, where
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, where
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"], where


def test_api_probes_use_the_grpc_health_service(rendered):
    _, docs = rendered
    api = by_kind(docs, "Deployment")["protolens-api"]
    [container] = api["spec"]["template"]["spec"]["containers"]
    port = int(config_data(docs)["PROTOLENS_GRPC_PORT"])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == port
    assert container["args"] == ["serve"]
    assert {p["containerPort"] for p in container["ports"]} == {
        port,
        int(config_data(docs)["PROTOLENS_METRICS_PORT"]),
    }


def test_gallery_reads_the_api_and_nothing_else(rendered):
    """The gallery (docs/gallery.md) calls the API Service's gRPC port with each viewer's
    key; it gets no Redis settings or label (NetworkPolicy keeps it out of Redis)."""
    _, docs = rendered
    web = by_kind(docs, "Deployment")["protolens-web"]["spec"]["template"]
    [container] = web["spec"]["containers"]
    assert container["args"] == ["web"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    host, port = env["PROTOLENS_WEB_API_ADDRESS"].rsplit(":", 1)
    api = by_kind(docs, "Service")[host]
    assert int(port) in {p["port"] for p in api["spec"]["ports"] if p["name"] == "grpc"}
    assert env["PROTOLENS_WEB_SECURE_COOKIES"] == "true"
    [http] = container["ports"]
    assert http["containerPort"] == int(env["PROTOLENS_WEB_PORT"])
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/healthz"
    assert not any("configMapRef" in ref for ref in container["envFrom"])
    assert "protolens.io/redis-client" not in web["metadata"]["labels"]
    assert "protolens-web-http" in by_kind(docs, "NetworkPolicy")


def test_termination_grace_outlasts_the_worker_shutdown_grace(rendered):
    _, docs = rendered
    grace = float(config_data(docs)["PROTOLENS_SHUTDOWN_GRACE_S"])
    deployments = by_kind(docs, "Deployment")
    worker = deployments["protolens-worker"]["spec"]["template"]["spec"]
    assert worker["containers"][0]["args"] == ["worker"]
    assert worker["terminationGracePeriodSeconds"] >= grace + 10
    api = deployments["protolens-api"]["spec"]["template"]["spec"]
    api_env = {e["name"]: e.get("value") for e in api["containers"][0]["env"]}
    assert api["terminationGracePeriodSeconds"] >= float(api_env["PROTOLENS_SHUTDOWN_GRACE_S"]) + 10


def test_gpu_only_in_the_gpu_overlay(rendered):
    name, docs = rendered
    [worker] = by_kind(docs, "Deployment")["protolens-worker"]["spec"]["template"]["spec"][
        "containers"
    ]
    env = {e["name"]: e.get("value") for e in worker.get("env", [])}
    device = env.get("PROTOLENS_DEVICE", config_data(docs)["PROTOLENS_DEVICE"])
    if name.startswith("gpu"):
        assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert device == "cuda"
    else:
        assert "nvidia.com/gpu" not in worker["resources"]["limits"]
        assert device == "cpu"


def test_scaledobject_scales_workers_to_zero_on_every_priority_stream(rendered):
    _, docs = rendered
    [scaled] = by_kind(docs, "ScaledObject").values()
    spec = scaled["spec"]
    assert spec["minReplicaCount"] == 0
    assert spec["scaleTargetRef"]["name"] == "protolens-worker"
    assert spec["scaleTargetRef"]["name"] in by_kind(docs, "Deployment")
    worker = by_kind(docs, "Deployment")["protolens-worker"]["spec"]["template"]["spec"]
    env_names = {e["name"] for e in worker["containers"][0].get("env", [])}
    env_names |= set(config_data(docs))
    secrets = by_kind(docs, "Secret")
    for ref in worker["containers"][0]["envFrom"]:
        if "secretRef" in ref:
            env_names |= set(secrets[ref["secretRef"]["name"]]["data"])
    streams = set()
    for trigger in spec["triggers"]:
        meta = trigger["metadata"]
        assert trigger["type"] == "redis-streams"
        assert set(meta) <= KEDA_REDIS_STREAMS_KEYS, set(meta) - KEDA_REDIS_STREAMS_KEYS
        assert meta["addressFromEnv"] in env_names and meta["passwordFromEnv"] in env_names
        # XLEN mode (no consumer group): see worker-scaledobject.yaml and test_keda_signal.py.
        assert "consumerGroup" not in meta and int(meta["streamLength"]) >= 1
        streams.add(meta["stream"])
    assert streams == set(Keys().streams), "every priority stream wakes workers"
    host, port = config_data(docs)["REDIS_ADDRESS"].rsplit(":", 1)
    assert host and int(port)


def test_references_resolve_and_selectors_match(rendered):
    _, docs = rendered
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    pods = {
        w["metadata"]["name"]: w["spec"]["template"]["metadata"]["labels"] for w in workloads(docs)
    }
    for workload in workloads(docs):
        pod = workload["spec"]["template"]["spec"]
        for c in pod["containers"]:
            for ref in c.get("envFrom", []):
                if "configMapRef" in ref:
                    assert ("ConfigMap", ref["configMapRef"]["name"]) in names
                else:
                    assert ("Secret", ref["secretRef"]["name"]) in names
        for vol in pod.get("volumes", []):
            if "secret" in vol:
                assert ("Secret", vol["secret"]["secretName"]) in names
            if "configMap" in vol:
                assert ("ConfigMap", vol["configMap"]["name"]) in names
    for kind in ("PodDisruptionBudget", "Service"):
        for obj in by_kind(docs, kind).values():
            selector = obj["spec"]["selector"]
            selector = selector.get("matchLabels", selector)
            assert any(selector.items() <= labels.items() for labels in pods.values()), obj
    pdbs = {
        p["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
        for p in by_kind(docs, "PodDisruptionBudget").values()
    }
    assert {"protolens-api", "protolens-worker"} <= pdbs


def test_network_policies_deny_by_default(rendered):
    _, docs = rendered
    policies = by_kind(docs, "NetworkPolicy")
    deny = policies["protolens-default-deny-ingress"]["spec"]
    assert deny["podSelector"] == {} and "ingress" not in deny
    assert "protolens-api-grpc" in policies and "protolens-metrics" in policies


def test_placeholder_secrets_are_marked(rendered):
    import base64

    _, docs = rendered
    secrets = by_kind(docs, "Secret")
    for name in ("protolens-tls",):
        [secret] = [s for n, s in secrets.items() if n.startswith(name)]
        for value in secret["data"].values():
            assert b"PLACEHOLDER" in base64.b64decode(value)


def test_in_cluster_redis_keeps_an_append_only_file():
    docs = render("gpu")
    redis = by_kind(docs, "StatefulSet")["protolens-redis"]
    assert redis["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    [conf] = [d for d in docs if d["metadata"]["name"].startswith("protolens-redis-config")]
    lines = conf["data"]["redis.conf"].splitlines()
    assert "appendonly yes" in lines and "maxmemory-policy noeviction" in lines


def test_external_redis_replaces_the_statefulset():
    docs = render("gpu-external-redis")
    assert "protolens-redis" not in by_kind(docs, "StatefulSet")
    assert "protolens-redis" not in by_kind(docs, "Service")
    assert config_data(docs)["REDIS_ADDRESS"] != "protolens-redis:6379"
    [scaled] = by_kind(docs, "ScaledObject").values()
    assert all(t["metadata"]["enableTLS"] == "true" for t in scaled["spec"]["triggers"])


def test_prometheusrule_is_in_sync_with_the_rule_file():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "sync_prometheusrule", ROOT / "deploy/monitoring/sync_prometheusrule.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.TARGET.read_text() == module.render(), (
        "run: python deploy/monitoring/sync_prometheusrule.py"
    )
