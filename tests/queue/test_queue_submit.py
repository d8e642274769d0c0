"""submit/get/list/cancel: idempotency, dedup, cache hits, limits, tenants."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from protolens_server.config import Settings
from protolens_server.engine import Target
from protolens_server.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    JobNotFound,
    QueueFull,
)
from protolens_server.queue.jobs import JobQueue
from protolens_server.queue.records import JobState, StoredPrototype
from queue_helpers import make_spec


async def finish_next(queue: JobQueue, consumer, png: bytes = b"\x89PNG fake") -> str:
    """Run the next queued job to SUCCEEDED through the real worker-side calls."""
    (entry,) = await consumer.read(1)
    outcome, delivery = await consumer.claim(entry)
    assert outcome == "run"
    protos = [
        StoredPrototype(
            target=t,
            index=0,
            probability=0.9,
            logit=4.0,
            top5=[(t.classes[0], 0.9)],
            steps=8,
            seed=delivery.record.spec.seed,
        )
        for t in delivery.record.spec.targets
    ]
    assert await consumer.finish(delivery, protos, [png] * len(protos), step=8)
    return delivery.job_id


async def test_submit_queues_once_and_get_returns_it(queue: JobQueue) -> None:
    record, outcome = await queue.submit(make_spec())
    assert outcome == "queued" and record.state == JobState.QUEUED
    assert await queue.redis.xlen(queue.keys.stream(1)) == 1
    got = await queue.get(record.job_id, tenant="team-a")
    assert got.job_id == record.job_id and got.spec == record.spec
    assert got.total_steps == 8 and got.cache_key == record.cache_key


async def test_same_request_id_replays_the_same_job(queue: JobQueue) -> None:
    first, _ = await queue.submit(make_spec(request_id="r1"))
    # a retry: the same request, at another priority and after a redeploy (new digests)
    retry = replace(make_spec(request_id="r1", priority=0), model_digest="d2", engine_version="9")
    again, outcome = await queue.submit(retry)
    assert outcome == "idempotent_replay" and again.job_id == first.job_id
    assert await queue.redis.xlen(queue.keys.stream(1)) == 1


async def test_a_request_id_reused_for_another_request_is_already_exists(
    queue: JobQueue,
) -> None:
    """Replaying the old job would lose the new request without a word (the caller takes
    the answer for its new job): refused, naming the job the request_id made."""
    first, _ = await queue.submit(make_spec(request_id="r1"))
    for changed in (
        make_spec(request_id="r1", seed=99),
        replace(make_spec(request_id="r1"), model="other"),
        replace(make_spec(request_id="r1"), reference_set="refs"),
    ):
        with pytest.raises(AlreadyExists) as refused:
            await queue.submit(changed)
        assert refused.value.metadata == {"request_id": "r1", "job": first.job_id}
        assert "a different request; give this request a new request_id" in str(refused.value)
    assert await queue.redis.xlen(queue.keys.stream(1)) == 1  # nothing queued
    other_tenant, outcome = await queue.submit(make_spec(request_id="r1", tenant="t2", seed=99))
    assert outcome == "queued" and other_tenant.job_id != first.job_id  # keys are per tenant


async def test_identical_concurrent_submits_make_one_job(queue: JobQueue) -> None:
    answers = await asyncio.gather(
        *(queue.submit(make_spec(request_id=f"r{i}")) for i in range(12))
    )
    ids = {rec.job_id for rec, _ in answers}
    outcomes = sorted(o for _, o in answers)
    assert len(ids) == 1
    assert outcomes == ["dedup_join"] * 11 + ["queued"]
    assert await queue.redis.xlen(queue.keys.stream(1)) == 1


async def test_dedup_across_tenants_hides_who_else_asked(queue: JobQueue) -> None:
    a, _ = await queue.submit(make_spec(tenant="team-a", request_id="ra"))
    b, outcome = await queue.submit(make_spec(tenant="team-b", request_id="rb"))
    assert outcome == "dedup_join" and b.job_id == a.job_id
    assert b.spec.tenant == "team-b" and b.spec.request_id == ""
    listed, _ = await queue.list(tenant="team-b")
    assert [r.job_id for r in listed] == [a.job_id]
    # team-b cancelling only detaches team-b; team-a's job keeps going.
    cancelled = await queue.cancel(a.job_id, tenant="team-b")
    assert cancelled.state == JobState.CANCELLED
    with pytest.raises(JobNotFound):
        await queue.get(a.job_id, tenant="team-b")
    assert (await queue.get(a.job_id, tenant="team-a")).state == JobState.QUEUED


async def test_cached_result_is_a_finished_job_at_once(queue: JobQueue, consumer_factory) -> None:
    first, _ = await queue.submit(make_spec((1, 2)))
    await finish_next(queue, consumer_factory(), png=b"png-bytes")
    hit, outcome = await queue.submit(make_spec((1, 2), tenant="team-c"))
    assert outcome == "cache_hit" and hit.job_id != first.job_id
    assert hit.state == JobState.SUCCEEDED and hit.cache_hit
    assert [p.target for p in hit.prototypes] == [Target((1,)), Target((2,))]
    assert await queue.get_png(hit.job_id, 1, tenant="team-c") == b"png-bytes"
    assert await queue.redis.xlen(queue.keys.stream(1)) == 0
    events = [e async for _, e in queue.watch(hit.job_id)]
    assert [e.state for e in events] == [JobState.SUCCEEDED]
    # Anything that changes the output is a different key.
    _, outcome = await queue.submit(make_spec((1, 2), seed=1))
    assert outcome == "queued"


async def test_cancel_queued_job(queue: JobQueue) -> None:
    record, _ = await queue.submit(make_spec())
    with pytest.raises(JobNotFound):
        await queue.cancel(record.job_id, tenant="someone-else")
    cancelled = await queue.cancel(record.job_id, tenant="team-a")
    assert cancelled.state == JobState.CANCELLED and cancelled.finished_at > 0
    assert await queue.redis.xlen(queue.keys.stream(1)) == 0
    with pytest.raises(FailedPrecondition):
        await queue.cancel(record.job_id, tenant="team-a")
    # The identical request now starts afresh instead of joining a cancelled job.
    again, outcome = await queue.submit(make_spec())
    assert outcome == "queued" and again.job_id != record.job_id


async def test_cancel_running_job_sets_flag_seen_by_heartbeat(
    queue: JobQueue, consumer_factory
) -> None:
    record, _ = await queue.submit(make_spec())
    consumer = consumer_factory()
    (entry,) = await consumer.read(1)
    _, delivery = await consumer.claim(entry)
    assert (await queue.cancel(record.job_id)).state == JobState.RUNNING
    await consumer.heartbeat([delivery])
    assert delivery.cancelled and not delivery.lost
    assert await consumer.end(delivery, "cancel", step=3) == "cancelled"
    final = await queue.get(record.job_id)
    assert (final.state == JobState.CANCELLED and final.step == 0) or final.step == 3


async def test_other_tenants_cannot_see_a_job(queue: JobQueue) -> None:
    record, _ = await queue.submit(make_spec(tenant="team-a"))
    for call in (
        queue.get(record.job_id, tenant="team-b"),
        queue.cancel(record.job_id, tenant="team-b"),
        queue.get_png(record.job_id, 0, tenant="team-b"),
    ):
        with pytest.raises(JobNotFound):
            await call
    with pytest.raises(JobNotFound):
        async for _ in queue.watch(record.job_id, tenant="team-b"):
            pass
    assert (await queue.list(tenant="team-b"))[0] == []
    with pytest.raises(JobNotFound):
        await queue.get("no-such-job")


async def test_list_is_newest_first_and_pages(queue: JobQueue) -> None:
    ids = []
    for seed in range(5):
        rec, _ = await queue.submit(make_spec(seed=seed))
        ids.append(rec.job_id)
        await asyncio.sleep(0.002)
    page1, token = await queue.list(tenant="team-a", page_size=2)
    page2, token2 = await queue.list(tenant="team-a", page_size=2, page_token=token)
    page3, token3 = await queue.list(tenant="team-a", page_size=2, page_token=token2)
    got = [r.job_id for r in page1 + page2 + page3]
    assert got == ids[::-1] and token3 == ""


async def test_queue_limit_raises_queue_full_with_retry_hint(redis_url: str) -> None:
    q = await JobQueue.connect(Settings(redis_url=redis_url, key_prefix="lim", max_queued_jobs=2))
    try:
        await q.submit(make_spec(seed=1))
        await q.submit(make_spec(seed=2, priority=0))
        with pytest.raises(QueueFull) as info:
            await q.submit(make_spec(seed=3))
        assert info.value.retry_after_s > 0
    finally:
        await q.close()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"priority": 5}, "priority"),
        ({"classes": ()}, "targets"),
        ({"steps": 10**6}, "config.steps"),
        ({"tenant": ""}, "tenant"),
    ],
)
async def test_bad_specs_name_the_field(queue: JobQueue, change: dict, field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        await queue.submit(make_spec(**change))
    assert info.value.field == field


async def test_tenant_and_request_id_cannot_collide_in_the_idempotency_key(queue: JobQueue) -> None:
    a, _ = await queue.submit(make_spec(tenant="a:b", request_id="c", seed=1))
    b, outcome = await queue.submit(make_spec(tenant="a", request_id="b:c", seed=2))
    assert outcome == "queued" and a.job_id != b.job_id
    again, outcome = await queue.submit(make_spec(tenant="a:b", request_id="c", seed=1))
    assert outcome == "idempotent_replay" and again.job_id == a.job_id
