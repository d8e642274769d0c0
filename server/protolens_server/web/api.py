"""What the gallery reads, through the public gRPC API with the viewer's own key.

One ``AsyncClient`` (one channel) serves every viewer: each request gets a view of
it that sends that viewer's ``authorization`` metadata (``Viewer``), so the API
applies its own tenant scoping, quotas and errors; the gallery never reads Redis.
Finished prototypes never change, so they are kept in a small LRU partitioned by a
fingerprint of the viewer's key: one tenant's cached prototype is never served to
another (``PrototypeCache``).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from protolens import AsyncClient, names
from protolens.auth import auth_metadata
from protolens.types import Job, Model, Prototype, PrototypeSummary, Scores

MAX_JOBS_SCANNED = 1000  # jobs read (newest first) to build a version's grid or a search
JOB_PAGE = 100
CACHE_BYTES = 64 * 1024 * 1024
RECHECK_S = 10.0  # a cached prototype is served again without asking the API for this long
FETCH_CONCURRENCY = 8
_INTERVAL_SUFFIXES = (("_low", "_high"), ("_lo", "_hi"), ("_lower", "_upper"))


def split_ref(ref: str) -> tuple[str, str]:
    """``name@version`` -> (name, version); a plain name has version ""."""
    base, _, version = ref.partition("@")
    return base, version


@dataclass
class ModelGroup:
    """A model name and its versions, oldest first (a built-in has one, version "")."""

    name: str
    versions: list[Model] = field(default_factory=list)

    @property
    def latest(self) -> Model:
        return self.versions[-1]


def group_models(models: Iterable[Model]) -> list[ModelGroup]:
    groups: dict[str, ModelGroup] = {}
    for m in models:
        base, _ = split_ref(m.id)
        groups.setdefault(base, ModelGroup(base)).versions.append(m)
    for g in groups.values():
        g.versions.sort(key=lambda m: _version_key(split_ref(m.id)[1]))
    return [groups[k] for k in sorted(groups)]


def _version_key(v: str) -> tuple[tuple[int, int | str], ...]:
    import re

    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"[.\-_]", v))


def interval_of(values: Mapping[str, Any], key: str) -> tuple[float, float] | None:
    """The confidence interval stored for ``key`` in a scores dict, when the service gives
    one: ``<key>_interval``/``<key>_ci`` as [low, high] or {low, high}, ``<key>_low`` +
    ``<key>_high`` (or _lo/_hi, _lower/_upper), or ``intervals[key]``. None otherwise."""
    candidates: list[Any] = [values.get(f"{key}_interval"), values.get(f"{key}_ci")]
    nested = values.get("intervals")
    if isinstance(nested, Mapping):
        candidates.append(nested.get(key))
    for low, high in _INTERVAL_SUFFIXES:
        candidates.append((values.get(f"{key}{low}"), values.get(f"{key}{high}")))
    for c in candidates:
        pair = _pair(c)
        if pair is not None:
            return pair
    return None


def _pair(value: Any) -> tuple[float, float] | None:
    if isinstance(value, Mapping):
        value = (
            value.get("low", value.get("lo", value.get("lower"))),
            value.get("high", value.get("hi", value.get("upper"))),
        )
    if isinstance(value, list | tuple) and len(value) == 2:
        lo, hi = value
        if _number(lo) and _number(hi):
            return float(lo), float(hi)
    return None


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v == v


@dataclass
class Card:
    """One prototype in a grid: enough to draw it and link to its page."""

    job_id: str
    index: int
    model: str
    label: str  # class names joined by "+" (antitypes with a leading "anti ")
    classes: tuple[int, ...]
    probability: float
    has_scores: bool
    created: datetime | None
    path_similarity: float | None = None
    interval: tuple[float, float] | None = None
    score_reason: str = ""  # why a scored prototype has no path similarity (a reason code)
    small: bool = False  # a low-resolution model's image: enlarge without smoothing
    multi_label: bool = False  # probability is the label's own sigmoid (a multi-label model)
    caveats: tuple[str, ...] = ()  # codes of the reference set's caveats behind its scores

    @property
    def href(self) -> str:
        return f"/jobs/{self.job_id}/prototypes/{self.index}"


def card_of(job: Job, s: PrototypeSummary) -> Card:
    names = [n or str(c) for c, n in zip(s.target.classes, s.target.class_names, strict=False)]
    label = "+".join(names) or "+".join(map(str, s.target.classes))
    if s.target.kind == "antitype":
        label = f"anti {label}"
    return Card(
        job_id=job.id,
        index=s.index,
        model=job.model,
        label=label,
        classes=tuple(s.target.classes),
        probability=s.probability,
        has_scores=s.has_scores,
        created=job.create_time,
        multi_label=s.multi_label,
        caveats=tuple(sorted({c.code for c in s.caveats})),
    )


def matches(query: str, label: str, classes: Sequence[int]) -> bool:
    """A class search: a number is a class index; words must all appear in the name."""
    q = query.strip().lower()
    if not q:
        return True
    if q.isdigit():
        return int(q) in classes
    text = label.lower()
    return all(word in text for word in q.split())


class PrototypeCache:
    """LRU of finished prototypes keyed by (viewer fingerprint, prototype name).

    A hit is served only while its owner's key was accepted by the API within
    ``recheck_s`` (``accepted``/``fresh``): a revoked key stops seeing its cached
    prototypes within that time too.
    """

    def __init__(self, budget_bytes: int = CACHE_BYTES, recheck_s: float = RECHECK_S) -> None:
        self.budget_bytes = budget_bytes
        self.recheck_s = recheck_s
        self._items: OrderedDict[tuple[str, str], Prototype] = OrderedDict()
        self._bytes = 0
        self._accepted: dict[str, float] = {}

    def accepted(self, owner: str) -> None:
        if len(self._accepted) > 10_000:
            self._accepted.clear()
        self._accepted[owner] = time.monotonic()

    def fresh(self, owner: str) -> bool:
        return time.monotonic() - self._accepted.get(owner, -1e9) < self.recheck_s

    def get(self, owner: str, name: str) -> Prototype | None:
        item = self._items.get((owner, name))
        if item is not None:
            self._items.move_to_end((owner, name))
        return item

    def put(self, owner: str, prototype: Prototype) -> None:
        key = (owner, prototype.name)
        if key in self._items:
            return
        self._items[key] = prototype
        self._bytes += len(prototype.png)
        while self._bytes > self.budget_bytes and len(self._items) > 1:
            _, old = self._items.popitem(last=False)
            self._bytes -= len(old.png)


class Viewer:
    """One viewer's access to the API: their key, their tenant, their cache partition."""

    def __init__(self, client: AsyncClient, owner: str, cache: PrototypeCache) -> None:
        self.client = client
        self.owner = owner
        self.cache = cache

    @classmethod
    def of(cls, client: AsyncClient, api_key: str, owner: str, cache: PrototypeCache) -> Viewer:
        return cls(client.with_metadata(auth_metadata(api_key)), owner, cache)

    async def models(self) -> list[Model]:
        return await self.client.list_models()

    async def jobs(self, limit: int = MAX_JOBS_SCANNED) -> list[Job]:
        """The viewer's jobs, newest first, at most ``limit``."""
        out: list[Job] = []
        token = ""
        while len(out) < limit:
            page, token = await self.client.list_jobs(
                page_size=min(JOB_PAGE, limit - len(out)), page_token=token
            )
            out += page
            if not token:
                break
        return out

    async def prototype(self, job_id: str, index: int) -> Prototype:
        name = names.prototype_name(job_id, index)
        hit = self.cache.get(self.owner, name)
        if hit is not None:
            if not self.cache.fresh(self.owner):
                await self.client.get_job(job_id)  # the key still works, the job is still theirs
                self.cache.accepted(self.owner)
            return hit
        prototype = await self.client.get_prototype(job_id, index)
        self.cache.accepted(self.owner)
        self.cache.put(self.owner, prototype)
        return prototype

    async def prototype_tensor(self, job_id: str, index: int) -> tuple[Prototype, bytes]:
        """The prototype and its float32 safetensors bytes (fetched each time, not cached:
        a download, about 4 bytes per channel and pixel)."""
        prototype = await self.client.get_prototype(job_id, index, include_float=True)
        self.cache.accepted(self.owner)
        return prototype, prototype.float_tensor

    async def add_scores(self, cards: Sequence[Card]) -> None:
        """Fill in path similarity (and its interval, when given) of the scored cards."""
        gate = asyncio.Semaphore(FETCH_CONCURRENCY)

        async def one(card: Card) -> None:
            async with gate:
                p = await self.prototype(card.job_id, card.index)
            if p.scores is not None:
                card.path_similarity, card.interval, card.score_reason = headline(p.scores)

        await asyncio.gather(*(one(c) for c in cards if c.has_scores))


