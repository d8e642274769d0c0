"""``Client`` (blocking) and ``AsyncClient`` (asyncio): the protolens SDK.

    with Client("127.0.0.1:50051") as client:   # a host without a port means :50051
        job = client.create_prototype_job("efficientnet_lite0", [281, "Granny Smith"])
        job = job.result(timeout=600)            # or client.wait(job)
        for summary in job.prototypes:
            client.get_prototype(job, summary.index).save("out/")

Methods mirror the RPCs in snake_case (the ``ProtolensService``'s here, the
``CheckService``'s in ``_checks``, the ``AdminService``'s in ``_admin``) and return
``protolens.types`` objects; failures raise ``protolens.errors`` types (catch
``ProtolensError``). Resource names may be given whole or as bare ids
(``protolens.names``).

``watch_job`` (and so ``wait`` and ``job.result``) rides out a lost connection:
when the stream fails with UNAVAILABLE (an API server restart, a dropped
network) it reopens the watch after the last event it delivered, with bounded
exponential backoff (``WatchRetry``), so the caller sees every event once.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import random
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import grpc

from protolens import _convert as convert
from protolens import names, types
from protolens._admin import AdminMethods, AsyncAdminMethods
from protolens._checks import AsyncCheckMethods, CheckMethods
from protolens.errors import (
    ConnectionError,
    JobFailedError,
    ProtolensError,
    from_rpc_error,
    translate_errors,
)
from protolens.v1 import admin_pb2_grpc, checks_pb2_grpc, service_pb2_grpc
from protolens.v1 import service_pb2 as pb

DEFAULT_PORT = 50051
DEFAULT_ADDRESS = f"127.0.0.1:{DEFAULT_PORT}"
_URI_SCHEMES = ("dns:", "unix:", "unix-abstract:", "ipv4:", "ipv6:", "vsock:")
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

JobRef = str | types.Job
TargetLike = int | str | types.Target | tuple[int | str, ...]

log = logging.getLogger("protolens.client")


@dataclass(frozen=True)
class WatchRetry:
    """How a watch rides out a lost connection (``Client(..., watch_retry=WatchRetry(...))``).

    On UNAVAILABLE the watch is reopened after the last event it delivered, waiting
    ``backoff_s`` before the first try and doubling up to ``max_backoff_s`` (times a
    random 0.5-1 factor, so many watchers do not reconnect in step). It gives up,
    raising ``ConnectionError``, after ``attempts`` failed tries in a row or
    ``give_up_after_s`` seconds without an event, whichever comes first, and never
    past the call's ``timeout``. ``WatchRetry(attempts=0)`` turns resuming off. A
    watch that never got an event fails at once (a wrong address, a service that is
    down): resuming is for connections that worked and were lost.
    The defaults ride out about a minute of outage. UNAVAILABLE is also what the
    service answers while its Redis is unreachable, so that is ridden out too.
    """

    attempts: int = 20
    backoff_s: float = 0.1
    max_backoff_s: float = 5.0
    give_up_after_s: float = 60.0

    def __post_init__(self) -> None:
        if self.attempts < 0 or self.backoff_s < 0 or self.give_up_after_s < 0:
            raise ValueError("WatchRetry: attempts, backoff_s and give_up_after_s must be >= 0")
        if self.max_backoff_s < self.backoff_s:
            raise ValueError("WatchRetry: max_backoff_s must be >= backoff_s")


class _Reconnect:
    """One watch's reconnection state: failures in a row, when they began, the deadline."""

    def __init__(self, policy: WatchRetry, timeout: float | None, *, opened: bool = False) -> None:
        self.policy = policy
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.opened = opened  # an event came through: the service exists and was reachable
        self.failures = 0
        self.since: float | None = None

    def remaining(self) -> float | None:
        """Seconds left of the caller's timeout (None: no timeout)."""
        return None if self.deadline is None else max(0.001, self.deadline - time.monotonic())

    def progressed(self) -> None:
        self.opened, self.failures, self.since = True, 0, None

    def delay(self, code: grpc.StatusCode) -> float | None:
        """Seconds to wait before trying again after a failure with ``code``, or None."""
        if code != grpc.StatusCode.UNAVAILABLE or not self.opened:
            return None
        now = time.monotonic()
        self.since = now if self.since is None else self.since
        self.failures += 1
        p = self.policy
        wait = min(p.max_backoff_s, p.backoff_s * 2 ** (self.failures - 1))
        wait *= random.uniform(0.5, 1.0)
        if self.failures > p.attempts or now + wait - self.since > p.give_up_after_s:
            return None
        if self.deadline is not None and now + wait >= self.deadline:
            return None
        return wait

    def error(self, exc: grpc.RpcError, cursor: str) -> Exception:
        """The SDK error to raise when giving up (saying how to resume, after retries)."""
        err = from_rpc_error(exc)
        if self.failures <= 1 or not isinstance(err, ConnectionError):
            return err
        spent = time.monotonic() - (self.since or time.monotonic())
        return ConnectionError(
            f"{err.message} (gave up reconnecting the watch after {self.failures - 1} "
            f"tries in {spent:.1f}s; resume with cursor={cursor!r})",
            err.reason,
        )

    def note(self, name: str, exc: grpc.RpcError, cursor: str, wait: float) -> None:
        log.info(
            "watch of %s lost (%s: %s); resuming after cursor %r in %.1fs (try %d of %d)",
            name, exc.code().name, exc.details(), cursor, wait, self.failures,
            self.policy.attempts,
        )  # fmt: skip


