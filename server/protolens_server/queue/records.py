"""Job records as stored in Redis and passed between the API and the workers.

The API (``api/``) turns protobuf requests into ``JobSpec`` and ``JobRecord``
back into protobuf; the queue (``queue/``) stores them; workers run them. These
plain dataclasses are the only shape both sides share, so neither imports the
other. Serialised as JSON (``to_json``/``from_json``).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from protolens_server.engine import GenerationConfig, IsolationConfig, PrototypeFacts, Target
from protolens_server.errors import GENERATION_FAILED, ErrorRecord

JobConfig = GenerationConfig | IsolationConfig


def job_config(mode: str, d: Mapping[str, Any], *, stored: bool = False) -> JobConfig:
    """The engine options of a job of ``mode`` from their dict form.

    A request's dict must name only known options (an unknown key is an
    ``InvalidArgument``); a ``stored`` record's keys that this engine no longer knows
    are dropped, so a job written by an older release stays readable.
    """
    # typed: 1, 1.0 and True are equal keys, but not the same options
    items = tuple((k, type(v), v) for k, v in d.items())
    try:
        return _job_config(mode, items, stored)
    except TypeError:  # an unhashable value: parse it uncached (its checks refuse it)
        return _job_config.__wrapped__(mode, items, stored)


@functools.lru_cache(maxsize=256)
def _job_config(mode: str, items: tuple[tuple[str, type, Any], ...], stored: bool) -> JobConfig:
    """``job_config``, once per distinct options: a worker parses every job it reads,
    and the jobs of a batch share their options (configs are frozen, so one instance
    serves them all; a refused dict raises again, exceptions are not cached)."""
    kind: type[GenerationConfig] | type[IsolationConfig] = (
        IsolationConfig if mode == "isolation" else GenerationConfig
    )
    d = {k: v for k, _, v in items}
    if stored:
        known = {f.name for f in dataclasses.fields(kind)}
        d = {k: v for k, v in d.items() if k in known}
    return kind.from_dict(d)


class JobState(enum.StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def finished(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class EndMode(enum.StrEnum):
    """How a worker gives a job up (``QueueConsumer.end``)."""

    RETRY = "retry"  # back to the tail of its stream (FAILED + dead letter after max_attempts)
    FAIL = "fail"  # FAILED + dead letter now (a caller's error: retrying cannot help)
    CANCEL = "cancel"  # CANCELLED at the step it reached
    HANDBACK = "handback"  # shutting down: another worker takes it at once


class EndOutcome(enum.StrEnum):
    """What ``QueueConsumer.end`` did."""

    RETRY = "retry"
    DEAD = "dead"
    CANCELLED = "cancelled"
    HANDBACK = "handback"
    LOST = "lost"  # this delivery no longer owned the job: nothing written


class JobPhase(enum.StrEnum):
    """What a running job's worker is doing (``Progress.phase`` in the API)."""

    NONE = ""
    LOADING_MODEL = "LOADING_MODEL"
    PREPARING = "PREPARING"
    OPTIMISING = "OPTIMISING"
    SCORING = "SCORING"
    STORING = "STORING"


@dataclass(frozen=True)
class JobSpec:
    """Everything that determines a job's output, plus who asked and how urgently.

    ``cache_key()`` hashes only the output-determining fields (see queue/cache.py).
    """

    model: str  # registered model name
    model_digest: str
    targets: tuple[Target, ...]
    # the engine's options: a GenerationConfig, or an IsolationConfig for an isolation
    # (a dict given here is read as one, as a request's options would be)
    config: JobConfig
    seed: int
    reference_set: str = ""  # registered reference-set name, "" for none
    reference_digest: str = ""
    engine_version: str = ""
    priority: int = 1  # 0 = high, 1 = normal, 2 = low
    tenant: str = "default"
    request_id: str = ""
    trace_id: str = ""
    # "prototype", or "isolation" (CreateIsolationJob: one target class, ``config`` an
    # engine IsolationConfig, ``image_key`` the blob key of the input PNG at the model's
    # size: the bytes live in the blob store, not in Redis)
    mode: str = "prototype"
    image: str = ""  # records written before the blob store: the input PNG, base64
    image_key: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.config, Mapping):
            object.__setattr__(self, "config", job_config(self.mode, self.config))

    @property
    def steps(self) -> int:
        """The most steps a prototype of this job takes: ``config.steps`` when fixed,
        else ``config.max_steps`` (it stops earlier when it converges)."""
        return self.config.step_budget

    @property
    def has_opacity(self) -> bool:
        """Whether the stored images' last channel is an opacity: an alpha prototype's, or
        an isolation's (the input image with the mask as its alpha)."""
        return isinstance(self.config, IsolationConfig) or self.config.alpha

    @property
    def prototypes_per_target(self) -> int:
        return self.config.prototypes if isinstance(self.config, GenerationConfig) else 1

    @property
    def images(self) -> int:
        """Prototypes the job makes: targets x prototypes per target."""
        return len(self.targets) * self.prototypes_per_target

    def same_request(self, other: JobSpec) -> bool:
        """Whether ``other`` asks for what this spec asks for, as its caller wrote it: the
        model's name, targets, config, seed, reference set, mode and input image. Not
        who asked, how urgently, nor what the server resolved them to (model and reference
        digests, engine version): a retry of one request after a redeploy is the same
        request. Used to refuse a ``request_id`` reused for a different request."""
        return (
            self.model == other.model
            and self.targets == other.targets
            and self.config == other.config
            and self.seed == other.seed
            and self.reference_set == other.reference_set
            and self.mode == other.mode
            and (self.image_key or self.image) == (other.image_key or other.image)
        )


