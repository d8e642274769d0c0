"""The gallery's pages and fragments: API answers in, server-rendered HTML out.

Each handler takes the request and the ``GalleryState`` and reads the API as the
request's viewer (``viewer()``). API errors become pages in one place (``page``):
NOT_FOUND (another tenant's job, too) is a 404, UNAUTHENTICATED sends the viewer to
sign in, an unreachable API is a 503 that says where the gallery looked. POSTs check
the CSRF token first (``session.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import secrets
import time
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
from protolens.types import Job
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates

from protolens_server.web.api import (
    Card,
    PrototypeCache,
    Viewer,
    card_of,
    group_models,
    interval_of,
    matches,
    recent_by_model,
    search_cards,
    split_ref,
    version_cards,
)
from protolens_server.web.compare import check_view, job_ids
from protolens_server.web.plot import layer_plot_svg, layer_rows
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

PAGE_CARDS = 48
RECENT_JOBS = 10
HOME_JOBS_SCANNED = 200  # the home page's thumbnails come from this many newest jobs
THUMBS_PER_MODEL = 6
STALLED_S = 30.0  # a running job without a report for this long is flagged on its page
SMALL_IMAGE_PX = 96  # prototypes smaller than this are enlarged without smoothing
SHOWN_PX = 448  # a prototype page shows the image enlarged to about this (whole multiples)
REPORT_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; frame-ancestors 'none'"

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")


@dataclass
class GalleryState:
    address: str
    sealer: SessionSealer
    cache: PrototypeCache
    secure_cookies: bool = False
    client: AsyncClient | None = None


# --- formatting filters ------------------------------------------------------------------


def _num(v: Any, digits: int = 3, signed: bool = False) -> str:
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
    num=_num,
    signed=functools.partial(_num, signed=True),
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
        _set_cookie(response, state, CSRF_COOKIE, token, max_age=None)
    return response


def _set_cookie(
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


def _next_path(value: str | None) -> str:
    """Where to go after signing in: a path on this site only (never another host)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def _is_fragment(request: Request) -> bool:
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
            if _is_fragment(request):
                return Response(status_code=401, headers={"HX-Redirect": target})
            return RedirectResponse(target, status_code=303)
        except (NotFoundError, InvalidArgumentError) as exc:
            return _error(request, state, 404, "Not found", str(exc))
        except PermissionDeniedError as exc:
            return _error(request, state, 403, "Not allowed", str(exc))
        except ResourceExhaustedError as exc:
            return _error(request, state, 429, "Too many requests", str(exc))
        except ConnectionError as exc:
            detail = f"The API at {state.address} cannot be reached: {exc}"
            return _error(request, state, 503, "The API is unavailable", detail)
        except ApiError as exc:
            return _error(request, state, 502, "The API answered with an error", str(exc))

    return wrapped


def _error(request: Request, state: GalleryState, status: int, title: str, detail: str) -> Response:
    if _is_fragment(request):
        return HTMLResponse(f'<p class="notice error">{title}</p>', status_code=status)
    return render(request, state, "error.html", {"title": title, "detail": detail}, status)


def not_found_handler(state: GalleryState) -> Callable[[Request, Exception], Awaitable[Response]]:
    async def handle(request: Request, exc: Exception) -> Response:
        return _error(request, state, 404, "Not found", f"Nothing at {request.url.path}.")

    return handle


async def _form(request: Request, state: GalleryState) -> Mapping[str, str] | Response:
    """The POSTed form, or a 403 when its CSRF token or origin is wrong."""
    form = await request.form()
    host = request.headers.get("host", "")
    if not (
        csrf_ok(request.cookies.get(CSRF_COOKIE), str(form.get(CSRF_FIELD) or ""))
        and same_origin(request.headers.get("origin"), request.url.scheme, host)
    ):
        return _error(
            request, state, 403, "Form expired", "Reload the page and send the form again."
        )
    return {k: str(v) for k, v in form.items()}


def _small(cards: list[Card], sizes: Mapping[str, int]) -> None:
    for card in cards:
        card.small = sizes.get(card.model, 224) < SMALL_IMAGE_PX


# --- pages -------------------------------------------------------------------------------


async def healthz(request: Request, state: GalleryState) -> Response:
    return Response("ok\n", media_type="text/plain")


