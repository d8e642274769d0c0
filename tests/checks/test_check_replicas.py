"""Checks live in Redis: several real API servers on one real Redis (and one real worker)
answer for the same checks, a check outlives the API that started it (graceful stop or
SIGKILL of a real API process: another replica resumes it without generating anything
twice), a cancel through one replica stops the driver on another, and tenants never see
each other's checks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from checks_serving import check_settings
from protolens import AsyncClient, Client
from protolens.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from protolens_server.api.server import ApiServer, start_server
from protolens_server.api.tenancy import DEFAULT_TENANT
from protolens_server.checks.store import CheckRecord, CheckStore
from protolens_server.config import Settings
from protolens_server.errors import CheckNotFound
from protolens_server.queue.connection import redis_from_url
from protolens_server.queue.keys import Keys
from protolens_server.queue.records import JobState
from protolens_server.worker import Worker

HERE = Path(__file__).resolve().parent
FAST = {"steps": 32, "prototypes": 2, "config": {"lr": 0.1, "transforms": "small"}}
SLOW = {**FAST, "steps": 240}  # about 1 s per job here: long enough to kill an API mid-way


def tenant_from_metadata(context: Any) -> str:
    """Tests only: the caller names its tenant in ``x-tenant`` metadata."""
    return dict(context.invocation_metadata() or ()).get("x-tenant", DEFAULT_TENANT)


def check_id(check: Any) -> str:
    return check.name.removeprefix("checks/")


async def until(predicate: Callable[[], Any], timeout: float = 60, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@pytest.fixture
def settings(redis_url, shapes_store) -> Settings:
    return check_settings(redis_url, shapes_store)


@pytest.fixture
async def worker_factory(settings) -> AsyncIterator[Callable[[], Worker]]:
    """Start the (one) real worker when the test says so; stopped after."""
    tasks: list[asyncio.Task[None]] = []
    workers: list[Worker] = []

    def start() -> Worker:
        worker = Worker(settings, name="w-replicas", block_ms=100)
        tasks.append(asyncio.create_task(worker.run()))
        workers.append(worker)
        return worker

    yield start
    for w, task in zip(workers, tasks, strict=True):
        w.request_stop()
        await asyncio.wait_for(task, 30)


@pytest.fixture
async def worker(worker_factory) -> Worker:
    return worker_factory()


@pytest.fixture
async def api_factory(settings) -> AsyncIterator[Callable[..., Any]]:
    """Start API replicas on the same Redis; every one still running is stopped after."""
    started: list[ApiServer] = []

    async def start(sample_interval_s: float = 0.2, **kw: Any) -> tuple[ApiServer, str]:
        api, port = await start_server(
            settings,
            sample_interval_s=sample_interval_s,
            tenant_resolver=tenant_from_metadata,
            **kw,
        )
        started.append(api)
        return api, f"127.0.0.1:{port}"

    yield start
    for api in started:
        with contextlib.suppress(Exception):
            await api.stop(grace=0)


def client(address: str, tenant: str = DEFAULT_TENANT) -> AsyncClient:
    return AsyncClient(address, metadata=[("x-tenant", tenant)])


def names_listed(address: str, tenant: str) -> list[str]:
    """Every check of ``tenant``, newest first, through the blocking client's pages."""
    out, token = [], ""
    with Client(address, metadata=[("x-tenant", tenant)]) as c:
        while True:
            page, token = c.list_checks(page_size=1, page_token=token)
            out += [check.name for check in page]
            if not token:
                return out


async def test_store_writes_are_one_way_and_fenced(redis_url) -> None:
    await _one_way_and_fenced(aioredis.from_url(redis_url), Keys("t"))


@pytest.mark.xdist_group("redis-cluster")
async def test_store_on_a_redis_cluster(redis_cluster_url) -> None:
    """The same on a real 3-master Cluster: every script's keys share the prefix's slot."""
    await _one_way_and_fenced(redis_from_url(redis_cluster_url), Keys("{pltest}"))


