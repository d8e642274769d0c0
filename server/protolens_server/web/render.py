"""What every gallery page shares: templates and their filters, the request's viewer, the
page wrapper that turns API errors into pages, cookies and checked form posts.

API errors become pages in one place (``page``): NOT_FOUND (another tenant's job, too)
is a 404, UNAUTHENTICATED sends the viewer to sign in, an unreachable API is a 503
that says where the gallery looked. ``posted_form`` checks a POST's CSRF token and
origin before a handler reads it (``session.py``).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from protolens import AsyncClient
from protolens.errors import (
    ApiError,
    ConnectionError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
)
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates

from protolens_server.web.api import Card, PrototypeCache, Viewer
from protolens_server.web.session import (
    CSRF_COOKIE,
    CSRF_FIELD,
    SESSION_COOKIE,
    SessionSealer,
    csrf_ok,
    key_fingerprint,
    new_csrf_token,
    same_origin,
)

SMALL_IMAGE_PX = 96  # prototypes smaller than this are enlarged without smoothing

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")


@dataclass
class GalleryState:
    address: str
    sealer: SessionSealer
    cache: PrototypeCache
    secure_cookies: bool = False
    client: AsyncClient | None = None


# --- formatting filters ------------------------------------------------------------------


def number(v: Any, digits: int = 3, signed: bool = False) -> str:
    if not isinstance(v, int | float) or isinstance(v, bool) or v != v:
        return "–"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def _when(v: datetime | None) -> str:
    if v is None:
        return "–"
    seconds = (datetime.now(UTC) - v).total_seconds()
    if seconds < 90:
        return f"{max(0, int(seconds))} s ago"
    if seconds < 90 * 60:
        return f"{int(seconds // 60)} min ago"
    return v.strftime("%Y-%m-%d %H:%M UTC")


templates.env.filters.update(
    num=number,
    signed=functools.partial(number, signed=True),
    when=_when,
    short=lambda s: (s or "")[:12],
    phase=lambda p: p.replace("_", " ").lower(),
)


# --- the request's viewer, pages and errors ---------------------------------------------------


def viewer(request: Request, state: GalleryState) -> Viewer:
    session = state.sealer.open(request.cookies.get(SESSION_COOKIE))
    key = session.api_key if session else ""
    assert state.client is not None
    return Viewer.of(state.client, key, key_fingerprint(key) if key else "-", state.cache)


def signed_in(request: Request, state: GalleryState) -> bool:
    return state.sealer.open(request.cookies.get(SESSION_COOKIE)) is not None


def render(
    request: Request,
    state: GalleryState,
    name: str,
    context: Mapping[str, Any] | None = None,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> Response:
    token = request.cookies.get(CSRF_COOKIE) or ""
    fresh = not token
    token = token or new_csrf_token()
    ctx = {
        "csrf_field": CSRF_FIELD,
        "csrf_token": token,
        "signed_in": signed_in(request, state),
        "api_address": state.address,
        "path": request.url.path,
        **(context or {}),
    }
    response = templates.TemplateResponse(
        request, name, ctx, status_code=status, headers=dict(headers or {})
    )
    if fresh:
        set_cookie(response, state, CSRF_COOKIE, token, max_age=None)
    return response


def set_cookie(
    response: Response, state: GalleryState, name: str, value: str, max_age: int | None
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="strict",
        secure=state.secure_cookies,
    )


def next_path(value: str | None) -> str:
    """Where to go after signing in: a path on this site only (never another host)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def is_fragment(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


Handler = Callable[[Request, GalleryState], Awaitable[Response]]


def page(handler: Handler) -> Handler:
    """Turn the API's errors into pages (or, for htmx fragments, into what htmx acts on)."""

    @functools.wraps(handler)
    async def wrapped(request: Request, state: GalleryState) -> Response:
        try:
            return await handler(request, state)
        except UnauthenticatedError:
            target = f"/login?next={quote(request.url.path)}"
            if is_fragment(request):
                return Response(status_code=401, headers={"HX-Redirect": target})
            return RedirectResponse(target, status_code=303)
        except (NotFoundError, InvalidArgumentError) as exc:
            return error_page(request, state, 404, "Not found", str(exc))
        except PermissionDeniedError as exc:
            return error_page(request, state, 403, "Not allowed", str(exc))
        except FailedPreconditionError as exc:  # e.g. the prototype of a job still running
            return error_page(request, state, 409, "Not available (yet)", str(exc))
        except ResourceExhaustedError as exc:
            return error_page(request, state, 429, "Too many requests", str(exc))
        except ConnectionError as exc:
            detail = f"The API at {state.address} cannot be reached: {exc}"
            return error_page(request, state, 503, "The API is unavailable", detail)
        except ApiError as exc:
            return error_page(request, state, 502, "The API answered with an error", str(exc))

    return wrapped


def error_page(
    request: Request, state: GalleryState, status: int, title: str, detail: str
) -> Response:
    if is_fragment(request):
        return HTMLResponse(f'<p class="notice error">{title}</p>', status_code=status)
    return render(request, state, "error.html", {"title": title, "detail": detail}, status)


def not_found_handler(state: GalleryState) -> Callable[[Request, Exception], Awaitable[Response]]:
    async def handle(request: Request, exc: Exception) -> Response:
        return error_page(request, state, 404, "Not found", f"Nothing at {request.url.path}.")

    return handle


async def posted_form(request: Request, state: GalleryState) -> Mapping[str, str] | Response:
    """The POSTed form, or a 403 when its CSRF token or origin is wrong."""
    form = await request.form()
    host = request.headers.get("host", "")
    if not (
        csrf_ok(request.cookies.get(CSRF_COOKIE), str(form.get(CSRF_FIELD) or ""))
        and same_origin(request.headers.get("origin"), request.url.scheme, host)
    ):
        return error_page(
            request, state, 403, "Form expired", "Reload the page and send the form again."
        )
    return {k: str(v) for k, v in form.items()}


def mark_small(cards: list[Card], sizes: Mapping[str, int]) -> None:
    for card in cards:
        card.small = sizes.get(card.model, 224) < SMALL_IMAGE_PX
