"""Container health check: is this process serving? Exit 0 if yes, 1 if not.

``python -m protolens_server.healthcheck`` asks the standard gRPC health
service (grpc.health.v1) of the API server on this host; ``--metrics`` instead
fetches the Prometheus endpoint, the one HTTP surface a worker has. Ports come
from the same settings the process was started with (``PROTOLENS_GRPC_PORT``,
``PROTOLENS_METRICS_PORT``). Used by the Dockerfile's HEALTHCHECK and Compose;
Kubernetes uses its native ``grpc`` probe instead.
"""

from __future__ import annotations

import argparse
import sys
import urllib.request
from collections.abc import Sequence

_ANY_ADDRESS = {"", "0.0.0.0", "::", "[::]"}


def _local_host(bind_host: str) -> str:
    """Where to connect to reach a server bound to ``bind_host``."""
    return "127.0.0.1" if bind_host in _ANY_ADDRESS else bind_host


def check_grpc(address: str, service: str = "", timeout: float = 3.0) -> tuple[bool, str]:
    """(serving?, why) from grpc.health.v1 Check on ``address`` for ``service`` ('' = server)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        with grpc.insecure_channel(address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    except grpc.RpcError as exc:
        return False, f"{address}: {exc.code().name}: {exc.details()}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return reply.status == health_pb2.HealthCheckResponse.SERVING, f"{address}: {status}"


def check_metrics(url: str, timeout: float = 3.0) -> tuple[bool, str]:
    """(answering?, why) from a GET of the Prometheus endpoint ``url``."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            ok = reply.status == 200 and b"# TYPE protolens_" in reply.read()
            return ok, f"{url}: HTTP {reply.status}"
    except OSError as exc:
        return False, f"{url}: {exc}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m protolens_server.healthcheck")
    parser.add_argument("--address", help="host:port of the gRPC server (default: settings)")
    parser.add_argument("--service", default="", help="health service name ('' = whole server)")
    parser.add_argument("--metrics", action="store_true", help="check the metrics endpoint")
    parser.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args(argv)

    address = args.address
    if not address:
        from protolens_server.config import load_settings

        settings = load_settings()
        host = _local_host(settings.grpc_host)
        port = settings.metrics_port if args.metrics else settings.grpc_port
        address = f"{host}:{port}" if not args.metrics else f"127.0.0.1:{port}"
    if args.metrics:
        ok, why = check_metrics(f"http://{address}/metrics", args.timeout)
    else:
        ok, why = check_grpc(address, args.service, args.timeout)
    print(("healthy: " if ok else "unhealthy: ") + why, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
