"""One job end to end on a real Redis Cluster: API server and worker as real processes.

The SDK talks gRPC to ``protolens serve``; a ``python -m protolens_server.worker``
process runs the job; both reach the 3-master cluster through ``redis+cluster://``.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import redis
from PIL import Image
from protolens import Client
from protolens_server.api.stack import Stack
from protolens_server.api.testkit import make_tiny_model_store
from protolens_server.config import Settings
from protolens_server.queue.connection import parse_cluster_url

pytestmark = pytest.mark.xdist_group("redis-cluster")  # one cluster per xdist worker

FAST = {"steps": 4, "start": "constant", "progress_every": 1}


def test_a_job_runs_through_api_and_worker_processes_on_a_cluster(
    redis_cluster_url: str, tmp_path: Path
) -> None:
    settings = Settings(
        redis_url=redis_cluster_url,
        key_prefix="{plstack}",
        grpc_port=0,
        metrics_port=0,
        model_store=make_tiny_model_store(tmp_path / "models"),
        builtin_models=False,
        device="cpu",
        heartbeat_s=0.2,
        shutdown_grace_s=5,
    )
    with Stack(settings, tmp_path / "stack", workers=1) as stack:
        with Client(stack.address, timeout=30) as client:
            job = client.create_prototype_job("tiny", ["banana"], config=FAST, seed=1)
            assert job.outcome == "queued"
            done = client.wait(job, timeout=120)
            assert done.state == "SUCCEEDED" and done.attempts == 1, done
            png = client.get_prototype(done, 0).png
            assert Image.open(io.BytesIO(png)).format == "PNG"
            again = client.create_prototype_job("tiny", ["banana"], config=FAST, seed=1)
            assert (again.outcome, again.state) == ("cache_hit", "SUCCEEDED")
            assert client.get_prototype(again, 0).png == png
            # cancel a long job while the worker runs it
            long = client.create_prototype_job("tiny", ["cherry"], config={**FAST, "steps": 5000})
            for event in client.watch_job(long, timeout=60):
                if event.state == "RUNNING" and event.progress.step >= 1:
                    break
            client.cancel_job(long)
            final = list(client.watch_job(long, timeout=60))[-1]
            assert final.state == "CANCELLED" and final.progress.step < 5000
        assert stack.dead_children() == []
    # Everything the service wrote sits on the one master that owns the {plstack} slot.
    hosts, *_ = parse_cluster_url(redis_cluster_url)
    sizes = [redis.Redis(host=h, port=p).dbsize() for h, p in hosts]
    assert sorted(sizes)[:2] == [0, 0] and max(sizes) > 0, sizes