async def _one_way_and_fenced(redis: Any, keys: Keys) -> None:
    store = CheckStore(redis, keys, retention_s=600)
    try:
        run = CheckRecord("c1", "acme", "m@2", "m@1", {"classes": [0]})
        await store.create(run, "owner-a", 5000)
        assert (await store.get("c1", "acme")).lease_held
        with pytest.raises(CheckNotFound):
            await store.get("c1", "other")  # another tenant's check: like a missing one
        run.progress = 0.5
        assert await store.update(run, "owner-b") == "lost"  # not the lease holder: nothing
        assert (await store.get("c1")).progress == 0.0
        assert await store.update(run, "owner-a") == "RUNNING"
        run.progress = 0.3
        assert await store.update(run, "owner-a") == "RUNNING"
        assert (await store.get("c1")).progress == 0.5  # progress never goes down
        assert not await store.take("c1", "owner-b", 5000)  # a live lease is not taken
        await store.release("c1", "owner-b")  # not theirs: still held
        assert (await store.get("c1")).lease_held

        run.state, run.verdict = "SUCCEEDED", {"passed": True}
        assert await store.finish(run, "owner-a", html="<html>", json_text="{}") == "ok"
        assert await store.report("c1") == ("<html>", "{}")
        run.state = "FAILED"
        assert await store.finish(run, "owner-a") == "SUCCEEDED"  # a finished check is final
        assert await store.cancel("c1", "acme") == ("finished", "SUCCEEDED")
        assert await store.cancel("c1", "other") == ("notfound", "")
        assert await store.update(run, "owner-a") == "SUCCEEDED"
        assert not await store.take("c1", "owner-b", 5000)
        final = await store.get("c1", "acme")
        assert final.state == "SUCCEEDED" and final.verdict == {"passed": True}
        assert not final.lease_held and await store.orphans() == []
        for key in (store.keys.check("c1"), store.keys.check_report("c1")):
            assert 0 < await redis.ttl(key) <= 600  # kept as long as job records

        # A RUNNING check whose driver let go is an orphan until someone takes it.
        await store.create(CheckRecord("c2", "acme", "m@2", "", {}), "owner-a", 5000)
        await store.release("c2", "owner-a")
        assert await store.orphans() == ["c2"]
        assert await store.take("c2", "owner-b", 5000)
        taken = await store.get("c2")
        assert taken.drives == 2 and taken.driver == "owner-b" and await store.orphans() == []
        assert await store.cancel("c2", "acme") == ("cancelled", "CANCELLED")
        assert (await store.list("acme"))[0][0].check_id == "c2"  # newest first
    finally:
        await redis.aclose()


async def test_two_replicas_share_checks_and_tenants_stay_apart(api_factory, worker) -> None:
    api_a, addr_a = await api_factory()
    api_b, addr_b = await api_factory()
    async with client(addr_a, "acme") as a, client(addr_b, "acme") as b:
        started = await a.start_check("shapes@2", baseline="shapes@1", **FAST)
        done = await b.wait_check(started, timeout=120)  # read to the end through B
        assert done.state == "SUCCEEDED" and done.progress == 1.0 and "bars" in done.flagged_classes
        report_b = await b.get_check_report(done)
        assert report_b == await a.get_check_report(done)
        assert json.loads(report_b.json)["flagged_classes"] == list(done.flagged_classes)
        record = await api_b.checks.store.get(check_id(done))
        assert record.drives == 1 and record.driver == api_a.checks.owner  # B only read

        again = await b.start_check("shapes@2", baseline="shapes@1", **FAST)
        assert again.cache_hits == again.jobs == 2
        page, token = await a.list_checks()
        assert [c.name for c in page] == [again.name, done.name] and token == ""
        first, token = await a.list_checks(page_size=1)
        rest, token = await b.list_checks(page_size=1, page_token=token)
        assert [c.name for c in first + rest] == [again.name, done.name]
        assert await a.list_checks(page_size=1, page_token=token) == ([], "")
        with pytest.raises(InvalidArgumentError):
            await a.list_checks(page_size=-1)
        await b.wait_check(again, timeout=60)
    assert await asyncio.to_thread(names_listed, addr_a, "acme") == [again.name, done.name]
    assert await asyncio.to_thread(names_listed, addr_b, "other") == []

    # Another tenant, on either replica: NOT_FOUND exactly like a check that never was.
    async with client(addr_b, "other") as other:
        assert await other.list_checks() == ([], "")
        missing_id = "0" * 24
        for call in (other.get_check, other.cancel_check, other.get_check_report):
            with pytest.raises(NotFoundError) as theirs:
                await call(done.name)
            with pytest.raises(NotFoundError) as missing:
                await call(f"checks/{missing_id}")
            assert theirs.value.reason == missing.value.reason
            assert str(theirs.value).replace(check_id(done), missing_id) == str(missing.value)
    async with client(addr_a, "acme") as a:
        assert (await a.get_check(done)).state == "SUCCEEDED"  # the other tenant changed nothing


