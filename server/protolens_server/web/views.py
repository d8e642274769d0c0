"""The gallery's pages and fragments: API answers in, server-rendered HTML out.

Each handler takes the request and the ``GalleryState`` and reads the API as the
request's viewer (``render.viewer``); ``render.page`` turns API errors into pages and
``render.posted_form`` checks every POST first. Signing in and out: ``signin.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from protolens import names
from protolens.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from protolens.types import Job
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from protolens_server.web.api import (
    Card,
    card_of,
    group_models,
    headline,
    matches,
    recent_by_model,
    search_cards,
    split_ref,
    version_cards,
)
from protolens_server.web.compare import check_view, job_ids
from protolens_server.web.plot import layer_plot_svg, layer_rows
from protolens_server.web.render import (
    SMALL_IMAGE_PX,
    GalleryState,
    error_page,
    mark_small,
    number,
    page,
    posted_form,
    render,
    viewer,
)

PAGE_CARDS = 48
RECENT_JOBS = 10
# a class name or index to search for: the longest of ImageNet's 1000 names has 43
# characters; a longer query was echoed four times into the page (100 KB -> 400 KB)
MAX_QUERY_CHARS = 200
HOME_JOBS_SCANNED = 200  # the home page's thumbnails come from this many newest jobs
THUMBS_PER_MODEL = 6
STALLED_S = 30.0  # a running job without a report for this long is flagged on its page
SHOWN_PX = 448  # a prototype page shows the image enlarged to about this (whole multiples)
REPORT_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; frame-ancestors 'none'"

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
    mark_small(
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
    mark_small(shown, {model.id: model.input_spec.height})
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
    if len(query) > MAX_QUERY_CHARS:
        detail = f"Search for a class name or index of at most {MAX_QUERY_CHARS} characters."
        return error_page(request, state, 400, "Search text too long", detail)
    cards: list[Card] = []
    known: list[tuple[str, int, str]] = []
    if query:
        models, jobs = await asyncio.gather(v.models(), v.jobs())
        cards = search_cards(jobs, query)[: PAGE_CARDS * 2]
        mark_small(cards, {m.id: m.input_spec.height for m in models})
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
    mark_small(cards, {m.id: m.input_spec.height for m in models})
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
    form = await posted_form(request, state)
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
    value, interval, reason = headline(scores) if scores else (None, None, "")
    title = f"Path similarity of {proto.summary.target.label()}, layer by layer"
    context = {
        "job": found,
        "proto": proto,
        "card": card_of(found, proto.summary),
        "scores": scores,
        "path_similarity": value,
        "interval": interval,
        "reason": _reason_text(scores.details, reason) if scores else "",
        "determinate": f"{scores.determinate_layers}/{len(scores.layer_names)}" if scores else "",
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
    "probability_mean_over_transforms": "mean over random transforms",
    "probability_min_over_transforms": "lowest over random transforms",
    "logit_margin": "logit margin to the runner-up",
    "runner_up": "runner-up class",
    "transform_samples": "random transforms drawn",
    # the names of scores version 1
    "probability_mean": "mean over random transforms",
    "probability_min": "lowest over random transforms",
    "samples": "random transforms drawn",
}


def _reason_text(details: Mapping[str, Any], code: str) -> str:
    """A reason code in words (the scores spell out the codes they use)."""
    if not code:
        return ""
    words = (details.get("reasons") or {}).get(code)
    return f"{words} ({code})" if words else code


def _robustness(values: Mapping[str, float], model: Any) -> list[tuple[str, str]]:
    """Robustness figures in words: whole numbers as such, the runner-up by its name."""
    names = model.class_names if model is not None else ()
    rows = []
    for key, value in sorted(values.items()):
        label = _ROBUSTNESS_WORDS.get(key, key.replace("_", " "))
        if key == "runner_up" and float(value).is_integer() and 0 <= int(value) < len(names):
            text = f"{names[int(value)]} ({int(value)})"
        elif float(value).is_integer() and key in ("samples", "transform_samples", "runner_up"):
            text = str(int(value))
        else:
            text = number(value, 3)
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
async def prototype_tensor(request: Request, state: GalleryState) -> Response:
    """The lossless float32 tensor (safetensors), as a download."""
    v = viewer(request, state)
    proto, data = await v.prototype_tensor(request.path_params["job"], request.path_params["index"])
    return Response(
        data,
        media_type="application/octet-stream",
        headers={
            "content-disposition": f'attachment; filename="{proto.stem}.safetensors"',
            "cache-control": "private, max-age=86400",
        },
    )


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
    form = await posted_form(request, state)
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
    form = await posted_form(request, state)
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
    return RedirectResponse(f"/checks/{quote(names.CHECKS.id(started.name))}", 303)
