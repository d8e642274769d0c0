"""One Lua script run for many jobs in one round trip.

redis-py's pipelines run a registered script by first asking the server whether it
knows it (``SCRIPT EXISTS``, a round trip of its own), on every ``execute``. The
worker runs the same few scripts for every job of a batch, several times a batch, and
each round trip costs its event loop a hand-over of the GIL with the engine thread.
Here the calls go as plain ``EVALSHA`` in one pipeline; the calls Redis answers
``NOSCRIPT`` (its script cache was flushed: a restart, ``SCRIPT FLUSH``) did not run,
so they are run again after loading the script, up to ``NOSCRIPT_RETRIES`` times (a flush
can land between the load and the rerun: another client's ``SCRIPT FLUSH``, a failover
in the middle). On a cluster (whose pipelines refuse scripts) the calls run side by side
instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from protolens_server.queue.connection import is_cluster

Call = tuple[Sequence[Any], Sequence[Any]]  # (keys, args)
NOSCRIPT_RETRIES = 3


async def run_scripts(redis: aioredis.Redis, script: AsyncScript, calls: Sequence[Call]) -> list:
    """Run ``script`` once per (keys, args) in ``calls``; its answers, in order.

    Raises the first error a call answered with (after the ``NOSCRIPT`` ones are rerun).
    """
    if not calls:
        return []
    if is_cluster(redis):
        return list(await asyncio.gather(*(script(keys=k, args=a) for k, a in calls)))
    answers = await _evalsha_all(redis, script.sha, calls)
    for _ in range(NOSCRIPT_RETRIES):
        missing = [i for i, a in enumerate(answers) if isinstance(a, NoScriptError)]
        if not missing:
            break
        script.sha = await redis.script_load(script.script)
        again = await _evalsha_all(redis, script.sha, [calls[i] for i in missing])
        for i, answer in zip(missing, again, strict=True):
            answers[i] = answer
    for answer in answers:
        if isinstance(answer, Exception):
            raise answer
    return answers


async def _evalsha_all(redis: aioredis.Redis, sha: str, calls: Sequence[Call]) -> list:
    pipe = redis.pipeline(transaction=False)
    for keys, args in calls:
        pipe.evalsha(sha, len(keys), *keys, *args)
    return list(await pipe.execute(raise_on_error=False))
