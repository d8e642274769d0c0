"""Queue records -> protobuf messages (the API is not the storage schema: AIP-121)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from google.protobuf import struct_pb2, timestamp_pb2
from protolens import names
from protolens.v1 import (
    common_pb2,
    isolation_pb2,
    job_pb2,
    model_pb2,
    prototype_pb2,
    service_pb2,
    units_pb2,
)

from protolens_server.api.errors import stored_status
from protolens_server.engine import Target
from protolens_server.queue.records import (
    JobEvent,
    JobPhase,
    JobRecord,
    JobState,
    StoredPrototype,
)

if TYPE_CHECKING:
    from protolens_server.models.info import ModelInfo

KIND_TO_PB = {
    "prototype": common_pb2.TARGET_KIND_PROTOTYPE,
    "antitype": common_pb2.TARGET_KIND_ANTITYPE,
    "hybrid": common_pb2.TARGET_KIND_HYBRID,
    "unit": common_pb2.TARGET_KIND_UNIT,
}
STATE_TO_PB = {
    JobState.QUEUED: job_pb2.JOB_STATE_QUEUED,
    JobState.RUNNING: job_pb2.JOB_STATE_RUNNING,
    JobState.SUCCEEDED: job_pb2.JOB_STATE_SUCCEEDED,
    JobState.FAILED: job_pb2.JOB_STATE_FAILED,
    JobState.CANCELLED: job_pb2.JOB_STATE_CANCELLED,
}
OUTCOME_TO_PB = {
    "queued": service_pb2.CREATE_OUTCOME_QUEUED,
    "cache_hit": service_pb2.CREATE_OUTCOME_CACHE_HIT,
    "dedup_join": service_pb2.CREATE_OUTCOME_DEDUP_JOIN,
    "idempotent_replay": service_pb2.CREATE_OUTCOME_IDEMPOTENT_REPLAY,
}
_CONFIG_FIELDS = {f.name for f in common_pb2.GenerationConfig.DESCRIPTOR.fields}
_CANCELLED_CODE = 1


def timestamp_pb(unix: float) -> timestamp_pb2.Timestamp | None:
    """A protobuf Timestamp of a unix time; None for 0 (not happened yet)."""
    if not unix:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(unix * 1e9))
    return ts


def config_to_pb(config: Mapping[str, Any]) -> common_pb2.GenerationConfig:
    return common_pb2.GenerationConfig(**{k: v for k, v in config.items() if k in _CONFIG_FIELDS})


def target_to_pb(target: Target, class_names: Sequence[str]) -> common_pb2.ResolvedTarget:
    return common_pb2.ResolvedTarget(
        classes=list(target.classes),
        class_names=[class_names[c] if 0 <= c < len(class_names) else "" for c in target.classes],
        kind=KIND_TO_PB.get(target.kind, common_pb2.TARGET_KIND_UNSPECIFIED),
        units=[
            units_pb2.UnitTerm(
                layer=u.layer,
                unit=UNIT_TO_PB[u.unit],
                index=u.index,
                position=list(u.position),
                direction=list(u.direction),
                weight=u.weight,
            )
            for u in target.units
        ],
    )


UNIT_TO_PB = {
    "channel": units_pb2.UNIT_KIND_CHANNEL,
    "neuron": units_pb2.UNIT_KIND_NEURON,
    "direction": units_pb2.UNIT_KIND_DIRECTION,
}


def layers_to_pb(info: ModelInfo) -> list[units_pb2.Layer]:
    return [units_pb2.Layer(name=n, shape=list(s)) for n, s in getattr(info, "layers", ())]


PHASE_TO_PB = {
    JobPhase.LOADING_MODEL: job_pb2.JOB_PHASE_LOADING_MODEL,
    JobPhase.PREPARING: job_pb2.JOB_PHASE_PREPARING,
    JobPhase.OPTIMISING: job_pb2.JOB_PHASE_OPTIMISING,
    JobPhase.SCORING: job_pb2.JOB_PHASE_SCORING,
    JobPhase.STORING: job_pb2.JOB_PHASE_STORING,
}


def progress_to_pb(
    step: int,
    total: int,
    best: float,
    *,
    state: JobState = JobState.RUNNING,
    phase: str = "",
    phase_message: str = "",
    updated: float = 0.0,
) -> job_pb2.Progress:
    """Progress; the worker's phase only while the job runs (a finished job does nothing)."""
    fraction = min(1.0, step / total) if total > 0 else 0.0
    msg = job_pb2.Progress(step=step, total_steps=total, best_probability=best, fraction=fraction)
    if state == JobState.RUNNING and phase in PHASE_TO_PB:
        msg.phase, msg.phase_message = PHASE_TO_PB[JobPhase(phase)], phase_message
    ts = timestamp_pb(updated)
    if ts is not None:
        msg.update_time.CopyFrom(ts)
    return msg


