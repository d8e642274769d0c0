"""StartCheck's request_id (AIP-155): a retried call returns the check the first one started."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from protolens import AsyncClient
from protolens.errors import FailedPreconditionError, InvalidArgumentError


async def test_a_retry_with_the_same_request_id_returns_the_same_check(address: str) -> None:
    async with AsyncClient(address, timeout=30) as client:
        options = {"classes": ["apple"], "steps": 4}
        first, retry = await asyncio.gather(  # two calls racing with one id
            client.start_check("tiny", request_id="ci-run-7", **options),
            client.start_check("tiny", request_id="ci-run-7", **options),
        )
        later = await client.start_check("tiny", request_id="ci-run-7", **options)
        other = await client.start_check("tiny", request_id="ci-run-8", **options)
        plain = [await client.start_check("tiny", **options) for _ in range(2)]
        checks, _ = await client.list_checks()
        for check in {c.name for c in (first, other, *plain)}:
            # cleanup only: a check may already have ended (seen FAILED under a loaded full
            # suite, where a worker left by another test on the same Redis took its job)
            with contextlib.suppress(FailedPreconditionError):
                await client.cancel_check(check)
    assert first.name == retry.name == later.name
    assert len({first.name, other.name, *(c.name for c in plain)}) == 4
    assert sorted(c.name for c in checks) == sorted(
        {first.name, other.name, *(c.name for c in plain)}
    )


async def test_a_request_id_is_checked(address: str) -> None:
    async with AsyncClient(address, timeout=30) as client:
        with pytest.raises(InvalidArgumentError) as info:
            await client.start_check("tiny", classes=["apple"], request_id="x" * 200)
    assert info.value.field == "request_id"
