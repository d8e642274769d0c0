"""Shared by tests that read a failed call's rich status (tests/tenancy/test_quotas.py,
tests/api/test_api_pool_busy.py): its google.rpc ErrorInfo and RetryInfo. A unique module
name: tests/ has no packages."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2


def status_details(error: grpc.aio.AioRpcError) -> dict[str, object]:
    """The ``ErrorInfo`` and ``RetryInfo`` of ``error``'s status details, by message name."""
    raw = dict(error.trailing_metadata() or ())["grpc-status-details-bin"]
    out: dict[str, object] = {}
    for detail in status_pb2.Status.FromString(raw).details:
        for cls in (error_details_pb2.ErrorInfo, error_details_pb2.RetryInfo):
            message = cls()
            if detail.Unpack(message):
                out[cls.__name__] = message
    return out
