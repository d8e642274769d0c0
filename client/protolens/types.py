"""The SDK's data types: plain dataclasses, never protobuf messages.

``Job`` is the job resource (``jobs/{job}``); ``Prototype`` a finished image with
its scores and provenance; ``Model`` a model the service serves; ``WatchEvent``
one progress event; ``Check`` a model-version check (``checks/{check}``) and
``CheckReport`` its report; ``ApiKey`` an API key (``apiKeys/{key_id}``, admin calls).
Job states are the strings QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from protolens import names
from protolens.files import (
    caveat_lines,
    off_target,
    off_target_warning,
    prototype_record,
    prototype_stem,
)

FINISHED_STATES = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})


@dataclass(frozen=True)
class UnitTerm:
    """One weighted term of a unit target: what a layer's activation should do.

    ``unit`` is "channel" (the channel's mean over positions), "neuron" (channel
    ``index`` at ``position`` = (y, x), or (token,); empty: the centre) or
    "direction" (the spatial mean projected on ``direction``, one value per channel).
    ``layer`` is a module path as ``Client.layers(model)`` lists it, or "logits" (a
    channel is then a class). A negative ``weight`` minimises the term.
    """

    layer: str
    unit: str = "channel"
    index: int = 0
    position: tuple[int, ...] = ()
    direction: tuple[float, ...] = ()
    weight: float = 1.0

    def label(self) -> str:
        """The CLI's syntax: ``layer:features.3:channel:12``, ``0.5*layer:...``."""
        if self.unit == "direction":
            what = "direction:" + ",".join(f"{v:g}" for v in self.direction)
        elif self.unit == "neuron" and self.position:
            what = f"neuron:{self.index}@" + ",".join(str(p) for p in self.position)
        else:
            what = f"{self.unit}:{self.index}"
        weight = "" if self.weight == 1 else ("-" if self.weight == -1 else f"{self.weight:g}*")
        return f"{weight}layer:{self.layer}:{what}"


@dataclass(frozen=True)
class Target:
    """What to generate: class indices or names, and a kind.

    ``kind`` is "prototype" (one class), "antitype" (one class, minimised),
    "hybrid" (two or more classes) or "unit" (``units``: a weighted sum of layer
    channels, neurons or directions, no classes); "" lets the service pick.
    ``protolens.unit_target("layer:features.3:channel:12")`` reads the CLI's syntax.
    """

    classes: tuple[int | str, ...]
    kind: str = ""
    units: tuple[UnitTerm, ...] = ()

    @classmethod
    def of(cls, value: int | str | Target | tuple[int | str, ...] | list[int | str]) -> Target:
        if isinstance(value, Target):
            return value
        if isinstance(value, int | str):
            return cls((value,))
        return cls(tuple(value))

    @classmethod
    def unit(cls, *terms: UnitTerm) -> Target:
        """A unit target: maximise the weighted sum of ``terms``."""
        return cls((), "unit", tuple(terms))


@dataclass(frozen=True)
class Layer:
    """A model layer that unit targets may name, and its output shape for one image."""

    name: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ResolvedTarget:
    classes: tuple[int, ...]
    class_names: tuple[str, ...]
    kind: str
    units: tuple[UnitTerm, ...] = ()

    def label(self) -> str:
        if self.units:
            return "+".join(u.label() for u in self.units).replace("+-", "-")
        names = [n or str(c) for c, n in zip(self.classes, self.class_names, strict=False)]
        return ("-" if self.kind == "antitype" else "") + "+".join(names or map(str, self.classes))


@dataclass(frozen=True)
class ClassProbability:
    index: int
    name: str
    probability: float


@dataclass(frozen=True)
class Progress:
    """How far a job has got. ``phase`` says what its worker is doing while it runs:
    LOADING_MODEL, PREPARING, OPTIMISING (``step`` counts), SCORING or STORING ("" when
    not running); ``phase_message`` says it in words; ``update_time`` is when the worker
    reported it (None before its first report)."""

    step: int = 0
    total_steps: int = 0
    best_probability: float = 0.0
    fraction: float = 0.0
    phase: str = ""
    phase_message: str = ""
    update_time: datetime | None = None


