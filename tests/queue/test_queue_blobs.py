"""Result images live in the blob store, not in Redis: the result hash names them, a sweep
collects the ones no result names; the same store on a real S3 server (moto's)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from protolens_server.blobs import FsspecBlobStore, LocalBlobStore, blob_key, open_blob_store
from protolens_server.config import Settings
from protolens_server.errors import NotFound
from protolens_server.queue.blob_gc import collect_blobs
from protolens_server.queue.delivery import QueueConsumer
from protolens_server.queue.jobs import JobQueue
from protolens_server.queue.keys import PNG_FIELD
from protolens_server.queue.records import JobState, StoredPrototype
from queue_helpers import make_spec

PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(20_000)  # bytes that compress as badly as an image


SCORES = {"path_similarity": 0.5, "layers": [{"name": f"layer{i}", "z": 0.1} for i in range(99)]}


def _protos(delivery) -> list[StoredPrototype]:
    return [
        StoredPrototype(
            t, 0, 0.8, 3.0, [(t.classes[0], 0.8)], 8, delivery.record.spec.seed, scores=SCORES
        )
        for t in delivery.record.spec.targets
    ]


async def _run(queue: JobQueue, consumer: QueueConsumer, pngs: list[bytes], **spec):
    record, outcome = await queue.submit(make_spec(**spec))
    assert outcome == "queued"
    [entry] = await consumer.read(1)
    _, delivery = await consumer.claim(entry)
    assert await consumer.finish(delivery, _protos(delivery), pngs, step=8)
    return await queue.get(record.job_id)


def _age(store: LocalBlobStore, key: str, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(store.root / key[:2] / key, (then, then))


def test_local_store_is_content_addressed_and_atomic(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "b")
    assert list(store.list()) == [] and store.get("0" * 64) is None
    key = store.put(b"one")
    assert key == blob_key(b"one") and store.put(b"one") == key  # same bytes, one blob
    assert store.get(key) == b"one"
    assert [b.key for b in store.list()] == [key]
    assert not list((tmp_path / "b").rglob(".tmp-*"))  # no temporary file left
    store.delete(key)
    store.delete(key)  # already gone: nothing to do
    assert store.get(key) is None
    with pytest.raises(ValueError, match="not a blob key"):
        store.get("../../etc/passwd")
    assert isinstance(open_blob_store(str(tmp_path / "x")), LocalBlobStore)
    assert isinstance(open_blob_store(f"file://{tmp_path}/y"), LocalBlobStore)


async def test_result_hash_names_blobs_and_holds_no_image_bytes(
    queue: JobQueue, consumer_factory
) -> None:
    other = os.urandom(20_000)
    done = await _run(queue, consumer_factory(), [PNG, other], classes=(3, 4))
    assert done.state == JobState.SUCCEEDED
    assert [p.png_key for p in done.prototypes] == [blob_key(PNG), blob_key(other)]
    result = queue.keys.result(done.cache_key)
    assert await queue.redis.hget(result, PNG_FIELD.format(index=0)) == blob_key(PNG).encode()
    assert await queue.redis.memory_usage(result) < 2048 * 2  # two prototypes, no PNG bytes
    assert all(p.scores is None and p.has_scores for p in done.prototypes)  # scores: a blob
    await queue.load_scores(done, [1])
    assert done.prototypes[0].scores is None and done.prototypes[1].scores == SCORES
    assert await queue.get_png(done.job_id, 0) == PNG
    assert await queue.get_png(done.job_id, 1) == other
    hit, outcome = await queue.submit(make_spec(classes=(3, 4)))
    assert outcome == "cache_hit" and await queue.get_png(hit.job_id, 1) == other


async def test_result_stored_before_the_blob_store_is_still_served(queue: JobQueue) -> None:
    """Results written by an older version hold the PNG bytes in the hash until they expire."""
    done = await _run(queue, QueueConsumer(queue.redis, queue.settings, "w"), [PNG])
    await queue.redis.hset(queue.keys.result(done.cache_key), PNG_FIELD.format(index=0), b"old")
    assert await queue.get_png(done.job_id, 0) == b"old"


async def test_sweep_collects_only_old_unreferenced_blobs(
    queue: JobQueue, consumer_factory
) -> None:
    store = queue.blobs
    assert isinstance(store, LocalBlobStore)
    done = await _run(queue, consumer_factory(), [PNG])
    orphan_old, orphan_young = store.put(b"old orphan"), store.put(b"young orphan")
    for key in (blob_key(PNG), orphan_old):
        _age(store, key, 7200)  # older than the grace (3600 s)
    sweep = await queue.collect_blobs()
    assert (sweep.deleted, sweep.kept_young) == (1, 1) and sweep.referenced == 2  # PNG, scores
    assert store.get(orphan_old) is None and store.get(orphan_young) is not None
    assert await queue.get_png(done.job_id, 0) == PNG  # named by a result: kept, however old
    # The result expires (here: is deleted): its blob goes at the next sweep.
    await queue.redis.delete(queue.keys.result(done.cache_key))
    await queue.collect_blobs()
    assert store.get(blob_key(PNG)) is None
    # A job record that outlived its result says so, as before the blob store.
    with pytest.raises(NotFound, match="expired"):
        await queue.get_png(done.job_id, 0)


async def test_a_worker_that_lost_its_job_leaves_an_orphan_the_sweep_collects(
    queue: JobQueue, consumer_factory
) -> None:
    record, _ = await queue.submit(make_spec())
    slow = consumer_factory("slow")
    [entry] = await slow.read(1)
    _, first = await slow.claim(entry)
    await queue.redis.hset(queue.keys.job(record.job_id), "owner", "someone-else")
    assert not await slow.finish(first, _protos(first), [b"lost result"], step=8)
    _age(queue.blobs, blob_key(b"lost result"), 7200)
    assert (await queue.collect_blobs()).deleted == 1
    assert queue.blobs.get(blob_key(b"lost result")) is None


async def test_sweep_runs_on_one_replica_per_interval(settings: Settings, tmp_path: Path) -> None:
    settings = settings.model_copy(update={"blob_gc_interval_s": 60.0})
    a, b = await JobQueue.connect(settings), await JobQueue.connect(settings)
    try:
        await a.redis.delete(a.keys.blob_gc_lock)
        assert await a.collect_blobs_if_due() is not None
        assert await a.collect_blobs_if_due() is None  # not due again on this replica
        assert await b.collect_blobs_if_due() is None  # the other replica sees the lock
    finally:
        await a.redis.delete(a.keys.blob_gc_lock)
        await a.close()
        await b.close()


@pytest.fixture(scope="module")
def s3_endpoint():
    """A real S3 HTTP server on loopback (moto's ThreadedMotoServer) with a bucket."""
    server_mod = pytest.importorskip("moto.server", reason="moto[server] is a dev dependency")
    pytest.importorskip("s3fs", reason="s3fs is the `s3` extra (a dev dependency)")
    import boto3

    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
    old = {k: os.environ.get(k) for k in (*env, "AWS_DEFAULT_REGION")}
    os.environ.update(env, AWS_DEFAULT_REGION="us-east-1")
    boto3.client("s3", endpoint_url=url).create_bucket(Bucket="protolens-results")
    yield url
    server.stop()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


async def test_s3_store_end_to_end(s3_endpoint: str, settings: Settings) -> None:
    settings = settings.model_copy(
        update={"blob_url": "s3://protolens-results/prod", "blob_endpoint_url": s3_endpoint}
    )
    queue = await JobQueue.connect(settings)
    try:
        assert isinstance(queue.blobs, FsspecBlobStore)
        consumer = QueueConsumer(queue.redis, settings, "s3-worker")
        done = await _run(queue, consumer, [PNG], seed=77)
        assert await queue.get_png(done.job_id, 0) == PNG
        orphan = queue.blobs.put(b"orphan on s3")
        listed = {b.key: b.modified for b in queue.blobs.list()}
        assert set(listed) == {blob_key(PNG), done.prototypes[0].scores_key, orphan}
        assert abs(listed[orphan] - time.time()) < 120  # S3's LastModified, read back
        young = await queue.collect_blobs()  # both written just now: both spared
        assert young.deleted == 0 and young.kept_young == 1
        old = settings.model_copy(update={"blob_gc_grace_s": 0.0})
        queue.settings = old
        await asyncio.sleep(1.1)  # S3 times have one-second resolution
        assert (await queue.collect_blobs()).deleted == 1
        assert queue.blobs.get(orphan) is None and queue.blobs.get(blob_key(PNG)) == PNG
    finally:
        await queue.close()


async def test_float_tensors_are_blobs_and_older_results_decode_their_png(
    queue: JobQueue, consumer_factory
) -> None:
    import torch
    from protolens_server.imageio import decode_tensor, encode_png, encode_tensor

    image = torch.rand(4, 5, 6, generator=torch.Generator().manual_seed(0))
    png, tensor = encode_png(image, provenance={"seed": "9"}), encode_tensor(image, {"seed": "9"})
    record, _ = await queue.submit(make_spec(classes=(3,), seed=11))
    consumer = consumer_factory()
    [entry] = await consumer.read(1)
    _, delivery = await consumer.claim(entry)
    assert await consumer.finish(delivery, _protos(delivery), [png], step=8, tensors=[tensor])
    done = await queue.get(record.job_id)
    assert done.prototypes[0].tensor_key == blob_key(tensor)
    back, meta = decode_tensor(await queue.get_tensor(done.job_id, 0))
    assert torch.equal(back, image) and meta == {"seed": "9"}
    # a result stored without a tensor (before tensors were): its PNG, decoded
    rgb = torch.rand(3, 5, 6, generator=torch.Generator().manual_seed(1))
    old = await _run(queue, consumer, [encode_png(rgb, provenance={"seed": "4"})], seed=12)
    assert old.prototypes[0].tensor_key == ""
    back, meta = decode_tensor(await queue.get_tensor(old.job_id, 0))
    assert (back - rgb).abs().max() <= 0.5 / 255 + 1e-6 and meta == {"seed": "4", "from": "png"}
    rgba = torch.rand(4, 5, 6, generator=torch.Generator().manual_seed(2))  # alpha prototype
    old = await _run(queue, consumer, [encode_png(rgba, alpha=True)], seed=13)
    back, _ = decode_tensor(await queue.get_tensor(old.job_id, 0))
    assert back.shape[0] == 4 and (back - rgba).abs().max() <= 0.5 / 255 + 1e-6  # opacity kept
    with pytest.raises(NotFound):
        queue.blobs.delete(blob_key(tensor))
        await queue.get_tensor(done.job_id, 0)


async def test_isolation_input_image_is_a_blob_the_sweep_keeps_while_a_job_may_need_it(
    queue: JobQueue, consumer_factory
) -> None:
    """An isolation job's input image goes to the blob store, its spec keeps only the key
    (Redis holds no image bytes), the cache key follows the image's content, and a sweep
    keeps the image while a job may still read it."""
    from dataclasses import replace

    from protolens_server.queue.cache import cache_key

    photo, other = b"\x89PNG\r\n\x1a\n" + os.urandom(30_000), os.urandom(30_000)
    spec = replace(make_spec(classes=(3,), seed=21), mode="isolation", config={"steps": 4})
    spec = replace(spec, image_key=blob_key(photo))
    record, outcome = await queue.submit(spec, image=photo)
    assert outcome == "queued" and queue.blobs.get(blob_key(photo)) == photo
    assert await queue.redis.memory_usage(queue.keys.job(record.job_id), samples=0) < 4096
    stored = await queue.get(record.job_id)
    assert stored.spec.image == "" and stored.spec.image_key == blob_key(photo)
    assert cache_key(replace(spec, seed=21)) == record.cache_key  # same image, same key
    assert cache_key(replace(spec, image_key=blob_key(other))) != record.cache_key
    with pytest.raises(ValueError, match="image_key"):
        await queue.submit(replace(spec, seed=22), image=other)
    orphan = queue.blobs.put(os.urandom(100))
    for key in (blob_key(photo), orphan):
        _age(queue.blobs, key, 3600)
    sweep = await collect_blobs(queue.redis, queue.keys, queue.blobs, grace_s=60)
    assert sweep.deleted == 1 and queue.blobs.get(orphan) is None
    assert queue.blobs.get(blob_key(photo)) == photo  # a queued job names it
    consumer = consumer_factory()
    [entry] = await consumer.read(1)
    _, delivery = await consumer.claim(entry)
    assert await consumer.input_image(delivery.record.spec) == photo
    # once no job can read it any more (its reference outlived the job retention), it goes
    await queue.redis.zadd(queue.keys.input_blobs, {blob_key(photo): time.time() - 1})
    assert (await collect_blobs(queue.redis, queue.keys, queue.blobs, grace_s=60)).deleted == 1


async def test_isolation_spec_written_before_the_blob_store_still_runs(
    queue: JobQueue, consumer_factory
) -> None:
    """An older record carries its image inline (base64): still read, still keyed apart."""
    import base64
    from dataclasses import replace

    photo = b"\x89PNG\r\n\x1a\n" + os.urandom(1000)
    old = replace(
        make_spec(classes=(3,), seed=23),
        mode="isolation",
        config={"steps": 4},
        image=base64.b64encode(photo).decode(),
    )
    record, outcome = await queue.submit(old)
    assert outcome == "queued" and (await queue.get(record.job_id)).spec == old
    consumer = consumer_factory()
    [entry] = await consumer.read(1)
    _, delivery = await consumer.claim(entry)
    assert await consumer.input_image(delivery.record.spec) == photo
