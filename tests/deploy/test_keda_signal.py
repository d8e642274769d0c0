"""The number KEDA scales workers on (XLEN of each priority stream) against the real queue.

KEDA's redis-streams trigger in XLEN mode (deploy/k8s/base/worker-scaledobject.yaml)
must see every waiting or running job, drop a cancelled one, and read 0 once all
jobs are done, so workers wake from zero and scale back to zero. The consumer-group
lag, the alternative, cannot: the fair scheduler hands every new entry at once to its
``~parked`` consumer (docs/tenancy.md), so the group's lag reads 0 (or NULL after a
cancelled entry is deleted) while jobs wait: shown here too.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import redis
from protolens.client import Client
from protolens_server.api.testkit import TINY_MODEL, make_tiny_model_store
from protolens_server.queue.keys import GROUP, Keys

from tests.conftest import free_port
from tests.deploy.processes import scrape, serve_args, start, stop, worker_args

STREAMS = Keys().streams


def backlog(r: redis.Redis) -> int:
    return sum(r.xlen(s) for s in STREAMS)


def test_stream_length_tracks_waiting_and_running_jobs(redis_url: str, tmp_path: Path):
    store = make_tiny_model_store(tmp_path / "models")
    grpc_port, api_metrics = free_port(), free_port()
    api_log = tmp_path / "api.log"
    api = start(serve_args(redis_url, grpc_port, api_metrics, "--model-store", str(store)), api_log)
    r = redis.Redis.from_url(redis_url)
    try:
        scrape(api_metrics, api, api_log)
        with Client(f"127.0.0.1:{grpc_port}") as client:
            jobs = [
                client.create_prototype_job(TINY_MODEL, [1], config={"steps": 3}, seed=seed)
                for seed in (1, 2, 3)
            ]
            assert backlog(r) == 3, "no worker yet: all three wait in the streams"

            client.cancel_job(jobs[1])
            assert backlog(r) == 2, "a cancelled job leaves the stream"
            version = tuple(int(x) for x in r.info("server")["redis_version"].split(".")[:2])
            if version >= (7, 0):
                lags = [
                    g["lag"]
                    for s in STREAMS
                    for g in r.xinfo_groups(s)
                    if g["name"] == GROUP.encode()
                ]
                assert all(not lag for lag in lags), (
                    f"lags {lags}: the lag would tell KEDA that nothing waits, yet 2 jobs do"
                )

            worker_log = tmp_path / "worker.log"
            worker = start(
                worker_args(redis_url, free_port(), "--model-store", str(store), "--burst"),
                worker_log,
            )
            try:
                worker.wait(120)
            except subprocess.TimeoutExpired:
                stop(worker)
                raise AssertionError(worker_log.read_text()[-3000:]) from None
            assert worker.returncode == 0, worker_log.read_text()[-3000:]
            states = [client.get_job(j).state for j in jobs]
        assert states == ["SUCCEEDED", "CANCELLED", "SUCCEEDED"]
        assert backlog(r) == 0, "all done: KEDA may scale workers to zero"
    finally:
        r.close()
        stop(api)