@dataclass(frozen=True)
class JobError:
    """Why a job failed (shaped like google.rpc.Status with its ErrorInfo)."""

    code: str
    message: str
    reason: str = ""
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Caveat:
    """Why the reference set cannot fully support the scores of some class: usable, but
    weak for it (docs/scores.md, "Caveats"). ``code``: GREYSCALE_CLASS, DUPLICATE_IMAGES
    or NEAR_DUPLICATE_IMAGES (more may come: show any); ``message`` names the class and
    files and says what to do; ``classes``: the reference classes it concerns (empty: all);
    ``files``: relative to the reference set's folder. Words beside the numbers: no number
    changes."""

    code: str
    message: str
    classes: tuple[int, ...] = ()
    files: tuple[str, ...] = ()

    def line(self) -> str:
        """``CODE: message``, as the CLIs print it."""
        return caveat_lines([{"code": self.code, "message": self.message}])[0]


@dataclass(frozen=True)
class PrototypeSummary:
    name: str
    index: int
    target: ResolvedTarget
    target_index: int
    probability: float
    logit: float
    top5: tuple[ClassProbability, ...]
    steps: int
    seed: int
    has_scores: bool
    lr: float = 0.0  # the learning rate used (found for the model when config.lr was 0)
    stop_reason: str = ""  # converged / budget / steps
    # a multi-label model: probability and top5 are each label's own sigmoid (they need
    # not sum to 1)
    multi_label: bool = False
    # the reference set's caveats behind its scores (those of Prototype.scores.caveats)
    caveats: tuple[Caveat, ...] = ()

    @property
    def off_target(self) -> bool:
        """The model does not see its target: it ranks another class first, or (multi-label)
        gives the label a probability below 0.5; this image is no prototype of its target
        (``protolens.files.off_target``)."""
        return off_target(
            kind=self.target.kind,
            classes=self.target.classes,
            top_index=self.top5[0].index if self.top5 else None,
            stop_reason=self.stop_reason,
            multi_label=self.multi_label,
            probability=self.probability,
        )


@dataclass(frozen=True)
class Isolation:
    """A feature isolation job's settings and, once it succeeded, what it found: the class
    probability of the whole image, of the part the mask keeps and with that part removed,
    and the fraction of the image kept. The mask is the alpha channel of the job's one
    prototype image (``get_prototype(job, 0)``: RGBA)."""

    config: dict[str, Any] = field(default_factory=dict)
    probability: float = 0.0
    probability_kept: float = 0.0
    probability_removed: float = 0.0
    mask_mean: float = 0.0


