"""CheckService over real gRPC: a real API server, a real worker and a real Redis. Workers
generate through the queue; re-running a check on unchanged versions is all cache hits
(job records and the cache metric say so, and the worker runs no batch)."""

from __future__ import annotations

import asyncio
import json

import pytest
from checks_serving import serving
from checks_shortcut_models import CONFIG
from protolens import AsyncClient
from protolens.cli import main
from protolens.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from protolens_server import metrics

POLICY_YAML = "min_confidence: 0.5\nmax_drift: 0.6\nmin_cross_confidence: 0.5\n"
OPTIONS = {
    "steps": CONFIG.steps,
    "prototypes": CONFIG.prototypes,
    "config": {"lr": CONFIG.lr, "transforms": CONFIG.transforms},
    "policy_yaml": POLICY_YAML,
}


def _hits() -> float:
    return (
        metrics.REGISTRY.get_sample_value("protolens_cache_lookups_total", {"result": "hit"}) or 0
    )


@pytest.fixture
async def service(redis_url, shapes_store):
    async with serving(redis_url, shapes_store) as running:
        yield running


async def test_check_through_the_queue_then_recheck_is_all_cache_hits(service, tmp_path):
    address, api, worker = service
    async with AsyncClient(address) as client:
        check = await client.start_check("shapes@2", baseline="shapes@1", **OPTIONS)
        assert check.state == "RUNNING" and check.name.startswith("checks/")
        assert check.jobs == 2 and check.cache_hits == 0
        seen: list[float] = []
        done = await client.wait_check(check, timeout=120, on_progress=lambda f, m: seen.append(f))
        assert done.state == "SUCCEEDED", done.error
        assert not done.passed and "bars" in done.flagged_classes
        assert "min_cross_confidence" in done.failed_rules
        assert seen[-1] == 1.0
        report = await client.get_check_report(done)
        doc = json.loads(report.json)
        assert doc["flagged_classes"] == list(done.flagged_classes)
        assert report.html.startswith("<!DOCTYPE html>") and 'id="class-1"' in report.html
        batches, hits = worker.batches_run, _hits()

        again = await client.start_check("shapes@2", baseline="shapes@1", **OPTIONS)
        assert again.cache_hits == again.jobs == 2  # answered at submit: nothing queued
        again = await client.wait_check(again, timeout=60)
        assert again.state == "SUCCEEDED" and again.flagged_classes == done.flagged_classes
        doc2 = json.loads((await client.get_check_report(again)).json)
        confirming = 2 if doc["confirmation"] else 0  # the flagged classes again: 1 chunk
        assert doc2["generation"]["jobs"] == 2 + confirming
        assert _hits() == hits + 2 + confirming
        assert worker.batches_run == batches  # the worker generated nothing
        for job_id in doc2["generation"]["job_ids"]:
            assert (await api.queue.get(job_id)).cache_hit
        assert [c["drift"] for c in doc2["classes"]] == [c["drift"] for c in doc["classes"]]

        # "previous": the version registered before shapes@2's, resolved by the server
        prev = await client.start_check("shapes@2", baseline="previous", **OPTIONS)
        assert prev.baseline == "shapes@1" and prev.cache_hits == prev.jobs == 2
        with pytest.raises(NotFoundError, match="first version"):
            await client.start_check("shapes@1", baseline="previous", **OPTIONS)

        # The CLI talks to the same service with --address (blocking client: off the loop).
        html = tmp_path / "report.html"
        args = ["check", "shapes@3", "--baseline", "shapes@1", "--address", address,
                "--steps", "32", "--prototypes", "2", "--report", str(html)]  # fmt: skip
        args += ["--lr", "0.1", "--transforms", "small"]
        code = await asyncio.to_thread(main, args)
        assert code == 0 and html.read_text().startswith("<!DOCTYPE html>")


async def test_cancel_and_bad_requests(service):
    address, _api, _ = service
    async with AsyncClient(address) as client:
        slow = await client.start_check("shapes@1", steps=2000, seed=7)
        await asyncio.sleep(0.5)
        cancelled = await client.cancel_check(slow)
        assert cancelled.state == "CANCELLED"
        with pytest.raises(FailedPreconditionError):
            await client.get_check_report(slow)
        with pytest.raises(FailedPreconditionError):
            await client.cancel_check(slow)
        with pytest.raises(NotFoundError):
            await client.start_check("shapes@9")
        with pytest.raises(InvalidArgumentError, match="max_drfit"):
            await client.start_check("shapes@1", policy_yaml="max_drfit: 1")
        with pytest.raises(InvalidArgumentError, match="zebra"):
            await client.start_check("shapes@1", classes=["zebra"])
        with pytest.raises(NotFoundError):
            await client.get_check("checks/nope")
