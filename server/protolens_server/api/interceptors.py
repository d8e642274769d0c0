"""One grpc.aio interceptor around every RPC (unary and streaming, ours and health/reflection).

For each call it: authenticates the caller (the tenant resolver; health and
reflection are public and skip it), binds the caller's principal and a trace id
(for the servicers and the JSON logs), maps any exception through ``api/errors.py`` into a rich
status (also mid-stream), and records ``protolens_rpc_requests_total`` by
method and code and ``protolens_rpc_duration_seconds`` by method.
"""

from __future__ import annotations

import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc

from protolens_server import metrics
from protolens_server.api.errors import to_rpc_error
from protolens_server.api.tenancy import (
    ANONYMOUS,
    CURRENT_PRINCIPAL,
    Principal,
    TenantResolver,
    default_tenant,
)
from protolens_server.errors import InvalidArgument
from protolens_server.logging import bind, reset_context_var, trace_id_from_metadata

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]
# Services anyone may call without a key: they reveal nothing about jobs or tenants.
PUBLIC_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class ServiceInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, tenant_resolver: TenantResolver = default_tenant) -> None:
        self._resolve_tenant = tenant_resolver

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method.rsplit("/", 1)[-1]
        public = handler_call_details.method.startswith(PUBLIC_SERVICES)
        kw = {
            "request_deserializer": _tolerant(handler.request_deserializer),
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, method, public), **kw
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._unary(handler.stream_unary, method, public), **kw
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(handler.unary_stream, method, public), **kw
            )
        return grpc.stream_stream_rpc_method_handler(
            self._stream(handler.stream_stream, method, public), **kw
        )

    def _unary(self, behavior: Callable[..., Any], method: str, public: bool) -> Callable[..., Any]:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            start, code = time.perf_counter(), grpc.StatusCode.OK
            try:
                principal = ANONYMOUS if public else await self._principal(context)
                _check_parsed(request)
                with self._bound(context, principal):
                    return await behavior(request, context)
            except Exception as exc:
                code, status = self._map(exc, context, method)
                if status is None:
                    raise
                await context.abort_with_status(status)
            except BaseException:
                code = grpc.StatusCode.CANCELLED
                raise
            finally:
                _record(method, code, start)

        return call

    def _stream(
        self, behavior: Callable[..., Any], method: str, public: bool
    ) -> Callable[..., Any]:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            start, code = time.perf_counter(), grpc.StatusCode.OK
            try:
                principal = ANONYMOUS if public else await self._principal(context)
                _check_parsed(request)
                with self._bound(context, principal):
                    result = behavior(request, context)
                    if inspect.isasyncgen(result):
                        async for item in result:
                            yield item
                    else:
                        await result
            except Exception as exc:
                code, status = self._map(exc, context, method)
                if status is None:
                    raise
                await context.abort_with_status(status)
            except BaseException:
                code = grpc.StatusCode.CANCELLED
                raise
            finally:
                _record(method, code, start)

        return call

    async def _principal(self, context: grpc.aio.ServicerContext) -> Principal:
        found = self._resolve_tenant(context)
        if inspect.isawaitable(found):
            found = await found
        return found if isinstance(found, Principal) else Principal(str(found))

    @contextlib.contextmanager
    def _bound(self, context: grpc.aio.ServicerContext, principal: Principal) -> Iterator[None]:
        trace_id = trace_id_from_metadata(context.invocation_metadata())
        token = CURRENT_PRINCIPAL.set(principal)
        try:
            with bind(tenant=principal.tenant, trace_id=trace_id):
                yield
        finally:
            reset_context_var(CURRENT_PRINCIPAL, token)

    def _map(
        self, exc: Exception, context: grpc.aio.ServicerContext, method: str
    ) -> tuple[grpc.StatusCode, grpc.Status | None]:
        """The code to record and the status to abort with (None: re-raise as is)."""
        if isinstance(exc, grpc.aio.AbortError):  # the servicer aborted on its own
            return context.code() or grpc.StatusCode.UNKNOWN, None
        error = to_rpc_error(exc, method)
        return error.code, error.to_status()


class _Malformed:
    """A request body that did not parse: answered INVALID_ARGUMENT, never UNKNOWN."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _tolerant(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as exc:  # DecodeError and friends
            return _Malformed(exc)

    return parse


def _check_parsed(request: Any) -> None:
    if isinstance(request, _Malformed):
        raise InvalidArgument("request", f"not a valid message of this RPC ({request.error})")


def _record(method: str, code: grpc.StatusCode | None, start: float) -> None:
    name = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
    metrics.RPC_REQUESTS.labels(method=method, code=name).inc()
    metrics.RPC_LATENCY.labels(method=method).observe(time.perf_counter() - start)