@dataclass
class Job:
    """A prototype generation job. ``result()`` waits for it: ``job.result()`` from a
    ``Client``, ``await job.result()`` from an ``AsyncClient``."""

    name: str
    state: str
    model: str
    model_digest: str = ""
    targets: tuple[ResolvedTarget, ...] = ()
    prototypes_per_target: int = 1
    config: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    reference_set: str = ""
    priority: str = "normal"
    request_id: str = ""
    progress: Progress = field(default_factory=Progress)
    create_time: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    error: JobError | None = None
    cache_hit: bool = False
    attempts: int = 0
    prototypes: tuple[PrototypeSummary, ...] = ()
    outcome: str = ""  # set on the job CreatePrototypeJob returns: queued|cache_hit|dedup_join|...
    isolation: Isolation | None = None  # set on a feature isolation job (CreateIsolationJob)
    _waiter: Callable[..., Any] | None = field(default=None, repr=False, compare=False)

    @property
    def id(self) -> str:
        return names.JOBS.id(self.name)

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES

    @property
    def succeeded(self) -> bool:
        return self.state == "SUCCEEDED"

    @property
    def warnings(self) -> list[str]:
        """One line per prototype whose model does not see its target: ranks another class
        first, or for a multi-label model gives the label p < 0.5 (a succeeded job can
        still be meaningless: a model registered with the wrong input spec gives p =
        0.000); then one line per distinct caveat of the reference set behind its scores
        (``CODE: message``: a grey class among colour ones, duplicate images; the scores
        partly measure the set's weakness, docs/scores.md); empty when every prototype
        reached its class on a set with no caveat."""
        caveats = caveat_lines(
            {"code": c.code, "message": c.message} for s in self.prototypes for c in s.caveats
        )
        return [
            off_target_warning(
                label=s.name,
                top_name=s.top5[0].name if s.top5 else "",
                top_probability=s.top5[0].probability if s.top5 else 0.0,
                probability=s.probability,
                steps=s.steps,
                spec_hint="the model's sidecar or registration: size, mean, std",
                multi_label=s.multi_label,
            )
            for s in self.prototypes
            if s.off_target
        ] + caveats

    def result(self, timeout: float | None = None) -> Any:
        """The finished job, or ``JobFailedError`` if it failed or was cancelled.

        From a ``Client`` this blocks and returns the ``Job``; from an ``AsyncClient`` it
        returns an awaitable: ``job = await job.result(timeout=600)``.
        """
        if self._waiter is None:
            raise TypeError("this Job is not bound to a client; use client.wait(job_id)")
        return self._waiter(self.id, timeout=timeout)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(replace(self, _waiter=None))  # the waiter holds a channel: never copied
        d.pop("_waiter", None)
        d["id"] = self.id
        d["warnings"] = self.warnings
        for key in ("create_time", "start_time", "end_time"):
            d[key] = d[key].isoformat() if d[key] else None
        return d


@dataclass(frozen=True)
class Estimate:
    """A score with its bootstrap interval; ``value`` is None (and ``reason`` says why) when
    the reference set cannot determine it."""

    value: float | None = None
    low: float | None = None
    high: float | None = None
    reason: str = ""


@dataclass(frozen=True)
class Scores:
    """Path-similarity scores of the stored PNG: the headline and per-layer estimates with
    intervals, per-layer series, summaries, robustness, and the raw dict."""

    layer_names: tuple[str, ...] = ()
    per_layer: dict[str, list[float]] = field(default_factory=dict)
    summary: dict[str, float] = field(default_factory=dict)
    robustness: dict[str, float] = field(default_factory=dict)
    reference_set: str = ""
    reference_digest: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    path_similarity: Estimate = field(default_factory=Estimate)  # median over determinate layers
    determinate_layers: int = 0  # layers the headline rests on
    layers: tuple[Estimate, ...] = ()  # normalised Spearman per layer, with intervals
    confidence: float = 0.0  # of every interval
    resamples: int = 0  # bootstrap resamples behind them
    # what makes the reference set weak for this prototype's classes (docs/scores.md)
    caveats: tuple[Caveat, ...] = ()

    def summary_text(self) -> str:
        """``0.42 [0.31, 0.55] (12/18 layers)``, or ``n/a (REASON, 0/18 layers)``: the
        headline as ``protolens generate --reference`` prints it."""
        s, total = self.path_similarity, len(self.layer_names)
        if s.value is None:
            return f"n/a ({s.reason or 'not scored'}, 0/{total} layers)"
        interval = "" if s.low is None or s.high is None else f" [{s.low:.2f}, {s.high:.2f}]"
        return f"{s.value:.2f}{interval} ({self.determinate_layers}/{total} layers)"


@dataclass(frozen=True)
class Provenance:
    model: str
    model_digest: str
    config: dict[str, Any]
    seed: int
    engine_version: str
    reference_set: str = ""
    reference_digest: str = ""
    cache_key: str = ""