async def test_cancel_through_another_replica(api_factory, worker) -> None:
    api_a, addr_a = await api_factory()
    api_b, addr_b = await api_factory()
    async with client(addr_a) as a, client(addr_b) as b:
        slow = await a.start_check("shapes@1", steps=2000, seed=7)
        assert check_id(slow) in api_a.checks.driving
        record = await api_a.checks.store.get(check_id(slow))

        async def generating() -> bool:
            jobs = [await api_a.queue.get(j) for j in record.job_ids]
            return any(j.state == JobState.RUNNING and j.step > 0 for j in jobs)

        await until(generating, what="a generation step")
        cancelled = await b.cancel_check(slow)
        assert cancelled.state == "CANCELLED"

        async def driver_stopped() -> bool:
            return check_id(slow) not in api_a.checks.driving

        await until(driver_stopped, timeout=10, what="A's driver to notice the cancel")

        async def jobs_cancelled() -> bool:
            jobs = [await api_a.queue.get(j) for j in record.job_ids]
            return all(j.state == JobState.CANCELLED for j in jobs)

        await until(jobs_cancelled, timeout=30, what="the check's jobs to be cancelled")
        assert (await a.get_check(slow)).state == "CANCELLED"
        with pytest.raises(FailedPreconditionError):
            await a.cancel_check(slow)
        with pytest.raises(FailedPreconditionError):
            await b.get_check_report(slow)
        final = await api_b.checks.store.get(check_id(slow))
        assert final.state == "CANCELLED" and final.drives == 1 and not final.lease_held


async def _midway(api: ApiServer, name: str) -> CheckRecord:
    """Wait until the check's generation is under way (a job has made steps)."""

    async def generating() -> CheckRecord | None:
        record = await api.checks.store.get(name.removeprefix("checks/"))
        jobs = [await api.queue.get(j) for j in record.job_ids]
        busy = any(j.step > 0 for j in jobs) and not all(j.state.finished for j in jobs)
        return record if busy else None

    return await until(generating, what="generation under way")


async def _generated_once(
    api: ApiServer, record: CheckRecord, worker: Worker, report_json: str
) -> None:
    """Nothing generated twice: the tenant's only jobs are the check's first ones, each ran once."""
    jobs, _ = await api.queue.list(tenant=record.tenant)
    assert sorted(j.job_id for j in jobs) == sorted(record.job_ids)
    assert all(j.state == JobState.SUCCEEDED and not j.cache_hit for j in jobs)
    assert worker.batches_run == len(record.job_ids)  # one engine batch per job, none again
    assert json.loads(report_json)["generation"]["job_ids"] == record.job_ids


async def test_api_restart_mid_check_then_finished_check_survives(
    api_factory, worker_factory
) -> None:
    api_a, addr_a = await api_factory()
    async with client(addr_a) as a:
        started = await a.start_check("shapes@2", baseline="shapes@1", **FAST)
    before = await api_a.checks.store.get(check_id(started))
    assert before.state == "RUNNING" and before.lease_held and len(before.job_ids) == 2
    # Stopped while its jobs wait for a worker (mid-generation: the SIGKILL test below).
    await api_a.stop(grace=0)  # graceful: the driver lets go of its lease at once
    worker = worker_factory()

    # A new API (its sweep is far off, so the GetCheck itself resumes the check).
    api_b, addr_b = await api_factory(sample_interval_s=3600)
    orphan = await api_b.checks.store.get(check_id(started))
    assert orphan.state == "RUNNING" and not orphan.lease_held
    async with client(addr_b) as b:
        done = await b.wait_check(started, timeout=120)
        assert done.state == "SUCCEEDED", done.error
        report = await b.get_check_report(done)
    record = await api_b.checks.store.get(check_id(done))
    assert record.drives == 2 and record.driver == api_b.checks.owner
    assert record.job_ids[:2] == before.job_ids  # then the confirming round's, once
    assert done.jobs == len(record.job_ids) == 2 + _confirming_jobs(report.json)
    assert done.cache_hits == 0
    await _generated_once(api_b, record, worker, report.json)
    await api_b.stop(grace=0)

    # A restart later: the finished check and its report are read from Redis.
    _api_c, addr_c = await api_factory()
    async with client(addr_c) as c:
        again = await c.get_check(started)
        assert again.state == "SUCCEEDED" and again.flagged_classes == done.flagged_classes
        assert await c.get_check_report(again) == report
        assert [x.name for x in (await c.list_checks())[0]] == [started.name]