@page
async def home(request: Request, state: GalleryState) -> Response:
    v = viewer(request, state)
    models, jobs, (checks, _) = await asyncio.gather(
        v.models(), v.jobs(limit=HOME_JOBS_SCANNED), v.client.list_checks(page_size=8)
    )
    thumbs = recent_by_model(jobs, THUMBS_PER_MODEL)
    _small(
        [c for cards in thumbs.values() for c in cards],
        {m.id: m.input_spec.height for m in models},
    )
    context = {
        "groups": group_models(models),
        "jobs": jobs[:RECENT_JOBS],
        "checks": checks,
        "thumbs": thumbs,
    }
    return render(request, state, "home.html", context)


@page
async def model_version(request: Request, state: GalleryState) -> Response:
    v = viewer(request, state)
    ref = request.path_params["ref"]
    model, models, jobs = await asyncio.gather(v.client.get_model(ref), v.models(), v.jobs())
    base, version = split_ref(model.id)
    group = next(g for g in group_models(models) if g.name == base)
    query = request.query_params.get("q", "").strip()
    cards = [c for c in version_cards(jobs, model) if matches(query, c.label, c.classes)]
    pages = max(1, -(-len(cards) // PAGE_CARDS))
    number = min(max(1, _int(request.query_params.get("page"), 1)), pages)
    shown = cards[(number - 1) * PAGE_CARDS : number * PAGE_CARDS]
    _small(shown, {model.id: model.input_spec.height})
    await v.add_scores(shown)
    return render(
        request,
        state,
        "model.html",
        {
            "model": model,
            "base": base,
            "version": version,
            "group": group,
            "cards": shown,
            "total": len(cards),
            "query": query,
            "page": number,
            "pages": pages,
        },
    )


def _int(text: str | None, default: int) -> int:
    try:
        return int(text or default)
    except ValueError:
        return default


@page
async def search(request: Request, state: GalleryState) -> Response:
    v = viewer(request, state)
    query = request.query_params.get("q", "").strip()
    cards: list[Card] = []
    known: list[tuple[str, int, str]] = []
    if query:
        models, jobs = await asyncio.gather(v.models(), v.jobs())
        cards = search_cards(jobs, query)[: PAGE_CARDS * 2]
        _small(cards, {m.id: m.input_spec.height for m in models})
        await v.add_scores(cards)
        for m in models:
            known += [(m.id, i, n) for i, n in enumerate(m.class_names) if matches(query, n, (i,))]
        known = known[:30]
    return render(request, state, "search.html", {"query": query, "cards": cards, "known": known})


@page
async def jobs(request: Request, state: GalleryState) -> Response:
    v = viewer(request, state)
    listed, _ = await v.client.list_jobs(page_size=100)
    return render(request, state, "jobs.html", {"jobs": listed})


PHASES = (
    ("QUEUED", "queued"),
    ("LOADING_MODEL", "loading model"),
    ("PREPARING", "preparing"),
    ("OPTIMISING", "optimising"),
    ("SCORING", "scoring"),
    ("STORING", "storing"),
)


def _phases(job: Job) -> list[tuple[str, str]]:
    """The job's way from queued to stored, each step ``done``, ``now`` or ``todo``."""
    steps = [(k, w) for k, w in PHASES if k != "SCORING" or job.reference_set]
    keys = [k for k, _ in steps]
    if job.state == "SUCCEEDED":
        current = len(steps)
    elif job.state == "RUNNING":
        current = keys.index(job.progress.phase) if job.progress.phase in keys else 1
    elif job.state == "QUEUED":
        current = 0
    else:  # failed or cancelled: the phases it went through are not known any more
        return []
    return [
        (word, "done" if i < current else "now" if i == current else "todo")
        for i, (_, word) in enumerate(steps)
    ]


def _job_context(job: Job) -> dict[str, Any]:
    p = job.progress
    updated = p.update_time
    silent = (datetime.now(UTC) - updated).total_seconds() if updated else None
    return {
        "job": job,
        "phases": _phases(job),
        "stalled": job.state == "RUNNING" and silent is not None and silent > STALLED_S,
        "silent_s": silent,
    }


@page
async def job(request: Request, state: GalleryState) -> Response:
    v = viewer(request, state)
    found = await v.client.get_job(request.path_params["job"])
    models = await v.models()
    cards = [card_of(found, s) for s in found.prototypes]
    _small(cards, {m.id: m.input_spec.height for m in models})
    await v.add_scores(cards)
    return render(request, state, "job.html", {**_job_context(found), "cards": cards})


@page
async def job_progress(request: Request, state: GalleryState) -> Response:
    v = viewer(request, state)
    found = await v.client.get_job(request.path_params["job"])
    headers = {}
    if found.finished and request.query_params.get("live") == "1":
        headers["HX-Refresh"] = "true"  # the page shows the result once the job ends
    live = request.query_params.get("live") == "1"
    ctx = {**_job_context(found), "live": live}
    return render(request, state, "_job_progress.html", ctx, headers=headers)


@page
async def cancel_job(request: Request, state: GalleryState) -> Response:
    form = await _form(request, state)
    if isinstance(form, Response):
        return form
    job_id = request.path_params["job"]
    v = viewer(request, state)
    with contextlib.suppress(FailedPreconditionError):  # it ended meanwhile: the page says how
        await v.client.cancel_job(job_id)
    return RedirectResponse(f"/jobs/{quote(job_id)}", status_code=303)


@page
async def prototype(request: Request, state: GalleryState) -> Response:
    v = viewer(request, state)
    job_id, index = request.path_params["job"], request.path_params["index"]
    found, proto = await asyncio.gather(v.client.get_job(job_id), v.prototype(job_id, index))
    models = await v.models()
    model = next((m for m in models if m.id == found.model), None)
    height = model.input_spec.height if model else 224
    scores = proto.scores
    rows = layer_rows(scores.details) if scores else []
    robustness = _robustness(scores.robustness if scores else {}, model)
    title = f"Path similarity of {proto.summary.target.label()}, layer by layer"
    context = {
        "job": found,
        "proto": proto,
        "card": card_of(found, proto.summary),
        "scores": scores,
        "path_similarity": scores.summary.get("path_similarity") if scores else None,
        "interval": interval_of(scores.details, "path_similarity") if scores else None,
        "rows": rows,
        "plot": layer_plot_svg(rows, title),
        "scale": max(1, SHOWN_PX // max(1, height)),
        "robustness": robustness,
        "height": height,
        "config": json.dumps(proto.provenance.config, indent=2, sort_keys=True),
    }
    return render(request, state, "prototype.html", context)


_ROBUSTNESS_WORDS = {
    "probability": "target probability, untransformed",
    "probability_mean": "mean over random transforms",
    "probability_min": "lowest over random transforms",
    "logit_margin": "logit margin to the runner-up",
    "runner_up": "runner-up class",
    "samples": "random transforms drawn",
}


def _robustness(values: Mapping[str, float], model: Any) -> list[tuple[str, str]]:
    """Robustness figures in words: whole numbers as such, the runner-up by its name."""
    names = model.class_names if model is not None else ()
    rows = []
    for key, value in sorted(values.items()):
        label = _ROBUSTNESS_WORDS.get(key, key.replace("_", " "))
        if key == "runner_up" and float(value).is_integer() and 0 <= int(value) < len(names):
            text = f"{names[int(value)]} ({int(value)})"
        elif float(value).is_integer() and key in ("samples", "runner_up"):
            text = str(int(value))
        else:
            text = _num(value, 3)
        rows.append((label, text))
    return rows


@page
async def prototype_png(request: Request, state: GalleryState) -> Response:
    v = viewer(request, state)
    proto = await v.prototype(request.path_params["job"], request.path_params["index"])
    headers = {"cache-control": "private, max-age=86400"}
    if "download" in request.query_params:
        headers["content-disposition"] = f'attachment; filename="{proto.stem}.png"'
    return Response(proto.png, media_type="image/png", headers=headers)


@page
async def prototype_json(request: Request, state: GalleryState) -> Response:
    v = viewer(request, state)
    proto = await v.prototype(request.path_params["job"], request.path_params["index"])
    return JSONResponse(
        proto.record(file=f"{proto.stem}.png"),
        headers={"content-disposition": f'attachment; filename="{proto.stem}.json"'},
    )


@page
async def checks(request: Request, state: GalleryState) -> Response:
    v = viewer(request, state)
    listed, _ = await v.client.list_checks(page_size=100)
    return render(request, state, "checks.html", {"checks": listed})


@page
async def check(request: Request, state: GalleryState) -> Response:
    v = viewer(request, state)
    found = await v.client.get_check(request.path_params["check"])
    models = await v.models()
    height = next((m.input_spec.height for m in models if m.id == found.model), 224)
    context: dict[str, Any] = {"check": found, "view": None, "small": height < SMALL_IMAGE_PX}
    if found.state == "SUCCEEDED":
        report = json.loads((await v.client.get_check_report(found)).json)
        ids = job_ids(report)
        fetched = await asyncio.gather(*(v.client.get_job(i) for i in ids))
        context["view"] = check_view(report, dict(zip(ids, fetched, strict=True)))
    return render(request, state, "check.html", context)


@page
async def check_progress(request: Request, state: GalleryState) -> Response:
    v = viewer(request, state)
    found = await v.client.get_check(request.path_params["check"])
    live = request.query_params.get("live") == "1"
    headers = {"HX-Refresh": "true"} if found.finished and live else {}
    ctx = {"check": found, "live": live}
    return render(request, state, "_check_progress.html", ctx, headers=headers)


@page
async def check_report(request: Request, state: GalleryState) -> Response:
    v = viewer(request, state)
    report = await v.client.get_check_report(request.path_params["check"])
    # The report is one self-contained file: inline styles, data: images, no scripts.
    return HTMLResponse(report.html, headers={"content-security-policy": REPORT_CSP})


@page
async def cancel_check(request: Request, state: GalleryState) -> Response:
    form = await _form(request, state)
    if isinstance(form, Response):
        return form
    check_id = request.path_params["check"]
    v = viewer(request, state)
    with contextlib.suppress(FailedPreconditionError):
        await v.client.cancel_check(check_id)
    return RedirectResponse(f"/checks/{quote(check_id)}", status_code=303)


async def _compare_context(
    request: Request, state: GalleryState, params: Mapping[str, str]
) -> dict[str, Any]:
    v = viewer(request, state)
    models, (listed, _) = await asyncio.gather(v.models(), v.client.list_checks(page_size=200))
    groups = [g for g in group_models(models) if len(g.versions) >= 2]
    name = params.get("model") or (groups[0].name if groups else "")
    group = next((g for g in groups if g.name == name), groups[0] if groups else None)
    refs = [m.id for m in group.versions] if group else []
    b = params.get("b") if params.get("b") in refs else (refs[-1] if refs else "")
    a = params.get("a") if params.get("a") in refs else (refs[-2] if len(refs) > 1 else "")
    classes = params.get("classes", "")
    if group and not classes and b:
        model_b = next(m for m in group.versions if m.id == b)
        cards = version_cards(await v.jobs(), model_b)
        classes = ", ".join(str(c.classes[0]) for c in cards if len(c.classes) == 1)
    return {
        "groups": groups,
        "group": group,
        "a": a,
        "b": b,
        "classes": classes,
        "steps": params.get("steps", ""),
        "reference_set": params.get("reference_set", ""),
        "request_id": params.get("request_id") or secrets.token_hex(12),
        "matching": [c for c in listed if c.model == b and c.baseline == a],
    }


@page
async def compare_form(request: Request, state: GalleryState) -> Response:
    context = await _compare_context(request, state, dict(request.query_params))
    return render(request, state, "compare.html", context)


@page
async def start_compare(request: Request, state: GalleryState) -> Response:
    form = await _form(request, state)
    if isinstance(form, Response):
        return form
    v = viewer(request, state)
    classes = [c.strip() for c in form.get("classes", "").replace(",", " ").split() if c.strip()]
    steps = _int(form.get("steps"), 0) or None
    try:
        if not classes:
            raise ValueError("name the classes to compare (indices or names)")
        started = await v.client.start_check(
            form.get("b", ""),
            baseline=form.get("a", ""),
            classes=classes,
            steps=steps,
            reference_set=form.get("reference_set", "").strip(),
            request_id=form.get("request_id", ""),
        )
    except (InvalidArgumentError, NotFoundError, ValueError) as exc:
        context = await _compare_context(request, state, form)
        context["error"] = str(exc)
        return render(request, state, "compare.html", context, status=400)
    return RedirectResponse(f"/checks/{quote(started.name.removeprefix('checks/'))}", 303)


# --- signing in and out --------------------------------------------------------------------


async def login_form(request: Request, state: GalleryState) -> Response:
    context = {"next": _next_path(request.query_params.get("next"))}
    return render(request, state, "login.html", context)


async def login(request: Request, state: GalleryState) -> Response:
    form = await _form(request, state)
    if isinstance(form, Response):
        return form
    key, target = form.get("api_key", "").strip(), _next_path(form.get("next"))
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
    _set_cookie(
        response,
        state,
        SESSION_COOKIE,
        state.sealer.seal(key, time.time()),
        max_age=int(state.sealer.lifetime_s),
    )
    _set_cookie(response, state, CSRF_COOKIE, new_csrf_token(), max_age=None)  # a new token
    return response


async def logout(request: Request, state: GalleryState) -> Response:
    form = await _form(request, state)
    if isinstance(form, Response):
        return form
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", samesite="strict")
    return response
