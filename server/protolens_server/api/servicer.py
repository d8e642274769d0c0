"""``ProtolensService``: each RPC is proto -> JobQueue / ModelCatalog call -> proto.

Errors are raised as domain errors and mapped by the interceptor; the caller's
tenant comes from ``tenancy.current_tenant()`` and scopes every job lookup.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc
from protolens import names
from protolens.v1 import job_pb2, service_pb2_grpc
from protolens.v1 import service_pb2 as pb

from protolens_server import ENGINE_VERSION
from protolens_server.api import convert
from protolens_server.api.model_view import ModelView
from protolens_server.api.request_pool import RequestPool
from protolens_server.api.stream_slots import StreamSlots
from protolens_server.api.tenancy import current_tenant
from protolens_server.api.validation import (
    build_isolation_spec,
    build_spec,
    check_request_limits,
    check_request_size,
    model_name,
    page_size,
    read_name,
)
from protolens_server.config import Settings
from protolens_server.errors import FailedPrecondition, NotFound
from protolens_server.logging import bound_fields
from protolens_server.queue.pages import MAX_PAGE_SIZE, bad_page_token

if TYPE_CHECKING:
    from protolens_server.api.reference_sets import ReferenceSets
    from protolens_server.models.catalog import ModelCatalog
    from protolens_server.queue.jobs import JobQueue
    from protolens_server.queue.records import JobRecord


# Replies for jobs with more targets and prototypes than this are built in the pool.
_INLINE_TARGETS = 64


class ProtolensServicer(service_pb2_grpc.ProtolensServiceServicer):
    def __init__(
        self,
        queue: JobQueue,
        catalog: ModelCatalog,
        settings: Settings,
        references: ReferenceSets,
        *,
        pool: RequestPool | None = None,
    ) -> None:
        self.queue = queue
        self.models = ModelView(
            catalog,
            wait_s=settings.model_inspect_wait_s,
            use_wait_s=settings.model_inspect_timeout_s + settings.model_inspect_wait_s,
        )
        self.settings = settings
        self.references = references
        self.pool = pool if pool is not None else RequestPool(settings.request_threads)
        self.streams = StreamSlots(settings.max_streams_per_tenant)

    async def _class_names(self, record: JobRecord) -> tuple[str, ...]:
        return await self.models.class_names(record.spec.model, record.spec.model_digest)

    async def _job(self, record: JobRecord) -> job_pb2.Job:
        names = await self._class_names(record)
        if len(record.spec.targets) + len(record.prototypes) > _INLINE_TARGETS:
            return await self.pool.run(convert.job_to_pb, record, names)  # a big job: off the loop
        return convert.job_to_pb(record, names)

    # --- jobs --------------------------------------------------------------------
    async def CreatePrototypeJob(
        self, request: pb.CreatePrototypeJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreatePrototypeJobResponse:
        check_request_limits(request, self.settings)  # at once, before any work
        info = await self.models.describe(model_name(request.model))
        resolve = self.references.digest
        if request.reference_set:  # its walk in the walk threads, not the request pool's
            resolve = await self.references.prepare(request.reference_set, info)
        # Class resolution (and the reference set's digest, walked just now) off the loop.
        spec = await self.pool.run(
            build_spec,
            request,
            info=info,
            settings=self.settings,
            resolve_reference=resolve,
            tenant=current_tenant(),
            trace_id=str(bound_fields().get("trace_id") or ""),
        )
        record, outcome = await self.queue.submit(spec)  # counts protolens_jobs_created_total
        return pb.CreatePrototypeJobResponse(
            job=await self._job(record), outcome=convert.OUTCOME_TO_PB.get(outcome, 0)
        )

    async def CreateIsolationJob(
        self, request: pb.CreateIsolationJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateIsolationJobResponse:
        check_request_size(request, self.settings)  # at once, before any work
        info = await self.models.describe(model_name(request.model))
        # Decoding and fitting the image off the event loop.
        spec, image = await self.pool.run(
            build_isolation_spec,
            request,
            info=info,
            settings=self.settings,
            tenant=current_tenant(),
            trace_id=str(bound_fields().get("trace_id") or ""),
        )
        record, outcome = await self.queue.submit(spec, image=image)
        return pb.CreateIsolationJobResponse(
            job=await self._job(record), outcome=convert.OUTCOME_TO_PB.get(outcome, 0)
        )

    async def GetJob(
        self, request: pb.GetJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetJobResponse:
        record = await self.queue.get(
            read_name(names.JOBS.parse, request.name), tenant=current_tenant()
        )
        return pb.GetJobResponse(job=await self._job(record))

    async def ListJobs(
        self, request: pb.ListJobsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListJobsResponse:
        records, token = await self.queue.list(
            tenant=current_tenant(),
            page_size=page_size(request.page_size),
            page_token=request.page_token,
        )
        jobs = [await self._job(r) for r in records]
        return pb.ListJobsResponse(jobs=jobs, next_page_token=token)

    async def CancelJob(
        self, request: pb.CancelJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelJobResponse:
        job_id, tenant = read_name(names.JOBS.parse, request.name), current_tenant()
        record = await self.queue.cancel(job_id, tenant=tenant)
        if record is None:
            record = await self.queue.get(job_id, tenant=tenant)
        return pb.CancelJobResponse(job=await self._job(record))

    async def WatchJob(
        self, request: pb.WatchJobRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchJobResponse]:
        tenant = current_tenant()
        with self.streams.hold(tenant, "WatchJob"):
            events = self.queue.watch(
                read_name(names.JOBS.parse, request.name),
                tenant=tenant,
                after=request.cursor or "0",
            )
            async for entry_id, event in events:  # ends after the event with a finished state
                yield convert.event_to_pb(entry_id, event)

    # --- prototypes --------------------------------------------------------------
    async def GetPrototype(
        self, request: pb.GetPrototypeRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetPrototypeResponse:
        job_id, index = read_name(names.prototype_of, request.name)
        tenant = current_tenant()
        record = await self.queue.get(job_id, tenant=tenant)
        if not 0 <= index < len(record.prototypes):
            raise _no_prototype(record, index)
        png = await self.queue.get_png(job_id, index, tenant=tenant, record=record)
        tensor = b""
        if request.include_float or request.preview_channels:
            tensor = await self.queue.get_tensor(job_id, index, tenant=tenant, record=record)
        if request.preview_channels:
            from protolens_server.imageio import preview_png

            chosen, alpha = list(request.preview_channels), record.spec.has_opacity
            png = await asyncio.to_thread(preview_png, tensor, chosen, alpha=alpha)
        await self.queue.load_scores(record, [index])
        proto = convert.prototype_to_pb(
            record, index, png, await self._class_names(record), ENGINE_VERSION
        )
        if request.include_float:
            proto.float_tensor = tensor
        return pb.GetPrototypeResponse(prototype=proto)

    # --- models ------------------------------------------------------------------
    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        names = sorted(await self.models.names())
        token = request.page_token
        # this server's tokens are ASCII digits (str.isdigit alone also admits "¹", which
        # int() refuses: the fuzz suite found that as an INTERNAL error)
        if token and not (token.isascii() and token.isdigit()):
            raise bad_page_token()
        start = int(token) if token else 0
        size = page_size(request.page_size, MAX_PAGE_SIZE)
        page = names[start : start + size]
        infos = await self.models.show_all(page)  # UNUSABLE models listed with their reason
        token = str(start + size) if start + size < len(names) else ""
        return pb.ListModelsResponse(
            models=[convert.model_to_pb(i) for i in infos], next_page_token=token
        )

    async def GetModel(
        self, request: pb.GetModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetModelResponse:
        name = model_name(request.name)
        info = await self.models.show(name)
        model = convert.model_to_pb(info)
        model.layers.extend(convert.layers_to_pb(info))
        return pb.GetModelResponse(model=model)


def _no_prototype(record: JobRecord, index: int) -> Exception:
    if not record.state.finished:
        return FailedPrecondition(
            f"job {record.job_id} is {record.state.value}; prototypes exist once it SUCCEEDED"
        )
    if record.state.value != "SUCCEEDED":
        return FailedPrecondition(f"job {record.job_id} ended {record.state.value}: no prototypes")
    return NotFound(
        f"job {record.job_id} has {len(record.prototypes)} prototypes; no index {index}",
        field="name",
    )
