"""One real stack for the gallery tests: embedded Redis, an API that requires API keys, a
worker and the gallery process (``protolens web``), all as child processes.

Two tenants, alpha and beta, each with a key. Alpha owns prototypes of two versions of
a model (``fruit@1``, ``fruit@2``, scored against a reference set), a finished check
of one version against the other and a flat model's job; beta owns one job. Built once
per session (about 20 s on a busy 2-core box), in its own Redis, so no other test's
flush can touch it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from protolens_server.api.stack import Stack
from protolens_server.api.testkit import make_reference_root, make_tiny_model_store
from protolens_server.config import Settings
from protolens_server.imageio import encode_png
from web_support import Gallery, Http

FAST = {"steps": 8, "equidistant_steps": 2, "lr": 0.1}


def make_store(root: Path) -> Path:
    """A flat ``tiny`` and two versions of ``fruit`` (same architecture, other weights)."""
    make_tiny_model_store(root)
    for version, seed in (("1", 0), ("2", 1)):
        make_tiny_model_store(root / "fruit" / version, name="model", seed=seed)
    return root


async def _make_keys(settings: Settings) -> dict[str, str]:
    from protolens_server.api.auth import ApiKeyStore
    from protolens_server.queue.connection import redis_from_url
    from protolens_server.queue.keys import Keys

    client = redis_from_url(settings.redis_url)
    try:
        store = ApiKeyStore(client, Keys(settings.key_prefix))
        return {
            t: (await store.create(t, "tenant", f"{t} gallery test"))[1] for t in ("alpha", "beta")
        }
    finally:
        await client.aclose()


def _fill(g: Gallery) -> None:
    with g.client("alpha") as alpha:
        for version in ("1", "2"):
            job = alpha.create_prototype_job(
                f"fruit@{version}", ["apple", "banana"], config=FAST, seed=1,
                reference_set="tinyref",
            )  # fmt: skip
            g.jobs[f"fruit@{version}"] = alpha.wait(job, timeout=120).id
        job = alpha.create_prototype_job("tiny", ["date"], config=FAST)
        g.jobs["tiny"] = alpha.wait(job, timeout=120).id
        job = alpha.create_prototype_job("tiny", ["cherry"], config={**FAST, "alpha": True})
        g.jobs["rgba"] = alpha.wait(job, timeout=120).id
        photo = encode_png(torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0)))
        job = alpha.create_isolation_job("tiny", photo, "cherry", config={"steps": 8})
        g.jobs["isolation"] = alpha.wait(job, timeout=120).id
        # the same classes, config, seed and reference set: its jobs are cache hits
        check = alpha.start_check(
            "fruit@2", baseline="fruit@1", classes=["apple", "banana"], seed=1,
            steps=FAST["steps"], config={k: v for k, v in FAST.items() if k != "steps"},
            reference_set="tinyref",
        )  # fmt: skip
        done = alpha.wait_check(check, timeout=120)
        assert done.state == "SUCCEEDED", done
        g.check = done.name.removeprefix("checks/")
    with g.client("beta") as beta:
        g.jobs["beta"] = beta.wait(
            beta.create_prototype_job("tiny", ["elderberry"], config=FAST)
        ).id


@pytest.fixture(scope="session")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gallery]:
    root = tmp_path_factory.mktemp("gallery")
    settings = Settings(
        grpc_port=0,
        metrics_port=0,
        web_port=0,
        model_store=make_store(root / "models"),
        reference_root=make_reference_root(root / "refs"),
        builtin_models=False,
        device="cpu",
        heartbeat_s=0.5,
        shutdown_grace_s=5,
        web_secret="gallery-tests-secret-of-at-least-32-characters",
    )
    stack = Stack(settings, root / "stack", workers=1, insecure=False)
    with stack:
        stack.start_web()
        g = Gallery(
            stack.web_url.rstrip("/"), stack.address, asyncio.run(_make_keys(stack.settings))
        )
        g.redis_url = stack.settings.redis_url
        _fill(g)
        yield g


@pytest.fixture
def http_for(gallery: Gallery):  # type: ignore[no-untyped-def]
    def make(tenant: str | None = None) -> Http:
        h = Http(gallery.url)
        if tenant is not None:
            status, _, _ = h.sign_in(gallery.keys[tenant])
            assert status == 303
        return h

    return make
