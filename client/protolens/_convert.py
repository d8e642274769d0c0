"""Protobuf messages ↔ SDK dataclasses (the only module that knows both)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf import json_format, timestamp_pb2

from protolens import names, types
from protolens.errors import InvalidArgumentError
from protolens.v1 import (
    admin_pb2,
    checks_pb2,
    common_pb2,
    isolation_pb2,
    job_pb2,
    model_pb2,
    prototype_pb2,
    service_pb2,
    units_pb2,
)

_KINDS = {
    "": common_pb2.TARGET_KIND_UNSPECIFIED,
    "prototype": common_pb2.TARGET_KIND_PROTOTYPE,
    "antitype": common_pb2.TARGET_KIND_ANTITYPE,
    "hybrid": common_pb2.TARGET_KIND_HYBRID,
    "unit": common_pb2.TARGET_KIND_UNIT,
}
_UNIT_KINDS = {
    "channel": units_pb2.UNIT_KIND_CHANNEL,
    "neuron": units_pb2.UNIT_KIND_NEURON,
    "direction": units_pb2.UNIT_KIND_DIRECTION,
}
_UNIT_NAMES = {v: k for k, v in _UNIT_KINDS.items()} | {units_pb2.UNIT_KIND_UNSPECIFIED: "channel"}
_KIND_NAMES = {v: k for k, v in _KINDS.items()}
PRIORITIES = {
    "high": common_pb2.PRIORITY_HIGH,
    "normal": common_pb2.PRIORITY_NORMAL,
    "low": common_pb2.PRIORITY_LOW,
}
_PRIORITY_NAMES = {v: k for k, v in PRIORITIES.items()} | {
    common_pb2.PRIORITY_UNSPECIFIED: "normal"
}
ROLES = {"tenant": admin_pb2.API_KEY_ROLE_TENANT, "admin": admin_pb2.API_KEY_ROLE_ADMIN}
_ROLE_NAMES = {v: k for k, v in ROLES.items()} | {admin_pb2.API_KEY_ROLE_UNSPECIFIED: "tenant"}
_CHECK_STATES = {
    v.number: v.name.removeprefix("CHECK_STATE_") for v in checks_pb2.CheckState.DESCRIPTOR.values
}
CONFIG_FIELDS = tuple(f.name for f in common_pb2.GenerationConfig.DESCRIPTOR.fields)


_INDEX_DIGITS = 9  # longer digit strings go as names; the service explains
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


def _bad(field: str, message: str) -> InvalidArgumentError:
    return InvalidArgumentError(
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
        f"{field}: {message}",
        {"field": field},
    )


# --- requests -------------------------------------------------------------------


def config_to_pb(config: Mapping[str, Any] | None) -> common_pb2.GenerationConfig:
    msg = common_pb2.GenerationConfig()
    for key, value in (config or {}).items():
        if key not in CONFIG_FIELDS:
            raise _bad(f"config.{key}", f"is not a generation option ({', '.join(CONFIG_FIELDS)})")
        if value is not None:
            try:
                setattr(msg, key, value)
            except (TypeError, ValueError) as exc:
                raise _bad(f"config.{key}", f"wrong type: {exc}") from exc
    return msg


def target_to_pb(target: types.Target) -> common_pb2.Target:
    if target.kind not in _KINDS:
        raise _bad("targets.kind", "must be prototype, antitype, hybrid or unit")
    return common_pb2.Target(
        classes=[class_ref(c) for c in target.classes],
        kind=_KINDS[target.kind],
        units=[unit_to_pb(u) for u in target.units],
    )


def unit_to_pb(term: types.UnitTerm) -> units_pb2.UnitTerm:
    if term.unit not in _UNIT_KINDS:
        raise _bad("targets.units.unit", "must be channel, neuron or direction")
    return units_pb2.UnitTerm(
        layer=term.layer,
        unit=_UNIT_KINDS[term.unit],
        index=term.index,
        position=list(term.position),
        direction=list(term.direction),
        weight=term.weight,
    )


def unit_from_pb(msg: units_pb2.UnitTerm) -> types.UnitTerm:
    return types.UnitTerm(
        layer=msg.layer,
        unit=_UNIT_NAMES.get(msg.unit, "channel"),
        index=msg.index,
        position=tuple(msg.position),
        direction=tuple(msg.direction),
        weight=msg.weight or 1.0,
    )


def class_ref(value: int | str) -> common_pb2.ClassRef:
    """An int, or a string of ASCII digits that fits a class index, is an index; any
    other string is a class name (the service says if it knows it)."""
    if isinstance(value, bool):
        raise _bad("targets.classes", f"{value!r} is not a class index or name")
    if isinstance(value, str):
        text = value.strip()
        digits = text.removeprefix("-")
        if not (digits.isascii() and digits.isdigit() and len(digits) <= _INDEX_DIGITS):
            return common_pb2.ClassRef(name=value)
        value = int(text)
    if not isinstance(value, int):
        return common_pb2.ClassRef(name=str(value))
    if not _INT32_MIN <= value <= _INT32_MAX:
        raise _bad("targets.classes", f"class index {value} is out of range")
    return common_pb2.ClassRef(index=value)


def create_request(
    model: str,
    targets: Iterable[int | str | types.Target | tuple[int | str, ...]],
    *,
    prototypes_per_target: int = 1,
    config: Mapping[str, Any] | None = None,
    seed: int | None = None,
    reference_set: str = "",
    priority: str = "normal",
    request_id: str = "",
) -> service_pb2.CreatePrototypeJobRequest:
    if priority not in PRIORITIES:
        raise _bad("priority", f"must be one of {', '.join(PRIORITIES)}")
    req = service_pb2.CreatePrototypeJobRequest(
        model=model,
        targets=[target_to_pb(types.Target.of(t)) for t in targets],
        prototypes_per_target=prototypes_per_target,
        config=config_to_pb(config),
        reference_set=reference_set,
        priority=PRIORITIES[priority],
        request_id=request_id,
    )
    if seed is not None:
        req.seed = seed
    return req


def job_name(job: str | types.Job) -> str:
    """Accept a Job, "jobs/{id}" or a bare id."""
    return job.name if isinstance(job, types.Job) else names.JOBS.name(job)


def check_request(
    model: str,
    *,
    baseline: str = "",
    classes: Sequence[int | str] = (),
    steps: int | None = None,
    prototypes: int = 1,
    config: Mapping[str, Any] | None = None,
    seed: int | None = None,
    reference_set: str = "",
    policy_yaml: str = "",
    request_id: str = "",
) -> checks_pb2.StartCheckRequest:
    cfg = config_to_pb(config)
    if steps is not None:
        cfg.steps = int(steps)
    req = checks_pb2.StartCheckRequest(
        model=model,
        baseline=baseline,
        classes=[str(c) for c in classes],
        config=cfg,
        prototypes_per_class=int(prototypes),
        reference_set=reference_set,
        policy_yaml=policy_yaml,
        request_id=request_id,
    )
    if seed is not None:
        req.seed = int(seed)
    return req


def check_name(check: str | types.Check) -> str:
    """Accept a Check, "checks/{check}" or a bare id."""
    return check.name if isinstance(check, types.Check) else names.CHECKS.name(str(check))


def api_key_request(tenant: str, role: str, display_name: str) -> admin_pb2.CreateApiKeyRequest:
    if role not in ROLES:
        raise _bad("role", f"must be one of {', '.join(ROLES)}")
    return admin_pb2.CreateApiKeyRequest(tenant=tenant, role=ROLES[role], display_name=display_name)


def api_key_name(key: str | types.ApiKey) -> str:
    """Accept an ApiKey, "apiKeys/{key_id}" or a bare key id."""
    return key.name if isinstance(key, types.ApiKey) else names.API_KEYS.name(key)


# --- responses ------------------------------------------------------------------


def _time(ts: timestamp_pb2.Timestamp, present: bool) -> datetime | None:
    return ts.ToDatetime(tzinfo=UTC) if present else None


def config_from_pb(msg: common_pb2.GenerationConfig) -> dict[str, Any]:
    return {f.name: getattr(msg, f.name) for f in msg.DESCRIPTOR.fields if msg.HasField(f.name)}


def resolved_target(msg: common_pb2.ResolvedTarget) -> types.ResolvedTarget:
    return types.ResolvedTarget(
        classes=tuple(msg.classes),
        class_names=tuple(msg.class_names),
        kind=_KIND_NAMES.get(msg.kind, "prototype"),
        units=tuple(unit_from_pb(u) for u in msg.units),
    )


def progress(msg: job_pb2.Progress) -> types.Progress:
    phase = job_pb2.JobPhase.Name(msg.phase).removeprefix("JOB_PHASE_") if msg.phase else ""
    return types.Progress(
        step=msg.step,
        total_steps=msg.total_steps,
        best_probability=msg.best_probability,
        fraction=msg.fraction,
        phase=phase,
        phase_message=msg.phase_message,
        update_time=_time(msg.update_time, msg.HasField("update_time")),
    )


def caveat(msg: common_pb2.Caveat) -> types.Caveat:
    return types.Caveat(msg.code, msg.message, tuple(msg.classes), tuple(msg.files))


def summary(msg: job_pb2.PrototypeSummary) -> types.PrototypeSummary:
    return types.PrototypeSummary(
        name=msg.name,
        index=msg.index,
        target=resolved_target(msg.target),
        target_index=msg.target_index,
        probability=msg.probability,
        logit=msg.logit,
        top5=tuple(types.ClassProbability(c.index, c.name, c.probability) for c in msg.top5),
        steps=msg.steps,
        seed=msg.seed,
        has_scores=msg.has_scores,
        lr=msg.lr,
        stop_reason=msg.stop_reason,
        multi_label=msg.multi_label,
        caveats=tuple(caveat(c) for c in msg.caveats),
    )


def job(msg: job_pb2.Job, outcome: int = 0) -> types.Job:
    error = None
    if msg.HasField("error"):
        code = grpc.StatusCode.UNKNOWN.name
        for c in grpc.StatusCode:
            if c.value[0] == msg.error.code:
                code = c.name
        error = types.JobError(code, msg.error.message, msg.error.reason, dict(msg.error.metadata))
    outcome_name = service_pb2.CreateOutcome.Name(outcome) if outcome else ""
    return types.Job(
        name=msg.name,
        state=job_pb2.JobState.Name(msg.state).removeprefix("JOB_STATE_"),
        model=msg.model,
        model_digest=msg.model_digest,
        targets=tuple(resolved_target(t) for t in msg.targets),
        prototypes_per_target=msg.prototypes_per_target,
        config=config_from_pb(msg.config),
        seed=msg.seed,
        reference_set=msg.reference_set,
        priority=_PRIORITY_NAMES.get(msg.priority, "normal"),
        request_id=msg.request_id,
        progress=progress(msg.progress),
        create_time=_time(msg.create_time, msg.HasField("create_time")),
        start_time=_time(msg.start_time, msg.HasField("start_time")),
        end_time=_time(msg.end_time, msg.HasField("end_time")),
        error=error,
        cache_hit=msg.cache_hit,
        attempts=msg.attempts,
        prototypes=tuple(summary(p) for p in msg.prototypes),
        outcome=outcome_name.removeprefix("CREATE_OUTCOME_").lower(),
        isolation=isolation(msg.isolation) if msg.HasField("isolation") else None,
    )


def isolation(msg: isolation_pb2.Isolation) -> types.Isolation:
    config = msg.config
    return types.Isolation(
        config={
            f.name: getattr(config, f.name)
            for f in config.DESCRIPTOR.fields
            if config.HasField(f.name)
        },
        probability=msg.probability,
        probability_kept=msg.probability_kept,
        probability_removed=msg.probability_removed,
        mask_mean=msg.mask_mean,
    )


ISOLATION_FIELDS = tuple(f.name for f in isolation_pb2.IsolationConfig.DESCRIPTOR.fields)


def create_isolation_request(
    model: str,
    image: bytes,
    target: int | str,
    *,
    config: Mapping[str, Any] | None = None,
    seed: int | None = None,
    priority: str = "normal",
    request_id: str = "",
) -> service_pb2.CreateIsolationJobRequest:
    if priority not in PRIORITIES:
        raise _bad("priority", f"must be one of {', '.join(PRIORITIES)}")
    msg = isolation_pb2.IsolationConfig()
    for key, value in (config or {}).items():
        if key not in ISOLATION_FIELDS:
            raise _bad(
                f"config.{key}", f"is not an isolation option ({', '.join(ISOLATION_FIELDS)})"
            )
        if value is not None:
            try:
                setattr(msg, key, value)
            except (TypeError, ValueError) as exc:
                raise _bad(f"config.{key}", f"wrong type: {exc}") from exc
    req = service_pb2.CreateIsolationJobRequest(
        model=model,
        image=bytes(image),
        target=class_ref(target),
        config=msg,
        priority=PRIORITIES[priority],
        request_id=request_id,
    )
    if seed is not None:
        req.seed = seed
    return req


def estimate(msg: prototype_pb2.Estimate) -> types.Estimate:
    return types.Estimate(
        value=msg.value if msg.HasField("value") else None,
        low=msg.low if msg.HasField("low") else None,
        high=msg.high if msg.HasField("high") else None,
        reason=msg.reason,
    )


def scores(msg: prototype_pb2.Scores) -> types.Scores:
    return types.Scores(
        layer_names=tuple(msg.layer_names),
        per_layer={k: list(v.values) for k, v in msg.per_layer.items()},
        summary=dict(msg.summary),
        robustness=dict(msg.robustness),
        reference_set=msg.reference_set,
        reference_digest=msg.reference_digest,
        details=json_format.MessageToDict(msg.details),
        path_similarity=estimate(msg.path_similarity),
        determinate_layers=msg.determinate_layers,
        layers=tuple(estimate(e) for e in msg.layers),
        confidence=msg.confidence,
        resamples=msg.resamples,
        caveats=tuple(caveat(c) for c in msg.caveats),
    )


def prototype(msg: prototype_pb2.Prototype) -> types.Prototype:
    p = msg.provenance
    return types.Prototype(
        name=msg.name,
        summary=summary(msg.summary),
        png=msg.png,
        scores=scores(msg.scores) if msg.HasField("scores") else None,
        provenance=types.Provenance(
            model=p.model,
            model_digest=p.model_digest,
            config=config_from_pb(p.config),
            seed=p.seed,
            engine_version=p.engine_version,
            reference_set=p.reference_set,
            reference_digest=p.reference_digest,
            cache_key=p.cache_key,
        ),
        float_tensor=msg.float_tensor,
    )


def model(msg: model_pb2.Model) -> types.Model:
    s = msg.input_spec
    return types.Model(
        name=msg.name,
        source=msg.source,
        input_spec=types.InputSpec(s.channels, s.height, s.width, tuple(s.mean), tuple(s.std)),
        num_classes=msg.num_classes,
        class_names=tuple(msg.class_names),
        digest=msg.digest,
        format=msg.format,
        description=msg.description,
        state=_model_state(msg.state),
        unusable_reason=msg.unusable_reason,
        layers=tuple(types.Layer(layer.name, tuple(layer.shape)) for layer in msg.layers),
        multi_label=msg.multi_label,
    )


def _model_state(value: int) -> str:
    if value == model_pb2.Model.STATE_UNSPECIFIED:  # a server from before model states
        return "READY"
    return model_pb2.Model.State.Name(value).removeprefix("STATE_")


def watch_event(msg: service_pb2.WatchJobResponse) -> types.WatchEvent:
    return types.WatchEvent(
        state=job_pb2.JobState.Name(msg.state).removeprefix("JOB_STATE_"),
        progress=progress(msg.progress),
        message=msg.message,
        cursor=msg.cursor,
    )


def api_key(msg: admin_pb2.ApiKey, secret_key: str = "") -> types.ApiKey:
    return types.ApiKey(
        name=msg.name,
        key_id=msg.key_id,
        tenant=msg.tenant,
        role=_ROLE_NAMES.get(msg.role, "tenant"),
        display_name=msg.display_name,
        create_time=_time(msg.create_time, msg.HasField("create_time")),
        revoke_time=_time(msg.revoke_time, msg.HasField("revoke_time")),
        secret_key=secret_key,
    )


def check(msg: checks_pb2.Check) -> types.Check:
    return types.Check(
        name=msg.name,
        state=_CHECK_STATES.get(msg.state, "UNSPECIFIED"),
        model=msg.model,
        baseline=msg.baseline,
        progress=msg.progress,
        message=msg.message,
        passed=msg.passed,
        failed_rules=tuple(msg.failed_rules),
        flagged_classes=tuple(msg.flagged_classes),
        jobs=msg.jobs,
        cache_hits=msg.cache_hits,
        error=msg.error.message if msg.HasField("error") else "",
        error_reason=msg.error.reason if msg.HasField("error") else "",
    )