@pytest.fixture
def api_process(settings):
    """A real API server process (lease 3 s) started on the test's Redis; killed after.
    A 1-s lease lapsed under a loaded CI run (two test workers beside the demo's stack):
    the other replica took the check over while its driver was alive."""
    procs: list[subprocess.Popen[str]] = []

    def start() -> tuple[subprocess.Popen[str], str]:
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "checks_api_process.py"), settings.redis_url,
             str(settings.model_store), "3.0"],
            stdout=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        procs.append(proc)
        line = proc.stdout.readline() if proc.stdout else ""
        assert line.strip().isdigit(), f"API process did not start: {line!r}"
        return proc, f"127.0.0.1:{line.strip()}"

    yield start
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


async def test_killed_api_process_check_is_resumed_by_a_sweep(
    api_process, api_factory, worker
) -> None:
    proc, addr_a = await asyncio.to_thread(api_process)
    api_b, _addr_b = await api_factory(sample_interval_s=0.2)
    async with client(addr_a) as a:
        started = await a.start_check("shapes@2", baseline="shapes@1", **SLOW)
    before = await _midway(api_b, started.name)
    assert before.lease_held and before.driver != api_b.checks.owner
    os.killpg(proc.pid, signal.SIGKILL)  # no goodbye: its lease expires after 3 s
    await asyncio.to_thread(proc.wait, 10)

    async def finished_by_b() -> CheckRecord | None:  # no RPC: B's sampler sweep resumes it
        record = await api_b.checks.store.get(check_id(started))
        return record if record.finished else None

    record = await until(finished_by_b, timeout=120, what="B to resume and finish the check")
    assert record.state == "SUCCEEDED", record.error
    assert record.drives == 2 and record.driver == api_b.checks.owner
    assert record.job_ids[:2] == before.job_ids
    _html, report_json = await api_b.checks.report(check_id(started), DEFAULT_TENANT)
    jobs = 2 + _confirming_jobs(report_json)
    assert len(record.job_ids) == jobs
    assert record.stats.jobs == jobs and record.stats.cache_hits == 0  # nothing submitted again
    await _generated_once(api_b, record, worker, report_json)


async def test_a_check_killed_while_confirming_its_flags_is_resumed_once(
    api_process, api_factory, worker
) -> None:
    """The confirming round (checks/confirmation.py) resumes like the first: its jobs are in
    the record, the resumed driver picks the same classes and waits on the same jobs."""
    proc, addr_a = await asyncio.to_thread(api_process)
    api_b, _addr_b = await api_factory(sample_interval_s=0.2)
    async with client(addr_a) as a:
        started = await a.start_check("shapes@2", baseline="shapes@1", **SLOW)

    async def confirming() -> CheckRecord | None:
        record = await api_b.checks.store.get(check_id(started))
        if len(record.job_ids) <= 2:
            return None
        jobs = [await api_b.queue.get(j) for j in record.job_ids[2:]]
        busy = any(j.step > 0 for j in jobs) and not all(j.state.finished for j in jobs)
        return record if busy else None

    before = await until(confirming, timeout=120, what="the confirming round under way")
    assert before.driver != api_b.checks.owner
    os.killpg(proc.pid, signal.SIGKILL)
    await asyncio.to_thread(proc.wait, 10)

    async def finished_by_b() -> CheckRecord | None:
        record = await api_b.checks.store.get(check_id(started))
        return record if record.finished else None

    record = await until(finished_by_b, timeout=120, what="B to resume and finish the check")
    assert record.state == "SUCCEEDED", record.error
    assert record.drives == 2 and record.job_ids == before.job_ids
    assert record.stats.jobs == len(record.job_ids) and record.stats.cache_hits == 0
    _html, report_json = await api_b.checks.report(check_id(started), DEFAULT_TENANT)
    assert json.loads(report_json)["confirmation"]["prototypes"] == 3
    await _generated_once(api_b, record, worker, report_json)


def _confirming_jobs(report_json: str) -> int:
    """Jobs of the confirming round: one per chunk of confirmed classes per version."""
    confirmation = json.loads(report_json)["confirmation"]
    if confirmation is None:
        return 0
    return 2 * -(-len(confirmation["classes"]) // 4)  # chunks of 4 (DEFAULT_CHUNK)