def _channel_options(max_message_bytes: int, retry: WatchRetry) -> list[tuple[str, int]]:
    """Message limits, and the channel's own reconnect backoff kept to the watch's.

    gRPC's default reconnect backoff grows to 120 s; meanwhile every call fails fast,
    so a watch could go on failing long after the server is back. Capped at
    ``retry.max_backoff_s``, the channel tries to connect at least that often.
    """
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.initial_reconnect_backoff_ms", max(100, int(retry.backoff_s * 1000))),
        ("grpc.max_reconnect_backoff_ms", max(100, int(retry.max_backoff_s * 1000))),
    ]


def service_target(address: str) -> str:
    """The gRPC target for ``address``: a host without a port means the service's port 50051
    (gRPC itself would try 443); ``host:port``, ``[v6]:port`` and gRPC URIs (``dns:``,
    ``unix:``, ...) stay as given."""
    a = address.strip()
    if not a:
        return DEFAULT_ADDRESS
    if a.startswith(_URI_SCHEMES) or "://" in a:
        return a
    if a.startswith("["):
        return a if "]:" in a else f"{a}:{DEFAULT_PORT}"
    if a.count(":") > 1:  # a bare IPv6 address
        return f"[{a}]:{DEFAULT_PORT}"
    return a if ":" in a else f"{a}:{DEFAULT_PORT}"


class _Base:
    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        timeout: float | None = DEFAULT_TIMEOUT_S,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        watch_retry: WatchRetry | None = None,
    ) -> None:
        self.address = service_target(address)
        self.timeout = timeout
        self.watch_retry = watch_retry if watch_retry is not None else WatchRetry()
        self._credentials = credentials
        self._metadata = tuple(metadata)
        self._options = _channel_options(max_message_bytes, self.watch_retry)
        self._owns_channel = True

    def with_metadata(self, metadata: Sequence[tuple[str, str]]) -> Self:
        """A client on the same channel that sends ``metadata`` (e.g. another caller's
        ``auth_metadata(api_key)``) instead of this one's; closing it leaves the channel
        open (the client it came from owns it). A gateway serving many callers over one
        connection uses this: ``client.with_metadata(auth_metadata(key)).list_models()``."""
        view = copy.copy(self)
        view._metadata = tuple(metadata)
        view._owns_channel = False  # stubs carry no metadata: the view shares them too
        return view

    def _open(self, channel: grpc.Channel | grpc.aio.Channel) -> None:
        """Keep ``channel`` and a stub of each service on it."""
        self._channel = channel
        self._stub = service_pb2_grpc.ProtolensServiceStub(channel)
        self._checks = checks_pb2_grpc.CheckServiceStub(channel)
        self._admin = admin_pb2_grpc.AdminServiceStub(channel)

    def _kw(self, timeout: float | None = None, *, stream: bool = False) -> dict[str, Any]:
        kw: dict[str, Any] = {"metadata": self._metadata or None}
        t = timeout if timeout is not None else (None if stream else self.timeout)
        if t is not None:
            kw["timeout"] = t
        return kw


