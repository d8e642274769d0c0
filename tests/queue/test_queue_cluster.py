"""The queue on a real 3-master Redis Cluster (``redis+cluster://``, key_prefix ``{pltest}``).

The submit -> claim -> finish -> cache hit -> cancel -> reclaim tests of
test_queue_submit.py and test_queue_delivery.py, and the blob store's tests (results
naming blobs, the sweep's SCAN over the cluster), run here again unchanged: this module's
``settings`` fixture points the shared ``queue`` and ``consumer_factory`` fixtures at
the cluster.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import pytest
import redis
from protolens_server.config import Settings, hash_tag
from protolens_server.errors import InvalidArgument
from protolens_server.queue.connection import is_cluster, parse_cluster_url, redis_from_url
from protolens_server.queue.jobs import JobQueue
from queue_helpers import make_spec
from redis.cluster import key_slot
from test_queue_blobs import (  # noqa: F401
    test_isolation_input_image_is_a_blob_the_sweep_keeps_while_a_job_may_need_it,
    test_result_hash_names_blobs_and_holds_no_image_bytes,
    test_sweep_collects_only_old_unreferenced_blobs,
    test_sweep_runs_on_one_replica_per_interval,
)
from test_queue_delivery import (  # noqa: F401 (collected here again, on the cluster)
    test_cancel_while_entry_read_but_not_started,
    test_dead_worker_job_is_reclaimed_and_stored_once,
    test_failing_job_is_retried_then_dead_lettered,
    test_handback_lets_another_worker_take_the_job_at_once,
    test_heartbeat_keeps_a_long_job_from_being_reclaimed,
    test_priorities_are_read_high_first,
    test_stats_and_gauges,
    test_watch_replays_then_follows_until_finished_and_resumes,
)
from test_queue_submit import (  # noqa: F401
    finish_next,
    test_cached_result_is_a_finished_job_at_once,
    test_cancel_queued_job,
    test_cancel_running_job_sets_flag_seen_by_heartbeat,
    test_dedup_across_tenants_hides_who_else_asked,
    test_identical_concurrent_submits_make_one_job,
    test_list_is_newest_first_and_pages,
    test_same_request_id_replays_the_same_job,
    test_submit_queues_once_and_get_returns_it,
)

pytestmark = pytest.mark.xdist_group("redis-cluster")  # one cluster per xdist worker


@pytest.fixture
def settings(redis_cluster_url: str, tmp_path: Path) -> Settings:
    return Settings(
        redis_url=redis_cluster_url,
        blob_url=str(tmp_path / "blobs"),
        key_prefix="{pltest}",
        reclaim_idle_s=0.2,
        heartbeat_s=0.05,
        max_attempts=3,
        job_retention_s=3600,
    )


def _masters(url: str) -> list[redis.Redis]:
    hosts, *_ = parse_cluster_url(url)
    return [redis.Redis(host=h, port=p) for h, p in hosts]


def test_cluster_urls_parse_and_bad_ones_name_the_fix() -> None:
    hosts, user, password, tls = parse_cluster_url(
        "rediss+cluster://ops:s%3Acret@10.0.0.1:7000,[::1]:7001,node3/0"
    )
    assert hosts == [("10.0.0.1", 7000), ("::1", 7001), ("node3", 6379)]
    assert (user, password, tls) == ("ops", "s:cret", True)
    assert parse_cluster_url("redis+cluster://:pw@h:1")[1:] == (None, "pw", False)
    for url, fix in (
        ("redis+cluster://h:7000/2", "only database 0"),
        ("redis+cluster:///", "names its nodes"),
        ("redis+cluster://h:7000,:7001/", "bad cluster node address"),
        ("redis+cluster://h:70x0/", "bad cluster node address"),
        ("redis+cluster://h:7000/?ssl_cert_reqs=none", "no ?options"),
    ):
        with pytest.raises(InvalidArgument, match=re.escape(fix)) as info:
            redis_from_url(url)
        assert info.value.field == "redis_url"


@pytest.mark.parametrize("prefix", ["protolens", "{}protolens", "pl{", "pl:}{"])
def test_a_cluster_url_needs_a_hash_tag_prefix(prefix: str) -> None:
    with pytest.raises(InvalidArgument, match=r"set key_prefix to '\{") as info:
        Settings(redis_url="redis+cluster://127.0.0.1:7000/", key_prefix=prefix)
    assert info.value.field == "key_prefix" and "Redis Cluster" in str(info.value)


@pytest.mark.parametrize(
    ("prefix", "tag"), [("{pl}", "pl"), ("a{b}c", "b"), ("{x}{y}", "x"), ("pl", ""), ("{}", "")]
)
def test_hash_tag_follows_the_redis_rule(prefix: str, tag: str) -> None:
    assert hash_tag(prefix) == tag
    # the real Redis rule: a key made with the prefix hashes like the tag alone
    if tag:
        assert key_slot(f"{prefix}:job:{{abc}}".encode()) == key_slot(tag.encode())


async def test_every_queue_key_lives_in_one_slot_on_one_master(
    queue: JobQueue, consumer_factory, redis_cluster_url: str
) -> None:
    assert is_cluster(queue.redis)
    await queue.submit(make_spec((1,)))
    await finish_next(queue, consumer_factory(), png=b"png")
    assert (await queue.submit(make_spec((1,))))[1] == "cache_hit"
    await queue.submit(make_spec((4,), tenant="team-b", request_id="r"))
    masters = _masters(redis_cluster_url)
    sizes = [m.dbsize() for m in masters]
    assert sorted(sizes)[:2] == [0, 0] and max(sizes) > 10, sizes  # one master holds all
    owner = masters[sizes.index(max(sizes))]
    slot = key_slot(b"{pltest}")
    assert owner.execute_command("CLUSTER COUNTKEYSINSLOT", slot) == max(sizes)
    for m in masters:
        m.close()


async def test_api_keys_in_a_multi_exec_pipeline_and_the_rate_limiter_script(
    queue: JobQueue,
) -> None:
    from protolens_server.api.auth import ApiKeyStore, RateLimiter
    from protolens_server.errors import QuotaExceeded
    from protolens_server.quotas import Quotas, TenantLimits

    store = ApiKeyStore(queue.redis, queue.keys)  # create() is a MULTI/EXEC pipeline
    info, secret = await store.create("team-a", "tenant", "ci")
    assert (await store.verify(secret)).tenant == "team-a"
    assert [k.key_id for k in await store.list("team-a")] == [info.key_id]
    limiter = RateLimiter(
        queue.redis, queue.keys, Quotas(defaults=TenantLimits(requests_per_second=2))
    )
    with pytest.raises(QuotaExceeded):  # 10 calls in far less than a second
        for _ in range(10):
            await limiter.check("team-a")


async def test_a_master_down_is_retried_with_backoff_then_reconnected(redis_cluster) -> None:
    client = redis_from_url(redis_cluster.url)
    try:
        await client.set("{pl}:k", "v")
        owner = next(i for i, m in enumerate(_masters(redis_cluster.url)) if m.dbsize())
        redis_cluster.stop_node(owner)
        started = time.monotonic()
        with pytest.raises(redis.ConnectionError):  # what the API answers UNAVAILABLE to
            await client.get("{pl}:k")
        assert time.monotonic() - started >= 0.7  # backoff 0.1 + 0.2 + 0.4 s between rounds
        redis_cluster.start_node(owner)  # its AOF and nodes.conf bring slots and data back
        assert await client.get("{pl}:k") == b"v"  # the same client reconnects
        await client.set("{pl}:k2", "w")
        assert await client.get("{pl}:k2") == b"w"
    finally:
        await client.aclose()


def test_cli_bootstrap_key_goes_into_the_cluster(
    redis_cluster_url: str, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    from protolens.cli import main as cli_main

    argv = ["admin", "keys", "create", "--bootstrap", "--redis-url", redis_cluster_url]
    monkeypatch.delenv("PROTOLENS_KEY_PREFIX", raising=False)
    assert cli_main([*argv, "--tenant", "ops"]) == 1  # default prefix: refused, one line
    err = capsys.readouterr().err.strip()
    assert err.startswith("protolens: INVALID_ARGUMENT: key_prefix:") and "'{protolens}'" in err
    monkeypatch.setenv("PROTOLENS_KEY_PREFIX", "{plcli}")
    assert cli_main([*argv, "--tenant", "ops", "--role", "admin", "--json"]) == 0
    secret = json.loads(capsys.readouterr().out)["secret_key"]

    async def verify() -> str:
        from protolens_server.api.auth import ApiKeyStore
        from protolens_server.queue.keys import Keys

        client = redis_from_url(redis_cluster_url)
        try:
            return (await ApiKeyStore(client, Keys("{plcli}")).verify(secret)).role
        finally:
            await client.aclose()

    assert asyncio.run(verify()) == "admin"


def test_a_worker_refuses_to_start_on_a_cluster_without_a_hash_tag(
    redis_cluster_url: str, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    from protolens_server.worker.main import main as worker_main

    monkeypatch.setenv("PROTOLENS_KEY_PREFIX", "plain")
    assert worker_main(["--redis-url", redis_cluster_url, "--burst"]) == 2
    err = capsys.readouterr().err
    assert "bad settings" in err and "set key_prefix to '{plain}'" in err
