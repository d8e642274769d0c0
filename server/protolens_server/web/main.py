"""``protolens web``: serve the gallery with uvicorn until SIGTERM/SIGINT.

The listening socket is bound here, before uvicorn starts, so a port in use is one
clear error (``PortInUse``) and port 0 gives the port actually chosen to ``ready``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable

from protolens_server.config import Settings
from protolens_server.errors import ProtolensError


class PortInUse(ProtolensError):
    """A port this command needs is taken (another ``protolens up``/``web`` running?)."""

    reason = "PORT_IN_USE"


def _answers(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port`` (a wildcard host is
    asked on loopback)."""
    target = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    family = socket.AF_INET6 if ":" in target else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.settimeout(timeout)
        return probe.connect_ex((target, port)) == 0


def bind(host: str, port: int, what: str, flag: str) -> socket.socket:
    """A listening TCP socket on ``host:port``; ``PortInUse`` that says what to do.

    A live listener is found by connecting to it first: a bind alone does not always
    fail beside one (a listener bound through another address family or with other
    socket options; seen once under load with the API's gRPC listener).
    """

    def in_use(reason: str) -> PortInUse:
        return PortInUse(
            f"{what} cannot listen on {host}:{port}: {reason} (is another "
            f"protolens up or web running? stop it, or pass {flag} N; 0 picks a free port)"
        )

    if port and _answers(host, port):
        raise in_use("Address already in use")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    # as servers do: old connections in TIME_WAIT do not block it; a listener still does
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise in_use(str(exc.strerror or exc)) from exc
    sock.listen(128)
    sock.setblocking(False)
    return sock


def run_web(settings: Settings, *, ready: Callable[[str], None] | None = None) -> None:
    """Serve the gallery on ``web_host:web_port``; ``ready(url)`` once it listens."""
    import uvicorn

    from protolens_server.web.app import create_app

    sock = bind(settings.web_host, settings.web_port, "the gallery", "--web-port")
    host, port = sock.getsockname()[:2]
    app = create_app(settings)
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="on", proxy_headers=False
    )
    server = uvicorn.Server(config)

    async def serve() -> None:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.05)
        if ready is not None and server.started:
            shown = f"[{host}]" if ":" in host else host
            ready(f"http://{shown}:{port}/")
        await task

    try:
        asyncio.run(serve())
    finally:
        with contextlib.suppress(OSError):
            sock.close()