def error_to_pb(record: JobRecord) -> common_pb2.Status | None:
    """The job's recorded failure (reason, message, metadata: data in the queue) as a
    Status: the reason's code from the error table (api/errors.py), UNKNOWN for
    GENERATION_FAILED, CANCELLED for a cancelled job."""
    failure = record.failure
    if failure is None:
        if record.state == JobState.CANCELLED:
            return common_pb2.Status(code=_CANCELLED_CODE, message="cancelled", reason="CANCELLED")
        return None
    status = stored_status(failure)
    code = _CANCELLED_CODE if record.state == JobState.CANCELLED else status.code
    metadata = {**status.metadata, "attempts": str(record.attempts)}
    return common_pb2.Status(
        code=code, message=status.message, reason=status.reason, metadata=metadata
    )


def caveats_to_pb(caveats: object) -> list[common_pb2.Caveat]:
    """Stored caveats (``[{code, message, classes, files}]``) -> Caveat messages; anything
    else (a record stored before caveats) -> none."""
    if not isinstance(caveats, list | tuple):
        return []
    return [
        common_pb2.Caveat(
            code=str(c.get("code", "")),
            message=str(c.get("message", "")),
            classes=[int(k) for k in c.get("classes") or ()],
            files=[str(f) for f in c.get("files") or ()],
        )
        for c in caveats
        if isinstance(c, Mapping)
    ]


def summary_to_pb(
    job_id: str, index: int, p: StoredPrototype, class_names: Sequence[str]
) -> job_pb2.PrototypeSummary:
    top5 = [
        common_pb2.ClassProbability(
            index=int(c), name=class_names[c] if 0 <= c < len(class_names) else "", probability=pr
        )
        for c, pr in p.top5
    ]
    return job_pb2.PrototypeSummary(
        name=names.prototype_name(job_id, index),
        index=index,
        target=target_to_pb(p.target, class_names),
        target_index=p.index,
        probability=p.probability,
        logit=p.logit,
        top5=top5,
        steps=p.steps,
        seed=p.seed,
        has_scores=p.has_scores,
        lr=p.lr,
        stop_reason=p.stop_reason,
        multi_label=p.multi_label,
        caveats=caveats_to_pb(p.caveats),
    )


def job_to_pb(record: JobRecord, class_names: Sequence[str] = ()) -> job_pb2.Job:
    spec = record.spec
    job = job_pb2.Job(
        name=names.JOBS.name(record.job_id),
        state=STATE_TO_PB[record.state],
        model=spec.model,
        model_digest=spec.model_digest,
        targets=[target_to_pb(t, class_names) for t in spec.targets],
        prototypes_per_target=spec.prototypes_per_target,
        config=config_to_pb(spec.config.to_dict()),
        seed=spec.seed,
        reference_set=spec.reference_set,
        priority=spec.priority + 1,  # queue 0/1/2 -> PRIORITY_HIGH/NORMAL/LOW
        request_id=spec.request_id,
        progress=progress_to_pb(
            record.step,
            record.total_steps,
            record.best_probability,
            state=record.state,
            phase=record.phase,
            phase_message=record.phase_message,
            updated=record.progress_at,
        ),
        cache_hit=record.cache_hit,
        attempts=record.attempts,
        prototypes=[
            summary_to_pb(record.job_id, i, p, class_names) for i, p in enumerate(record.prototypes)
        ],
    )
    for field, unix in (
        ("create_time", record.created_at),
        ("start_time", record.started_at),
        ("end_time", record.finished_at),
    ):
        ts = timestamp_pb(unix)
        if ts is not None:
            getattr(job, field).CopyFrom(ts)
    error = error_to_pb(record)
    if error is not None:
        job.error.CopyFrom(error)
    if spec.mode == "isolation":
        job.isolation.CopyFrom(isolation_to_pb(record))
    return job


def isolation_to_pb(record: JobRecord) -> isolation_pb2.Isolation:
    """An isolation job's settings, and its probabilities once it succeeded."""
    config = isolation_pb2.IsolationConfig(
        **{k: v for k, v in record.spec.config.to_dict().items() if k in _ISOLATION_FIELDS}
    )
    found = (record.prototypes[0].isolation if record.prototypes else None) or {}
    return isolation_pb2.Isolation(config=config, **{k: float(v) for k, v in found.items()})


_ISOLATION_FIELDS = {f.name for f in isolation_pb2.IsolationConfig.DESCRIPTOR.fields}


