"""The gallery's HTTP app (Starlette): routes, the viewer of each request, errors, headers.

    app = create_app(settings)          # reads the API at settings.web_api_address
    uvicorn.run(app, ...)               # what ``protolens web`` does (web/main.py)

Every page is rendered on the server from API answers (``views.py``); htmx, served
from ``/static`` like everything else the pages load, refreshes the live parts (job
and check progress) by polling small fragments. Pages carry a strict
Content-Security-Policy: scripts, styles and images from this origin only (images
also as ``data:``), no inline script, no framing.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from protolens import AsyncClient
from protolens.auth import connection
from protolens.client import service_target
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from protolens_server.config import Settings
from protolens_server.web import signin, views
from protolens_server.web.api import PrototypeCache
from protolens_server.web.render import GalleryState, not_found_handler
from protolens_server.web.session import SessionSealer

HERE = Path(__file__).parent
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    # same-origin: links to other sites get no referrer, and the browser's form POSTs keep
    # their Origin header (with no-referrer it would be "null"; session.same_origin reads it)
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
}


def api_address(settings: Settings) -> str:
    return service_target(settings.web_api_address or f"{settings.grpc_host}:{settings.grpc_port}")


class SecurityHeaders:
    """Adds the security headers (and a CSP unless the route set its own) to every response;
    pages that hold a tenant's data are never stored by shared caches."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.decode().lower() for k, _ in headers}
                extra = dict(SECURITY_HEADERS)
                extra.setdefault("content-security-policy", CSP)
                extra.setdefault("cache-control", "no-store")
                headers += [(k.encode(), v.encode()) for k, v in extra.items() if k not in present]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(settings: Settings, *, client: AsyncClient | None = None) -> Starlette:
    """The gallery for the API at ``settings.web_api_address`` (or the API's own address).

    ``client``: an ``AsyncClient`` to share (tests); otherwise one is opened at start-up
    (TLS from ``$PROTOLENS_TLS_CA``/``_CERT``/``_KEY`` as for every client) and closed at
    shutdown.
    """
    address = api_address(settings)
    state = GalleryState(
        address=address,
        sealer=SessionSealer(settings.web_secret, settings.web_session_hours * 3600),
        cache=PrototypeCache(),
        secure_cookies=settings.web_secure_cookies,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        own = client is None
        if client is None:
            transport = connection(api_key="")  # TLS from the environment; never a key
            transport.pop("metadata")
            state.client = AsyncClient(address, timeout=15, **transport)
        else:
            state.client = client
        try:
            yield
        finally:
            if own:
                await state.client.close()

    def bound(handler: Callable[..., Awaitable[Response]]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            return await handler(request, state)

        return endpoint

    routes = [
        Route("/", bound(views.home)),
        Route("/healthz", bound(views.healthz)),
        Route("/login", bound(signin.login_form), methods=["GET"]),
        Route("/login", bound(signin.login), methods=["POST"]),
        Route("/logout", bound(signin.logout), methods=["POST"]),
        Route("/models/{ref}", bound(views.model_version)),
        Route("/search", bound(views.search)),
        Route("/jobs", bound(views.jobs)),
        Route("/jobs/{job}", bound(views.job)),
        Route("/jobs/{job}/progress", bound(views.job_progress)),
        Route("/jobs/{job}/cancel", bound(views.cancel_job), methods=["POST"]),
        Route("/jobs/{job}/prototypes/{index:int}.png", bound(views.prototype_png)),
        Route("/jobs/{job}/prototypes/{index:int}.json", bound(views.prototype_json)),
        Route("/jobs/{job}/prototypes/{index:int}.safetensors", bound(views.prototype_tensor)),
        Route("/jobs/{job}/prototypes/{index:int}", bound(views.prototype)),
        Route("/checks", bound(views.checks)),
        Route("/checks/{check}", bound(views.check)),
        Route("/checks/{check}/progress", bound(views.check_progress)),
        Route("/checks/{check}/report.html", bound(views.check_report)),
        Route("/checks/{check}/cancel", bound(views.cancel_check), methods=["POST"]),
        Route("/compare", bound(views.compare_form), methods=["GET"]),
        Route("/compare", bound(views.start_compare), methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={404: not_found_handler(state)},
    )
    app.add_middleware(SecurityHeaders)
    return app