def _finite(v: Any) -> float | None:
    return float(v) if _number(v) else None


def headline(scores: Scores) -> tuple[float | None, tuple[float, float] | None, str]:
    """Path similarity, its interval and, when it is undetermined, the reason code.

    From the typed ``Scores.path_similarity`` estimate; a service that predates it (no
    value and no reason there) is read from the scores dict instead.
    """
    e = scores.path_similarity
    value = _finite(e.value)
    interval = (e.low, e.high) if _number(e.low) and _number(e.high) else None
    if value is None and not e.reason:
        value = _finite(scores.summary.get("path_similarity"))
        interval = interval_of(scores.details, "path_similarity")
    return value, interval, e.reason


def version_cards(jobs: Iterable[Job], model: Model) -> list[Card]:
    """The newest prototype of each target made with exactly this model version (same
    registered name and weights digest), newest first."""
    seen: set[tuple[tuple[int, ...], str]] = set()
    cards: list[Card] = []
    for job in jobs:
        if not job.succeeded or job.model != model.id or job.model_digest != model.digest:
            continue
        for s in job.prototypes:
            key = (tuple(s.target.classes), s.target.kind)
            if s.target_index == 0 and key not in seen:
                seen.add(key)
                cards.append(card_of(job, s))
    return cards


def recent_by_model(jobs: Iterable[Job], per_model: int) -> dict[str, list[Card]]:
    """The newest prototypes (first of each target) of each model name, all versions."""
    out: dict[str, list[Card]] = {}
    for job in jobs:
        if not job.succeeded:
            continue
        shown = out.setdefault(split_ref(job.model)[0], [])
        for s in job.prototypes:
            if s.target_index == 0 and len(shown) < per_model:
                shown.append(card_of(job, s))
    return out


def search_cards(jobs: Iterable[Job], query: str) -> list[Card]:
    """Prototypes of every model whose class names match ``query`` (newest per target)."""
    seen: set[tuple[str, tuple[int, ...], str]] = set()
    cards: list[Card] = []
    for job in jobs:
        if not job.succeeded:
            continue
        for s in job.prototypes:
            key = (f"{job.model}\0{job.model_digest}", tuple(s.target.classes), s.target.kind)
            card = card_of(job, s)
            if s.target_index == 0 and key not in seen and matches(query, card.label, card.classes):
                seen.add(key)
                cards.append(card)
    return cards