@dataclass(kw_only=True)
class StoredPrototype(PrototypeFacts):
    """One finished prototype as stored: its facts (``engine.PrototypeFacts``) and where
    its bytes are.

    Its PNG and its scores live in the blob store (blobs.py) under ``png_key`` and
    ``scores_key``; Redis holds this record without the scores (``scores`` is None there,
    and filled by ``JobQueue.load_scores`` where they are needed). Records stored before
    the blob store carry their ``scores`` inline and no ``scores_key``. The JSON form is
    flat: the facts' fields beside these.
    """

    scores: dict[str, Any] | None = None  # engine scores as a JSON-able dict
    # an isolation's probability (whole image), probability_kept, probability_removed,
    # mask_mean; None for a prototype
    isolation: dict[str, float] | None = None
    png_key: str = ""  # blob key of the PNG
    scores_key: str = ""  # blob key of the scores JSON ("" = no scores)
    # blob key of the lossless float32 (C, H, W) tensor, a safetensors file (imageio.
    # encode_tensor); "" for results stored before tensors were (their PNG is all there is)
    tensor_key: str = ""
    # the reference set's caveats behind its scores (``{code, message, classes, files}``,
    # engine/_caveats.py), held here too so that a job lists them without its scores' blobs;
    # [] without scores, when none were found, or in a record stored before caveats
    caveats: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def of(cls, prototype: PrototypeFacts, **stored: Any) -> StoredPrototype:
        """The stored form of ``prototype``'s facts, with ``stored``'s own fields."""
        return cls(**vars(prototype.facts()), **stored)

    @property
    def has_scores(self) -> bool:
        return bool(self.scores or self.scores_key)


@dataclass
class JobRecord:
    job_id: str
    spec: JobSpec
    state: JobState = JobState.QUEUED
    created_at: float = 0.0
    started_at: float = 0.0
    finished_at: float = 0.0
    step: int = 0
    total_steps: int = 0
    best_probability: float = 0.0
    phase: str = ""  # a JobPhase value, written with the progress
    phase_message: str = ""
    progress_at: float = 0.0  # when the worker last wrote progress (unix seconds)
    attempts: int = 0
    # A failure as data (errors.ErrorRecord): message, the domain error's reason ("" =
    # GENERATION_FAILED) and its metadata; the API maps the reason to a status.
    error: str = ""
    error_reason: str = ""
    error_metadata: dict[str, str] = field(default_factory=dict)
    cache_hit: bool = False
    cache_key: str = ""
    worker: str = ""
    prototypes: list[StoredPrototype] = field(default_factory=list)

    @property
    def failure(self) -> ErrorRecord | None:
        """The recorded failure, if any (a cancelled job without an error has none)."""
        if not self.error:
            return None
        return ErrorRecord(self.error_reason or GENERATION_FAILED, self.error, self.error_metadata)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> JobRecord:
        return cls.from_dict(json.loads(raw))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> JobRecord:
        """A record from its JSON-decoded dict (``to_json``'s shape; taken over, not
        copied). ``d["spec"]`` may be a ``JobSpec`` already: the worker parsed it when it
        peeked at the job, and a claim's record reuses it."""
        spec = d["spec"]
        if not isinstance(spec, JobSpec):
            spec["targets"] = tuple(Target.from_dict(t) for t in spec["targets"])
            mode = spec.get("mode", "prototype")
            spec["config"] = job_config(mode, spec["config"], stored=True)
            d["spec"] = JobSpec(**spec)
        d["state"] = JobState(d["state"])
        d["prototypes"] = [
            StoredPrototype(
                **{
                    **p,
                    "target": Target.from_dict(p["target"]),
                    "top5": [tuple(t) for t in p["top5"]],
                }
            )
            for p in d.get("prototypes", [])
        ]
        return cls(**d)


@dataclass(frozen=True)
class JobEvent:
    """One progress event on a job's stream (what WatchJob relays)."""

    job_id: str
    state: JobState
    step: int = 0
    total_steps: int = 0
    best_probability: float = 0.0
    message: str = ""
    phase: str = ""  # a JobPhase value
    phase_message: str = ""
    time: float = 0.0  # when the event was written (unix seconds; 0 when unknown)
