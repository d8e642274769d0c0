"""``Client`` (blocking) and ``AsyncClient`` (asyncio): the protolens SDK.

    with Client("127.0.0.1:50051") as client:
        job = client.create_prototype_job("efficientnet_lite0", [281, "Granny Smith"])
        job = job.result(timeout=600)            # or client.wait(job)
        for summary in job.prototypes:
            client.get_prototype(job, summary.index).save("out/")

Methods mirror the RPCs in snake_case and return ``protolens.types`` objects;
failures raise ``protolens.errors`` types (catch ``ProtolensError``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from typing import Any

import grpc

from protolens import _convert as convert
from protolens import types
from protolens._checks import AsyncCheckMethods, CheckMethods
from protolens.errors import JobFailedError, translate_errors
from protolens.v1 import service_pb2 as pb
from protolens.v1 import service_pb2_grpc

DEFAULT_ADDRESS = "127.0.0.1:50051"
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

JobRef = str | types.Job
TargetLike = int | str | types.Target | tuple[int | str, ...]


def _channel_options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    ]


def _prototype_name(job: JobRef, index: int) -> str:
    return f"{convert.job_name(job)}/prototypes/{int(index)}"


def _model_name(name: str) -> str:
    return name if name.startswith("models/") else f"models/{name}"


class _Base:
    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        timeout: float | None = DEFAULT_TIMEOUT_S,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.address = address
        self.timeout = timeout
        self._credentials = credentials
        self._metadata = tuple(metadata)
        self._options = _channel_options(max_message_bytes)

    def _kw(self, timeout: float | None = None, *, stream: bool = False) -> dict[str, Any]:
        kw: dict[str, Any] = {"metadata": self._metadata or None}
        t = timeout if timeout is not None else (None if stream else self.timeout)
        if t is not None:
            kw["timeout"] = t
        return kw


class Client(_Base, CheckMethods):
    """A blocking client. Use as a context manager, or call ``close()``."""

    def __init__(self, address: str = DEFAULT_ADDRESS, **kwargs: Any) -> None:
        super().__init__(address, **kwargs)
        if self._credentials is None:
            self._channel = grpc.insecure_channel(address, options=self._options)
        else:
            self._channel = grpc.secure_channel(address, self._credentials, options=self._options)
        self._stub = service_pb2_grpc.ProtolensServiceStub(self._channel)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
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

    def get_job(self, job: JobRef, *, timeout: float | None = None) -> types.Job:
        with translate_errors():
            resp = self._stub.GetJob(
                pb.GetJobRequest(name=convert.job_name(job)), **self._kw(timeout)
            )
        return self._bind(convert.job(resp.job))

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
        self, job: JobRef, *, cursor: str = "", timeout: float | None = None
    ) -> Iterator[types.WatchEvent]:
        """Progress events until the job ends (the last event has a finished state)."""
        req = pb.WatchJobRequest(name=convert.job_name(job), cursor=cursor)
        with translate_errors():
            for msg in self._stub.WatchJob(req, **self._kw(timeout, stream=True)):
                yield convert.watch_event(msg)

    watch = watch_job

    def wait(
        self, job: JobRef, *, timeout: float | None = None, raise_on_failure: bool = True
    ) -> types.Job:
        """Wait for the job to finish and return it; ``JobFailedError`` if it failed/cancelled."""
        deadline = None if timeout is None else time.monotonic() + timeout
        cursor = ""
        for event in self.watch_job(job, cursor=cursor, timeout=timeout):
            cursor = event.cursor
            if event.finished:
                break
        remaining = None if deadline is None else max(0.1, deadline - time.monotonic())
        final = self.get_job(job, timeout=min(remaining or self.timeout or 30, 30))
        if raise_on_failure and final.state != "SUCCEEDED":
            raise JobFailedError(final)
        return final

    # --- prototypes and models ---------------------------------------------------
    def get_prototype(
        self, job: JobRef, index: int = 0, *, timeout: float | None = None
    ) -> types.Prototype:
        req = pb.GetPrototypeRequest(name=_prototype_name(job, index))
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
        req = pb.GetModelRequest(name=_model_name(name))
        with translate_errors():
            resp = self._stub.GetModel(req, **self._kw(timeout))
        return convert.model(resp.model)


class AsyncClient(_Base, AsyncCheckMethods):
    """The asyncio client: ``async with AsyncClient(addr) as client: ...``."""

    def __init__(self, address: str = DEFAULT_ADDRESS, **kwargs: Any) -> None:
        super().__init__(address, **kwargs)
        if self._credentials is None:
            self._channel = grpc.aio.insecure_channel(address, options=self._options)
        else:
            self._channel = grpc.aio.secure_channel(
                address, self._credentials, options=self._options
            )
        self._stub = service_pb2_grpc.ProtolensServiceStub(self._channel)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

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
        return convert.job(resp.job, resp.outcome)

    async def get_job(self, job: JobRef, *, timeout: float | None = None) -> types.Job:
        req = pb.GetJobRequest(name=convert.job_name(job))
        with translate_errors():
            resp = await self._stub.GetJob(req, **self._kw(timeout))
        return convert.job(resp.job)

    async def list_jobs(
        self, *, page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> tuple[list[types.Job], str]:
        req = pb.ListJobsRequest(page_size=page_size, page_token=page_token)
        with translate_errors():
            resp = await self._stub.ListJobs(req, **self._kw(timeout))
        return [convert.job(j) for j in resp.jobs], resp.next_page_token

    async def cancel_job(self, job: JobRef, *, timeout: float | None = None) -> types.Job:
        req = pb.CancelJobRequest(name=convert.job_name(job))
        with translate_errors():
            resp = await self._stub.CancelJob(req, **self._kw(timeout))
        return convert.job(resp.job)

    async def watch_job(
        self, job: JobRef, *, cursor: str = "", timeout: float | None = None
    ) -> AsyncIterator[types.WatchEvent]:
        req = pb.WatchJobRequest(name=convert.job_name(job), cursor=cursor)
        with translate_errors():
            async for msg in self._stub.WatchJob(req, **self._kw(timeout, stream=True)):
                yield convert.watch_event(msg)

    watch = watch_job

    async def wait(
        self, job: JobRef, *, timeout: float | None = None, raise_on_failure: bool = True
    ) -> types.Job:
        async for event in self.watch_job(job, timeout=timeout):
            if event.finished:
                break
        final = await self.get_job(job)
        if raise_on_failure and final.state != "SUCCEEDED":
            raise JobFailedError(final)
        return final

    async def get_prototype(
        self, job: JobRef, index: int = 0, *, timeout: float | None = None
    ) -> types.Prototype:
        req = pb.GetPrototypeRequest(name=_prototype_name(job, index))
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
        req = pb.GetModelRequest(name=_model_name(name))
        with translate_errors():
            resp = await self._stub.GetModel(req, **self._kw(timeout))
        return convert.model(resp.model)
