"""The API server: ``start_server(settings)`` for tests and ``serve(settings)`` for deployments.

One grpc.aio server carries ``ProtolensService``, ``CheckService``, the
``AdminService``, ``grpc.health.v1`` (``""`` and each service's name; NOT_SERVING
while Redis does not answer a PING, checked every ``health_probe_s``, or on
shutdown) and server reflection, all behind
``ServiceInterceptor``. Message sizes are capped explicitly by
``Settings.max_message_bytes`` (PNG payloads). A background task samples queue
statistics into the queue gauges and resumes checks whose driving replica died
(``CheckRunner.tick``); on stop this replica's checks are handed back. Requests
are validated in a bounded thread pool (``api/request_pool.py``) shared by the
services, and ``LoopLagProbe`` measures how late the event loop runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from protolens.v1 import service_pb2, service_pb2_grpc

from protolens_server import metrics
from protolens_server.api.admin import add_admin_service
from protolens_server.api.auth import ApiKeyAuth
from protolens_server.api.checks import SERVICE_NAME as CHECK_SERVICE_NAME
from protolens_server.api.checks import add_check_service
from protolens_server.api.interceptors import ServiceInterceptor
from protolens_server.api.loop_lag import LoopLagProbe
from protolens_server.api.reference_sets import ReferenceSets
from protolens_server.api.request_pool import RequestPool
from protolens_server.api.servicer import ProtolensServicer
from protolens_server.api.tenancy import TenantResolver
from protolens_server.api.transport import server_credentials
from protolens_server.config import Settings
from protolens_server.cpu_budget import configure_torch_threads
from protolens_server.heap import freeze_startup_heap
from protolens_server.logging import get_logger

if TYPE_CHECKING:
    from protolens_server.checks.service import CheckRunner
    from protolens_server.models.catalog import ModelCatalog
    from protolens_server.queue.jobs import JobQueue
    from protolens_server.queue.store import Store


SERVICE_NAME = service_pb2.DESCRIPTOR.services_by_name["ProtolensService"].full_name
ServiceHook = Callable[[grpc.aio.Server, "Store", "ModelCatalog", Settings], str]
"""Adds one more servicer to the server, given (server, store, catalog, settings), and
returns its full service name (for health and reflection). It runs behind the same
interceptor: the error table, tenant binding and RPC metrics apply to it too."""
SAMPLE_INTERVAL_S = 5.0
log = get_logger(__name__)


def server_options(settings: Settings) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", 0),  # a second server on a busy port fails instead of sharing it
    ]


@dataclass
class ApiServer:
    """A started API server and what it owns (the Redis store, catalog, health)."""

    grpc_server: grpc.aio.Server
    port: int
    store: Store
    catalog: ModelCatalog
    health: health.aio.HealthServicer
    sample_interval_s: float = SAMPLE_INTERVAL_S
    services: tuple[str, ...] = (SERVICE_NAME,)
    checks: CheckRunner | None = None  # tick() each sample, close() on stop
    pool: RequestPool | None = None  # where requests are validated (closed on stop)
    references: ReferenceSets | None = None  # reference-set walks (closed on stop)
    redis_probe: Any = None  # a one-connection client without retries: health's PING
    health_probe_s: float = 0.25
    lag: LoopLagProbe = field(default_factory=LoopLagProbe)
    _sampler: asyncio.Task[None] | None = field(default=None, repr=False)
    _prober: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def queue(self) -> JobQueue:
        return self.store.jobs

    async def _set_health(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *self.services):
            await self.health.set(name, status)

    async def _sample(self) -> None:
        """Refresh the queue gauges; resume checks whose driving replica died."""
        task = asyncio.current_task()
        # (checks cancelling(): redis-py may swallow a cancellation that lands mid-command)
        while task is None or not task.cancelling():
            await asyncio.sleep(self.sample_interval_s)
            try:
                await self.queue.update_metrics()
            except Exception as exc:
                log.warning("queue.stats_failed", extra={"error": str(exc)})
                continue
            if self.checks is not None:
                try:
                    await self.checks.tick()
                except Exception as exc:
                    log.warning("checks.sweep_failed", extra={"error": str(exc)})
            try:
                await self.queue.collect_blobs_if_due()
            except Exception as exc:
                log.warning("blobs.sweep_failed", extra={"error": str(exc)})

    async def _probe_redis(self) -> None:
        """Health follows whether Redis answers a PING, checked every ``health_probe_s``:
        NOT_SERVING within about twice that of an outage, SERVING at the first answer."""
        serving = True
        timeout = max(0.5, self.health_probe_s)
        task = asyncio.current_task()
        while task is None or not task.cancelling():
            await asyncio.sleep(self.health_probe_s)
            try:
                ok = bool(await asyncio.wait_for(self.redis_probe.ping(), timeout))
            except Exception:
                ok = False
            if ok != serving:
                serving = ok
                log.warning("api.health", extra={"serving": ok, "why": "redis ping"})
                await self._set_health(ok)

    def start_sampling(self) -> None:
        self._sampler = asyncio.create_task(self._sample(), name="protolens-queue-sampler")
        if self.redis_probe is not None:
            self._prober = asyncio.create_task(self._probe_redis(), name="protolens-redis-probe")
        self.lag.start()

    async def stop(self, grace: float | None = 5.0) -> None:
        """NOT_SERVING first (load balancers drain), then finish in-flight RPCs, then close."""
        await self._set_health(False)
        for task in (self._sampler, self._prober):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.lag.stop()
        try:  # bounded: a stuck stream must not keep the process from exiting
            await asyncio.wait_for(self.grpc_server.stop(grace), (grace or 0) + 10)
        except TimeoutError:
            log.warning("api.stop_timed_out")
        if self.checks is not None:
            await self.checks.close()
        await self.store.close()
        if self.redis_probe is not None:
            await self.redis_probe.aclose()
        if self.pool is not None:
            self.pool.close()
        if self.references is not None:
            self.references.close()

    async def wait_for_termination(self) -> None:
        await self.grpc_server.wait_for_termination()


async def start_server(
    settings: Settings,
    *,
    store: Store | None = None,
    catalog: ModelCatalog | None = None,
    tenant_resolver: TenantResolver | None = None,
    sample_interval_s: float = SAMPLE_INTERVAL_S,
    extra_services: Sequence[ServiceHook] = (),
    check_lease_s: float | None = None,
) -> tuple[ApiServer, int]:
    """Start the API on ``settings.grpc_host:grpc_port`` (port 0 picks one); return it and its port.

    ``store``/``catalog`` default to ``Store.connect(settings)`` and the
    model catalog of ``settings`` (built-ins plus ``model_store``);
    ``tenant_resolver`` to API keys in Redis (``api.auth.ApiKeyAuth``: required
    unless ``settings.insecure``). TLS/mTLS and the insecure-on-loopback rule
    come from ``api.transport``. ``check_lease_s``: how long a check's driver may be
    silent before another replica resumes it (default ``settings.check_lease_s``).
    """
    credentials = server_credentials(settings)  # checks the transport rules before anything
    if store is None:
        from protolens_server.queue.store import Store

        store = await Store.connect(settings)
    queue = store.jobs
    if catalog is None:
        from protolens_server.models.catalog import ModelCatalog

        catalog = ModelCatalog.from_settings(settings)
    if tenant_resolver is None:
        tenant_resolver = ApiKeyAuth(
            store.api_keys, require_key=not settings.insecure, rate_limiter=store.rate_limiter
        )
    server = grpc.aio.server(
        interceptors=[ServiceInterceptor(tenant_resolver)], options=server_options(settings)
    )
    pool = RequestPool(settings.request_threads)
    if getattr(queue, "offload", False) is None:
        queue.offload = pool.run  # large job records are encoded and parsed in the pool
    references = ReferenceSets.from_settings(settings)  # shared: one walk per folder
    servicer = ProtolensServicer(queue, catalog, settings, references, pool=pool)
    service_pb2_grpc.add_ProtolensServiceServicer_to_server(servicer, server)
    lease_s = check_lease_s or settings.check_lease_s
    checks = add_check_service(  # api/checks.py
        server, store, catalog, settings, pool=pool, references=references, lease_s=lease_s
    )
    hooks = (add_admin_service, *extra_services)
    services = (
        SERVICE_NAME,
        CHECK_SERVICE_NAME,
        *(hook(server, store, catalog, settings) for hook in hooks),
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*services, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    address = f"{settings.grpc_host}:{settings.grpc_port}"
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    await server.start()
    api = ApiServer(
        server,
        port,
        store,
        catalog,
        health_servicer,
        sample_interval_s,
        services,
        checks,
        pool=pool,
        references=references,
        redis_probe=store.health_client(),
        health_probe_s=settings.health_probe_s,
    )
    _export_pool_usage(store)
    await api._set_health(True)
    api.start_sampling()
    log.info("api.started", extra={"address": f"{settings.grpc_host}:{port}"})
    return api, port


def _export_pool_usage(store: Store) -> None:
    metrics.REDIS_CONNECTIONS.labels("in_use").set_function(lambda: store.pool_usage()[0])
    metrics.REDIS_CONNECTIONS.labels("idle").set_function(lambda: store.pool_usage()[1])


async def serve(
    settings: Settings,
    *,
    ready: Callable[[int, int], None] | None = None,
    extra_services: Sequence[ServiceHook] = (),
) -> None:
    """Run the API and its metrics endpoint until SIGTERM/SIGINT, then shut down gracefully.

    ``ready(grpc_port, metrics_port)`` is called once both listen. torch's CPU threads
    (checks compare prototypes here) follow ``Settings.torch_threads`` (``cpu_budget``).
    """
    log.info("torch threads: %d", configure_torch_threads(settings.torch_threads))
    api, port = await start_server(settings, extra_services=extra_services)
    metrics_port = metrics.serve_metrics(settings.metrics_port, addr=settings.grpc_host)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    freeze_startup_heap()  # short GC pauses from here on (heap.py)
    if ready is not None:
        ready(port, metrics_port)
    try:
        await stop.wait()
    finally:
        log.info("api.stopping")
        await api.stop(grace=settings.shutdown_grace_s)