def event_to_pb(entry_id: str, event: JobEvent) -> service_pb2.WatchJobResponse:
    return service_pb2.WatchJobResponse(
        state=STATE_TO_PB[event.state],
        progress=progress_to_pb(
            event.step,
            event.total_steps,
            event.best_probability,
            state=event.state,
            phase=event.phase,
            phase_message=event.phase_message,
            updated=event.time,
        ),
        message=event.message,
        cursor=entry_id,
    )


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _json_safe(value: Any) -> Any:
    """Struct cannot hold tuples or non-finite floats' absence; normalise recursively."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def estimate_pb(
    value: object, low: object = None, high: object = None, reason: object = ""
) -> prototype_pb2.Estimate:
    """A score and its interval; unset numbers stay unset (``None`` or non-finite)."""
    msg = prototype_pb2.Estimate(reason=str(reason or ""))
    for field, v in (("value", value), ("low", low), ("high", high)):
        if _is_number(v) and math.isfinite(v):
            setattr(msg, field, float(v))
    return msg


def scores_to_pb(scores: Mapping[str, Any], reference_set: str) -> prototype_pb2.Scores:
    """Engine scores dict (``engine.PrototypeScores.to_dict()``) -> Scores.

    Typed: the headline ``path_similarity`` and the per-layer normalised Spearman
    similarity as ``Estimate``s (value, interval, reason), the count of layers the
    headline rests on, the confidence level and resample count, the reference set's
    caveats. Generic: lists with one number per layer become ``per_layer`` series
    (None -> NaN), top-level numbers ``summary``, the ``robustness`` dict's numbers
    ``robustness``; ``details`` keeps the whole dict.
    """
    layers = [str(name) for name in scores.get("layers") or []]
    msg = prototype_pb2.Scores(layer_names=layers, reference_set=reference_set)
    reference = scores.get("reference")
    if isinstance(reference, Mapping):
        msg.reference_digest = str(reference.get("digest", ""))
    for key, value in scores.items():
        if key in ("layers", "version"):
            continue
        if _is_number(value):
            msg.summary[key] = float(value)
        elif isinstance(value, list | tuple) and layers and len(value) == len(layers):
            if all(v is None or _is_number(v) for v in value):
                msg.per_layer[key].values.extend(
                    float("nan") if v is None else float(v) for v in value
                )
        elif key == "robustness" and isinstance(value, Mapping):
            for name, v in value.items():
                if _is_number(v):
                    msg.robustness[name] = float(v)
    msg.path_similarity.CopyFrom(
        estimate_pb(
            scores.get("path_similarity"),
            scores.get("path_similarity_low"),
            scores.get("path_similarity_high"),
            scores.get("path_similarity_reason"),
        )
    )
    msg.determinate_layers = int(scores.get("path_similarity_layers") or 0)

    def column(key: str, default: Any = None) -> list[Any]:
        values = scores.get(key)
        return list(values) if isinstance(values, list | tuple) else [default] * len(layers)

    msg.layers.extend(
        estimate_pb(*parts)
        for parts in zip(
            column("spearman_normalised"),
            column("spearman_normalised_low"),
            column("spearman_normalised_high"),
            column("spearman_reason", ""),
            strict=True,
        )
    )
    statistics = scores.get("statistics")
    if isinstance(statistics, Mapping):
        msg.confidence = float(statistics.get("confidence") or 0.0)
        msg.resamples = int(statistics.get("resamples") or 0)
    msg.caveats.extend(caveats_to_pb(scores.get("caveats")))
    details = struct_pb2.Struct()
    details.update(_json_safe(dict(scores)))
    msg.details.CopyFrom(details)
    return msg


def prototype_to_pb(
    record: JobRecord,
    index: int,
    png: bytes,
    class_names: Sequence[str],
    engine_version: str,
) -> prototype_pb2.Prototype:
    stored = record.prototypes[index]
    spec = record.spec
    msg = prototype_pb2.Prototype(
        name=names.prototype_name(record.job_id, index),
        summary=summary_to_pb(record.job_id, index, stored, class_names),
        png=png,
        provenance=prototype_pb2.Provenance(
            model=spec.model,
            model_digest=spec.model_digest,
            config=config_to_pb(spec.config.to_dict()),
            seed=stored.seed,
            engine_version=spec.engine_version or engine_version,
            reference_set=spec.reference_set,
            reference_digest=spec.reference_digest,
            cache_key=record.cache_key,
        ),
    )
    if stored.scores:
        msg.scores.CopyFrom(scores_to_pb(stored.scores, spec.reference_set))
    return msg


def model_to_pb(info: ModelInfo) -> model_pb2.Model:
    """A catalog ``ModelInfo`` (name, source, input_spec, class_names, digest, state...) -> Model;
    a model that is not READY carries its state and reason, and no input spec."""
    spec = info.input_spec
    class_names = list(getattr(info, "class_names", ()) or ())
    msg = model_pb2.Model(
        name=names.MODELS.name(info.name),
        source=str(getattr(info, "source", "")),
        num_classes=int(getattr(info, "num_classes", len(class_names))),
        class_names=class_names,
        digest=str(getattr(info, "digest", "")),
        format=str(getattr(info, "format", "")),
        description=str(getattr(info, "description", "")),
        state=_MODEL_STATE_TO_PB[str(getattr(info, "state", "READY"))],
        unusable_reason=str(getattr(info, "unusable_reason", "")),
        multi_label=bool(getattr(info, "multi_label", False)),
    )
    if spec is not None:
        msg.input_spec.CopyFrom(
            model_pb2.InputSpec(
                channels=spec.channels,
                height=spec.height,
                width=spec.width,
                mean=list(spec.mean),
                std=list(spec.std),
            )
        )
    return msg


_MODEL_STATE_TO_PB = {
    "READY": model_pb2.Model.STATE_READY,
    "UNUSABLE": model_pb2.Model.STATE_UNUSABLE,
    "INSPECTING": model_pb2.Model.STATE_INSPECTING,
}
