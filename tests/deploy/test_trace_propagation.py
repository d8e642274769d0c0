"""A caller's trace id travels from the gRPC call into the worker's JSON log lines."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

from protolens.client import Client
from protolens_server.api.testkit import TINY_MODEL, make_tiny_model_store

from tests.conftest import free_port
from tests.deploy.processes import scrape, serve_args, start, stop, worker_args

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def _json_lines(path: Path) -> list[dict]:
    lines = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                lines.append(json.loads(line))
    return lines


def test_traceparent_reaches_the_worker_log(redis_url: str, tmp_path: Path):
    store = make_tiny_model_store(tmp_path / "models")
    grpc_port, api_metrics, worker_metrics = free_port(), free_port(), free_port()
    api_log, worker_log = tmp_path / "api.log", tmp_path / "worker.log"
    api = start(serve_args(redis_url, grpc_port, api_metrics, "--model-store", str(store)), api_log)
    worker = start(
        worker_args(redis_url, worker_metrics, "--model-store", str(store), "--log-format", "json"),
        worker_log,
    )
    try:
        scrape(api_metrics, api, api_log)
        scrape(worker_metrics, worker, worker_log)
        traceparent = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
        with Client(f"127.0.0.1:{grpc_port}", metadata=[("traceparent", traceparent)]) as client:
            job = client.create_prototype_job(TINY_MODEL, [1], config={"steps": 3}, seed=7)
            done = client.wait(job, timeout=120)
        assert done.state == "SUCCEEDED"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            traced = [r for r in _json_lines(worker_log) if r.get("trace_id") == TRACE_ID]
            if traced:
                break
            time.sleep(0.2)
        assert traced, f"no worker log line carries the trace id:\n{worker_log.read_text()[-3000:]}"
        job_id = done.name.rsplit("/", 1)[-1]
        assert any(r["job_id"] and r["job_id"] in (job_id, done.name) for r in traced), traced
        assert all(r["tenant"] for r in traced)
        # The label values the dashboard and alert rules match on, as really exported.
        api_text = scrape(api_metrics, api, api_log)
        worker_text = scrape(worker_metrics, worker, worker_log)
        assert 'protolens_cache_lookups_total{result="miss"}' in api_text
        assert 'protolens_jobs_finished_total{state="SUCCEEDED"}' in worker_text
        # The API samples the queue gauges every few seconds (api/server.py).
        deadline = time.monotonic() + 20
        while 'protolens_queue_depth{priority="1"}' not in api_text:
            assert time.monotonic() < deadline, "the API never sampled the queue gauges"
            time.sleep(0.5)
            api_text = scrape(api_metrics, api, api_log)
        assert "protolens_workers_alive 1.0" in api_text
    finally:
        stop(worker)
        stop(api)