@dataclass(frozen=True)
class Prototype:
    """A finished prototype: PNG bytes, scores (None without a reference set), provenance,
    and, when asked for (``get_prototype(..., include_float=True)``), ``float_tensor``:
    the lossless float32 (C, H, W) image as safetensors bytes (docs/prototype-files.md)."""

    name: str
    summary: PrototypeSummary
    png: bytes
    scores: Scores | None
    provenance: Provenance
    float_tensor: bytes = b""

    @property
    def stem(self) -> str:
        """The file name it is saved under, without suffix (``281-tabby_cat-0``)."""
        t = self.summary.target
        units = t.label() if t.units else ""
        return prototype_stem(t.classes, t.class_names, t.kind, self.summary.target_index, units)

    def record(self, file: str = "", float_file: str = "") -> dict[str, Any]:
        """Its JSON record: the same keys ``protolens generate`` writes (``protolens.files``)."""
        s, t = self.summary, self.summary.target
        return prototype_record(
            name=self.name,
            file=file,
            float_file=float_file,
            classes=t.classes,
            class_names=t.class_names,
            kind=t.kind,
            target_index=s.target_index,
            probability=s.probability,
            logit=s.logit,
            top5=[(c.index, c.name, c.probability) for c in s.top5],
            steps=s.steps,
            seed=s.seed,
            lr=s.lr,
            stop_reason=s.stop_reason,
            multi_label=s.multi_label,
            scores=self.scores.details if self.scores else None,
            provenance=asdict(self.provenance),
        )

    def save(self, directory: str | Path, stem: str | None = None) -> tuple[Path, Path]:
        """Write ``<stem>.png`` and ``<stem>.json`` (its record), and ``<stem>.safetensors``
        when it holds its float tensor; ``stem`` defaults to ``self.stem``."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        stem = "".join(c if c.isalnum() or c in "+-_." else "_" for c in (stem or self.stem))
        png_path, json_path = out / f"{stem}.png", out / f"{stem}.json"
        png_path.write_bytes(self.png)
        float_file = ""
        if self.float_tensor:
            float_file = f"{stem}.safetensors"
            (out / float_file).write_bytes(self.float_tensor)
        record = self.record(file=png_path.name, float_file=float_file)
        json_path.write_text(json.dumps(record, indent=2) + "\n")
        return png_path, json_path


@dataclass(frozen=True)
class InputSpec:
    channels: int
    height: int
    width: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass(frozen=True)
class Model:
    name: str
    source: str
    input_spec: InputSpec
    num_classes: int
    class_names: tuple[str, ...]
    digest: str
    format: str = ""
    description: str = ""
    # READY, UNUSABLE (the file is broken or refused as unsafe: unusable_reason says why)
    # or INSPECTING (new or changed, retry shortly).
    state: str = "READY"
    unusable_reason: str = ""
    layers: tuple[Layer, ...] = ()  # from get_model only (list_models leaves it empty)
    multi_label: bool = False  # one independent sigmoid per class (docs/models.md)

    @property
    def id(self) -> str:
        return names.MODELS.id(self.name)

    @property
    def usable(self) -> bool:
        return self.state == "READY"


@dataclass(frozen=True)
class WatchEvent:
    """One progress event; pass ``cursor`` to ``watch(..., cursor=)`` to resume after it."""

    state: str
    progress: Progress
    message: str
    cursor: str

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES


@dataclass(frozen=True)
class ApiKey:
    """An API key as the service stores it: never its secret, except ``secret_key`` on
    the key ``create_api_key`` returns (shown that once; send it as the API key)."""

    name: str  # apiKeys/{key_id}
    key_id: str  # the middle of pl_{key_id}_{secret}
    tenant: str
    role: str  # "tenant" or "admin"
    display_name: str = ""
    create_time: datetime | None = None
    revoke_time: datetime | None = None  # None while the key is valid
    secret_key: str = ""

    @property
    def revoked(self) -> bool:
        return self.revoke_time is not None


@dataclass(frozen=True)
class Check:
    """A check as the service last reported it."""

    name: str
    state: str  # RUNNING | SUCCEEDED | FAILED | CANCELLED
    model: str
    baseline: str
    progress: float
    message: str
    passed: bool
    failed_rules: tuple[str, ...] = ()
    flagged_classes: tuple[str, ...] = ()
    jobs: int = 0
    cache_hits: int = 0
    error: str = ""
    error_reason: str = ""

    @property
    def finished(self) -> bool:
        return self.state != "RUNNING"


@dataclass(frozen=True)
class CheckReport:
    html: str
    json: str
    extras: dict[str, Any] = field(default_factory=dict)
