"""Signing in and out: the form that turns an API key into a sealed session cookie.

The key is checked with one API call, then kept only in the sealed, HttpOnly,
SameSite=Strict cookie (``session.py``); it never appears in a URL.
"""

from __future__ import annotations

import time

from protolens.errors import ConnectionError, UnauthenticatedError
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from protolens_server.web.api import Viewer
from protolens_server.web.render import (
    GalleryState,
    next_path,
    posted_form,
    render,
    set_cookie,
)
from protolens_server.web.session import CSRF_COOKIE, SESSION_COOKIE, new_csrf_token


async def login_form(request: Request, state: GalleryState) -> Response:
    context = {"next": next_path(request.query_params.get("next"))}
    return render(request, state, "login.html", context)


async def login(request: Request, state: GalleryState) -> Response:
    form = await posted_form(request, state)
    if isinstance(form, Response):
        return form
    key, target = form.get("api_key", "").strip(), next_path(form.get("next"))
    assert state.client is not None
    problem = ""
    if not key:
        problem = "Paste an API key (it starts with pl_)."
    else:
        try:
            await Viewer.of(state.client, key, "-", state.cache).client.list_jobs(page_size=1)
        except UnauthenticatedError:
            problem = "The API did not accept that key (revoked, mistyped, or for another API)."
        except ConnectionError as exc:
            problem = f"The API at {state.address} cannot be reached: {exc}"
    if problem:
        context = {"next": target, "error": problem}
        return render(request, state, "login.html", context, status=401)
    response = RedirectResponse(target, status_code=303)
    set_cookie(
        response,
        state,
        SESSION_COOKIE,
        state.sealer.seal(key, time.time()),
        max_age=int(state.sealer.lifetime_s),
    )
    set_cookie(response, state, CSRF_COOKIE, new_csrf_token(), max_age=None)  # a new token
    return response


async def logout(request: Request, state: GalleryState) -> Response:
    form = await posted_form(request, state)
    if isinstance(form, Response):
        return form
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", samesite="strict")
    return response
