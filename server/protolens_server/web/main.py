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


def bind(host: str, port: int, what: str, flag: str) -> socket.socket:
    """A listening TCP socket on ``host:port``; ``PortInUse`` that says what to do."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    # as servers do: old connections in TIME_WAIT do not block it; a listener still does
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise PortInUse(
            f"{what} cannot listen on {host}:{port}: {exc.strerror or exc} (is another "
            f"protolens up or web running? stop it, or pass {flag} N; 0 picks a free port)"
        ) from exc
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