class Client(_Base, CheckMethods, AdminMethods):
    """A blocking client. Use as a context manager, or call ``close()``."""

    def __init__(self, address: str = DEFAULT_ADDRESS, **kwargs: Any) -> None:
        super().__init__(address, **kwargs)
        target = self.address
        if self._credentials is None:
            self._open(grpc.insecure_channel(target, options=self._options))
        else:
            self._open(grpc.secure_channel(target, self._credentials, options=self._options))

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_channel:
            self._channel.close()

    def _bind(self, job: types.Job) -> types.Job:
        job._waiter = self.wait
        return job

    # --- jobs --------------------------------------------------------------------
    def create_prototype_job(
        self,
        model: str,
        targets: Iterable[TargetLike],
        *,
        prototypes_per_target: int = 1,
        config: Mapping[str, Any] | None = None,
        seed: int | None = None,
        reference_set: str = "",
        priority: str = "normal",
        request_id: str = "",
        timeout: float | None = None,
    ) -> types.Job:
        """Create a job; returns at once (``job.outcome`` says queued/cache_hit/dedup_join)."""
        req = convert.create_request(
            model,
            targets,
            prototypes_per_target=prototypes_per_target,
            config=config,
            seed=seed,
            reference_set=reference_set,
            priority=priority,
            request_id=request_id,
        )
        with translate_errors():
            resp = self._stub.CreatePrototypeJob(req, **self._kw(timeout))
        return self._bind(convert.job(resp.job, resp.outcome))

    def create_isolation_job(
        self,
        model: str,
        image: bytes | str | Path,
        target: int | str,
        *,
        config: Mapping[str, Any] | None = None,
        seed: int | None = None,
        priority: str = "normal",
        request_id: str = "",
        timeout: float | None = None,
    ) -> types.Job:
        """Create a feature isolation job for ``image`` (PNG/JPEG bytes or a file path) and
        class ``target``; returns at once. ``job.isolation`` holds the probabilities once it
        succeeded; ``get_prototype(job, 0)`` the image with the mask as its alpha."""
        req = convert.create_isolation_request(
            model, _image_bytes(image), target, config=config, seed=seed, priority=priority,
            request_id=request_id,
        )  # fmt: skip
        with translate_errors():
            resp = self._stub.CreateIsolationJob(req, **self._kw(timeout))
        return self._bind(convert.job(resp.job, resp.outcome))

    def get_job(self, job: JobRef, *, timeout: float | None = None) -> types.Job:
        with translate_errors():
            resp = self._stub.GetJob(
                pb.GetJobRequest(name=convert.job_name(job)), **self._kw(timeout)
            )
        return self._bind(convert.job(resp.job))

    def get_job_after_watch(self, job: JobRef, *, timeout: float | None = None) -> types.Job:
        """``get_job`` for a job one has just watched: a lost connection or an unavailable
        service (an API restart) is ridden out with the client's ``watch_retry`` policy."""
        deadline = None if timeout is None else time.monotonic() + timeout
        state = _Reconnect(self.watch_retry, timeout, opened=True)  # the watch got through
        while True:
            remaining = None if deadline is None else max(0.1, deadline - time.monotonic())
            try:
                return self.get_job(job, timeout=min(remaining or self.timeout or 30, 30))
            except ConnectionError:
                wait = state.delay(grpc.StatusCode.UNAVAILABLE)
                if wait is None:
                    raise
                time.sleep(wait)

    def list_jobs(
        self, *, page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> tuple[list[types.Job], str]:
        """One page of your jobs, newest first, and the token of the next page ("" at the end)."""
        req = pb.ListJobsRequest(page_size=page_size, page_token=page_token)
        with translate_errors():
            resp = self._stub.ListJobs(req, **self._kw(timeout))
        return [self._bind(convert.job(j)) for j in resp.jobs], resp.next_page_token

    def iter_jobs(self, *, page_size: int = 0) -> Iterator[types.Job]:
        token = ""
        while True:
            jobs, token = self.list_jobs(page_size=page_size, page_token=token)
            yield from jobs
            if not token:
                return

    def cancel_job(self, job: JobRef, *, timeout: float | None = None) -> types.Job:
        req = pb.CancelJobRequest(name=convert.job_name(job))
        with translate_errors():
            resp = self._stub.CancelJob(req, **self._kw(timeout))
        return self._bind(convert.job(resp.job))

    def watch_job(
        self,
        job: JobRef,
        *,
        cursor: str = "",
        timeout: float | None = None,
        retry: WatchRetry | None = None,
    ) -> Iterator[types.WatchEvent]:
        """Progress events after ``cursor`` until the job ends (the last has a finished state).

        A lost connection is ridden out by reopening after the last event seen
        (``retry``, default the client's ``watch_retry``); ``timeout`` bounds it all.
        """
        name = convert.job_name(job)
        state = _Reconnect(retry or self.watch_retry, timeout)
        while True:
            req = pb.WatchJobRequest(name=name, cursor=cursor)
            call = self._stub.WatchJob(req, **self._kw(state.remaining(), stream=True))
            try:
                for msg in call:
                    event = convert.watch_event(msg)
                    cursor = event.cursor or cursor
                    state.progressed()
                    yield event
                return
            except grpc.RpcError as exc:
                wait = state.delay(exc.code())
                if wait is None:
                    raise state.error(exc, cursor) from exc
                state.note(name, exc, cursor, wait)
            finally:
                call.cancel()
            time.sleep(wait)

    watch = watch_job

    def wait(
        self, job: JobRef, *, timeout: float | None = None, raise_on_failure: bool = True
    ) -> types.Job:
        """Wait for the job to finish and return it; ``JobFailedError`` if it failed/cancelled."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for event in self.watch_job(job, timeout=timeout):
            if event.finished:
                break
        remaining = None if deadline is None else max(0.1, deadline - time.monotonic())
        final = self.get_job_after_watch(job, timeout=remaining)
        if raise_on_failure and final.state != "SUCCEEDED":
            raise JobFailedError(final)
        return final

    # --- prototypes and models ---------------------------------------------------
    def get_prototype(
        self,
        job: JobRef,
        index: int = 0,
        *,
        include_float: bool = False,
        preview_channels: Sequence[int] = (),
        timeout: float | None = None,
    ) -> types.Prototype:
        """Prototype ``index`` of a finished job; ``include_float`` adds its lossless float32
        tensor (``Prototype.float_tensor``, safetensors bytes); ``preview_channels`` (1 or 3
        channel indices) makes its PNG show those channels instead of the stored preview."""
        req = pb.GetPrototypeRequest(
            name=names.prototype_name(convert.job_name(job), index),
            include_float=include_float,
            preview_channels=list(preview_channels),
        )
        with translate_errors():
            resp = self._stub.GetPrototype(req, **self._kw(timeout))
        return convert.prototype(resp.prototype)

    def list_models(self, *, timeout: float | None = None) -> list[types.Model]:
        models: list[types.Model] = []
        token = ""
        while True:
            with translate_errors():
                resp = self._stub.ListModels(
                    pb.ListModelsRequest(page_token=token), **self._kw(timeout)
                )
            models += [convert.model(m) for m in resp.models]
            token = resp.next_page_token
            if not token:
                return models

    def get_model(self, name: str, *, timeout: float | None = None) -> types.Model:
        req = pb.GetModelRequest(name=names.MODELS.name(name))
        with translate_errors():
            resp = self._stub.GetModel(req, **self._kw(timeout))
        return convert.model(resp.model)

    def layers(self, model: str, *, timeout: float | None = None) -> tuple[types.Layer, ...]:
        """The layers unit targets may name, with their output shapes, ending with logits."""
        return self.get_model(model, timeout=timeout).layers


class AsyncClient(_Base, AsyncCheckMethods, AsyncAdminMethods):
    """The asyncio client: ``async with AsyncClient(addr) as client: ...``."""

    def __init__(self, address: str = DEFAULT_ADDRESS, **kwargs: Any) -> None:
        super().__init__(address, **kwargs)
        target = self.address
        if self._credentials is None:
            self._open(grpc.aio.insecure_channel(target, options=self._options))
        else:
            self._open(grpc.aio.secure_channel(target, self._credentials, options=self._options))

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_channel:
            await self._channel.close()

    def _bind(self, job: types.Job) -> types.Job:
        job._waiter = self.wait  # job.result() returns this coroutine: await it
        return job

    async def create_prototype_job(
        self,
        model: str,
        targets: Iterable[TargetLike],
        *,
        prototypes_per_target: int = 1,
        config: Mapping[str, Any] | None = None,
        seed: int | None = None,
        reference_set: str = "",
        priority: str = "normal",
        request_id: str = "",
        timeout: float | None = None,
    ) -> types.Job:
        req = convert.create_request(
            model,
            targets,
            prototypes_per_target=prototypes_per_target,
            config=config,
            seed=seed,
            reference_set=reference_set,
            priority=priority,
            request_id=request_id,
        )
        with translate_errors():
            resp = await self._stub.CreatePrototypeJob(req, **self._kw(timeout))
        return self._bind(convert.job(resp.job, resp.outcome))

    async def create_isolation_job(
        self,
        model: str,
        image: bytes | str | Path,
        target: int | str,
        *,
        config: Mapping[str, Any] | None = None,
        seed: int | None = None,
        priority: str = "normal",
        request_id: str = "",
        timeout: float | None = None,
    ) -> types.Job:
        """``Client.create_isolation_job``, awaited."""
        req = convert.create_isolation_request(
            model, _image_bytes(image), target, config=config, seed=seed, priority=priority,
            request_id=request_id,
        )  # fmt: skip
        with translate_errors():
            resp = await self._stub.CreateIsolationJob(req, **self._kw(timeout))
        return self._bind(convert.job(resp.job, resp.outcome))

    async def get_job(self, job: JobRef, *, timeout: float | None = None) -> types.Job:
        req = pb.GetJobRequest(name=convert.job_name(job))
        with translate_errors():
            resp = await self._stub.GetJob(req, **self._kw(timeout))
        return self._bind(convert.job(resp.job))

    async def get_job_after_watch(self, job: JobRef, *, timeout: float | None = None) -> types.Job:
        """``get_job`` riding out a lost connection (see ``Client.get_job_after_watch``)."""
        state = _Reconnect(self.watch_retry, timeout, opened=True)  # the watch got through
        while True:
            try:
                return await self.get_job(job, timeout=state.remaining())
            except ConnectionError:
                wait = state.delay(grpc.StatusCode.UNAVAILABLE)
                if wait is None:
                    raise
                await asyncio.sleep(wait)

    async def list_jobs(
        self, *, page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> tuple[list[types.Job], str]:
        req = pb.ListJobsRequest(page_size=page_size, page_token=page_token)
        with translate_errors():
            resp = await self._stub.ListJobs(req, **self._kw(timeout))
        return [self._bind(convert.job(j)) for j in resp.jobs], resp.next_page_token

    async def cancel_job(self, job: JobRef, *, timeout: float | None = None) -> types.Job:
        req = pb.CancelJobRequest(name=convert.job_name(job))
        with translate_errors():
            resp = await self._stub.CancelJob(req, **self._kw(timeout))
        return self._bind(convert.job(resp.job))

    async def watch_job(
        self,
        job: JobRef,
        *,
        cursor: str = "",
        timeout: float | None = None,
        retry: WatchRetry | None = None,
    ) -> AsyncIterator[types.WatchEvent]:
        """Progress events after ``cursor`` until the job ends (see ``Client.watch_job``)."""
        name = convert.job_name(job)
        state = _Reconnect(retry or self.watch_retry, timeout)
        while True:
            req = pb.WatchJobRequest(name=name, cursor=cursor)
            call = self._stub.WatchJob(req, **self._kw(state.remaining(), stream=True))
            try:
                async for msg in call:
                    event = convert.watch_event(msg)
                    cursor = event.cursor or cursor
                    state.progressed()
                    yield event
                return
            except grpc.RpcError as exc:
                wait = state.delay(exc.code())
                if wait is None:
                    raise state.error(exc, cursor) from exc
                state.note(name, exc, cursor, wait)
            finally:
                call.cancel()
            await asyncio.sleep(wait)

    watch = watch_job

    async def wait(
        self, job: JobRef, *, timeout: float | None = None, raise_on_failure: bool = True
    ) -> types.Job:
        """Wait for the job to finish and return it; ``JobFailedError`` if it failed/cancelled."""
        async for event in self.watch_job(job, timeout=timeout):
            if event.finished:
                break
        final = await self.get_job_after_watch(job)
        if raise_on_failure and final.state != "SUCCEEDED":
            raise JobFailedError(final)
        return final

    async def get_prototype(
        self,
        job: JobRef,
        index: int = 0,
        *,
        include_float: bool = False,
        preview_channels: Sequence[int] = (),
        timeout: float | None = None,
    ) -> types.Prototype:
        """Prototype ``index`` of a finished job; ``include_float`` adds its lossless float32
        tensor (``Prototype.float_tensor``, safetensors bytes); ``preview_channels`` (1 or 3
        channel indices) makes its PNG show those channels instead of the stored preview."""
        req = pb.GetPrototypeRequest(
            name=names.prototype_name(convert.job_name(job), index),
            include_float=include_float,
            preview_channels=list(preview_channels),
        )
        with translate_errors():
            resp = await self._stub.GetPrototype(req, **self._kw(timeout))
        return convert.prototype(resp.prototype)

    async def list_models(self, *, timeout: float | None = None) -> list[types.Model]:
        models: list[types.Model] = []
        token = ""
        while True:
            req = pb.ListModelsRequest(page_token=token)
            with translate_errors():
                resp = await self._stub.ListModels(req, **self._kw(timeout))
            models += [convert.model(m) for m in resp.models]
            token = resp.next_page_token
            if not token:
                return models

    async def get_model(self, name: str, *, timeout: float | None = None) -> types.Model:
        req = pb.GetModelRequest(name=names.MODELS.name(name))
        with translate_errors():
            resp = await self._stub.GetModel(req, **self._kw(timeout))
        return convert.model(resp.model)

    async def layers(self, model: str, *, timeout: float | None = None) -> tuple[types.Layer, ...]:
        """The layers unit targets may name, with their output shapes, ending with logits."""
        return (await self.get_model(model, timeout=timeout)).layers


def _image_bytes(image: bytes | str | Path) -> bytes:
    """An image's bytes, given as bytes or a path to read."""
    if isinstance(image, bytes | bytearray):
        return bytes(image)
    try:
        return Path(image).read_bytes()
    except OSError as exc:
        raise ProtolensError(f"image {image}: cannot read it: {exc.strerror}") from exc
