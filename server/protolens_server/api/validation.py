"""A CreatePrototypeJobRequest checked field by field and turned into a ``JobSpec``.

Everything is checked before anything is queued; each failure is a domain
error naming the request field (``targets[1].classes[0]``, ``config.steps``...).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

from google.protobuf.message import Message
from protolens import names
from protolens.v1 import common_pb2, service_pb2, units_pb2

from protolens_server import ENGINE_VERSION
from protolens_server.config import Settings
from protolens_server.engine import UnitTerm, check_unit_shapes
from protolens_server.engine.types import GenerationConfig, Target
from protolens_server.errors import InvalidArgument
from protolens_server.models.classes import ClassIndex, class_index
from protolens_server.queue.pages import MAX_PAGE_SIZE
from protolens_server.queue.records import JobSpec
from protolens_server.scores.naming import ReferenceResolver

MAX_REQUEST_ID_CHARS = 128
MAX_CLASS_NAME_CHARS = 256
MAX_SEED = 2**63 - 1
DEFAULT_PAGE_SIZE = 50
_KINDS = {
    common_pb2.TARGET_KIND_PROTOTYPE: "prototype",
    common_pb2.TARGET_KIND_ANTITYPE: "antitype",
    common_pb2.TARGET_KIND_HYBRID: "hybrid",
    common_pb2.TARGET_KIND_UNIT: "unit",
}
_UNITS = {
    units_pb2.UNIT_KIND_UNSPECIFIED: "channel",
    units_pb2.UNIT_KIND_CHANNEL: "channel",
    units_pb2.UNIT_KIND_NEURON: "neuron",
    units_pb2.UNIT_KIND_DIRECTION: "direction",
}
_PRIORITIES = {
    common_pb2.PRIORITY_UNSPECIFIED: 1,
    common_pb2.PRIORITY_HIGH: 0,
    common_pb2.PRIORITY_NORMAL: 1,
    common_pb2.PRIORITY_LOW: 2,
}


T = TypeVar("T")


def read_name(parse: Callable[[str], T], name: str, field: str = "name") -> T:
    """A request's resource name read by ``parse`` (from ``protolens.names``); one that
    does not fit is ``InvalidArgument`` naming ``field`` and the expected form."""
    try:
        return parse(name)
    except names.ResourceNameError as exc:
        raise InvalidArgument(field, str(exc)) from exc


def model_name(value: str) -> str:
    name = names.MODELS.id(value).strip()
    if not name:
        raise InvalidArgument("model", "is required: name a registered model (see ListModels)")
    return name


def check_request_limits(
    request: service_pb2.CreatePrototypeJobRequest, settings: Settings
) -> None:
    """A job request's size limits, checked at once (cheap: before any class is resolved)."""
    check_request_size(request, settings)
    if len(request.targets) > settings.max_targets_per_job:
        raise InvalidArgument(
            "targets",
            f"{len(request.targets)} targets; this server allows at most"
            f" {settings.max_targets_per_job} per job (max_targets_per_job)",
        )
    refs = 0
    for i, target in enumerate(request.targets):
        count = len(target.classes) + len(target.units)
        if count > settings.max_classes_per_target:
            what = "units" if target.units else "classes"
            raise InvalidArgument(
                f"targets[{i}].{what}",
                f"{count} {what}; this server allows at most {settings.max_classes_per_target}"
                " per target (max_classes_per_target)",
            )
        refs += count
    if refs > settings.max_class_refs_per_job:
        raise InvalidArgument(
            "targets",
            f"{refs} class references in all (targets x classes per target); this server"
            f" allows at most {settings.max_class_refs_per_job} per job (max_class_refs_per_job)",
        )


def check_request_size(request: Message, settings: Settings) -> None:
    size = request.ByteSize()
    if size > settings.max_request_bytes:
        raise InvalidArgument(
            "request",
            f"is {size} bytes; this server accepts at most {settings.max_request_bytes}"
            " (max_request_bytes): split it",
        )


def _class_ref(ref: common_pb2.ClassRef, index: ClassIndex, field: str) -> int:
    which = ref.WhichOneof("ref")
    if which is None:
        raise InvalidArgument(field, "set a class index or a class name")
    value = getattr(ref, which)
    if which == "name" and len(value) > MAX_CLASS_NAME_CHARS:
        raise InvalidArgument(
            field, f"a class name of {len(value)} characters; at most {MAX_CLASS_NAME_CHARS}"
        )
    return index.resolve(value, field=field)


def _targets(
    request: service_pb2.CreatePrototypeJobRequest, info: Any, settings: Settings
) -> tuple[Target, ...]:
    if not request.targets:
        raise InvalidArgument("targets", "give at least one target (a class index or name)")
    check_request_limits(request, settings)
    index = class_index(info)
    specs = []
    for i, target in enumerate(request.targets):
        if target.units or target.kind == common_pb2.TARGET_KIND_UNIT:
            specs.append(_unit_target(target, f"targets[{i}]"))
            continue
        classes = [
            _class_ref(ref, index, f"targets[{i}].classes[{j}]")
            for j, ref in enumerate(target.classes)
        ]
        if target.kind not in _KINDS and target.kind != common_pb2.TARGET_KIND_UNSPECIFIED:
            raise InvalidArgument(f"targets[{i}].kind", f"unknown kind {target.kind}")
        kind = _KINDS.get(target.kind) or ("hybrid" if len(classes) > 1 else "prototype")
        try:
            specs.append(Target(tuple(classes), kind))  # the engine's own shape rules
        except InvalidArgument as exc:
            raise InvalidArgument(f"targets[{i}]", exc.message.removeprefix("target: ")) from None
    layers = dict(getattr(info, "layers", ()) or ())
    if layers:  # known from the model's inspection; else the worker checks them
        check_unit_shapes(list(specs), layers, field="targets")
    return tuple(specs)


def _unit_target(target: common_pb2.Target, field: str) -> Target:
    """A unit target: its terms checked for shape (layers are checked with the model's)."""
    if target.classes or target.kind not in (
        common_pb2.TARGET_KIND_UNIT,
        common_pb2.TARGET_KIND_UNSPECIFIED,
    ):
        raise InvalidArgument(field, "a unit target names units only: no classes, kind UNIT")
    if not target.units:
        raise InvalidArgument(f"{field}.units", "a unit target needs at least one unit term")
    units = []
    for j, term in enumerate(target.units):
        if term.unit not in _UNITS:
            raise InvalidArgument(f"{field}.units[{j}].unit", f"unknown unit kind {term.unit}")
        if not all(math.isfinite(v) for v in (term.weight, *term.direction)):
            raise InvalidArgument(f"{field}.units[{j}]", "weights and directions must be finite")
        try:  # the engine's own shape rules
            units.append(
                UnitTerm(
                    layer=term.layer,
                    unit=_UNITS[term.unit],
                    index=term.index,
                    position=tuple(term.position),
                    direction=tuple(term.direction),
                    weight=term.weight or 1.0,
                )
            )
        except InvalidArgument as exc:
            raise InvalidArgument(field, exc.message) from None
    return Target((), "unit", tuple(units))


def generation_config(
    given: common_pb2.GenerationConfig, prototypes: int, settings: Settings
) -> GenerationConfig:
    """The fields the caller set over the defaults, ``prototypes`` (0 = 1) per target,
    within the server's step limit (jobs and checks alike): a step of K transform copies
    counts K times, since it costs K forward and backward passes."""
    fields = {
        f.name: getattr(given, f.name) for f in given.DESCRIPTOR.fields if given.HasField(f.name)
    }
    for name, value in fields.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidArgument(f"config.{name}", f"must be a finite number (got {value!r})")
    config = GenerationConfig(**fields, prototypes=prototypes or 1)
    field = "steps" if config.steps else "max_steps"
    if config.step_budget > settings.max_steps:
        raise InvalidArgument(
            f"config.{field}",
            f"{config.step_budget} steps; this server allows at most {settings.max_steps}",
        )
    passes = config.step_budget * config.transform_copies
    if passes > settings.max_steps:
        raise InvalidArgument(
            "config.transform_copies",
            f"{config.transform_copies} copies x {config.step_budget} steps = {passes} passes;"
            f" this server allows at most {settings.max_steps}: lower {field} or the copies",
        )
    return config


def seed_of(request: Any) -> int:
    """The request's seed (0 when unset), within 0..MAX_SEED."""
    seed = request.seed if request.HasField("seed") else 0
    if not 0 <= seed <= MAX_SEED:
        raise InvalidArgument("seed", f"must be 0..{MAX_SEED} (got {seed})")
    return int(seed)


def page_size(value: int, default: int = DEFAULT_PAGE_SIZE) -> int:
    """A list request's page size: 0 means ``default``, capped at MAX_PAGE_SIZE."""
    if value < 0:
        raise InvalidArgument("page_size", "must be >= 0")
    return min(value or default, MAX_PAGE_SIZE)


def request_id_of(value: str) -> str:
    """An idempotency key (AIP-155) as given, checked: printable ASCII, bounded length."""
    if len(value) > MAX_REQUEST_ID_CHARS:
        raise InvalidArgument(
            "request_id", f"is {len(value)} characters; at most {MAX_REQUEST_ID_CHARS}"
        )
    if value and not (value.isascii() and value.isprintable()):
        raise InvalidArgument("request_id", "use printable ASCII characters only")
    return value


def build_spec(
    request: service_pb2.CreatePrototypeJobRequest,
    *,
    info: Any,
    settings: Settings,
    resolve_reference: ReferenceResolver,
    tenant: str,
    trace_id: str = "",
) -> JobSpec:
    """Validate ``request`` against the model ``info`` (catalog ModelInfo); return its JobSpec.

    Raises domain errors naming the field.
    """
    targets = _targets(request, info, settings)
    config = generation_config(request.config, request.prototypes_per_target, settings)
    seed = seed_of(request)
    if request.priority not in _PRIORITIES:
        raise InvalidArgument(
            "priority", f"unknown priority {request.priority}; use HIGH/NORMAL/LOW"
        )
    reference_digest = ""
    if request.reference_set and any(t.kind == "unit" for t in targets):
        raise InvalidArgument(
            "reference_set",
            "path-similarity scores compare a prototype with natural images of its class;"
            " unit targets have no class: leave reference_set empty for them",
        )
    if request.reference_set:
        classes = tuple(sorted({c for t in targets for c in t.classes}))
        reference_digest = resolve_reference(request.reference_set, info, classes)
    return JobSpec(
        model=info.name,
        model_digest=info.digest,
        targets=targets,
        config=config,
        seed=seed,
        reference_set=request.reference_set,
        reference_digest=reference_digest,
        engine_version=ENGINE_VERSION,
        priority=_PRIORITIES[request.priority],
        tenant=tenant,
        request_id=request_id_of(request.request_id),
        trace_id=trace_id,
    )


def build_isolation_spec(
    request: service_pb2.CreateIsolationJobRequest,
    *,
    info: Any,
    settings: Settings,
    tenant: str,
    trace_id: str = "",
) -> tuple[JobSpec, bytes]:
    """Validate a CreateIsolationJobRequest against the model ``info``; return its JobSpec
    (mode "isolation") and the image decoded and fitted to the model's input, as PNG (the
    queue stores it as a blob; the spec names its key).

    Raises domain errors naming the field.
    """
    from protolens_server.blobs import blob_key
    from protolens_server.engine import IsolationConfig
    from protolens_server.imageio import encode_png, load_image

    check_request_size(request, settings)
    if not request.image:
        raise InvalidArgument("image", "give the image's bytes (PNG or JPEG)")
    if not request.HasField("target"):
        raise InvalidArgument("target", "name the class whose evidence to isolate")
    target = _class_ref(request.target, class_index(info), "target")
    spec = info.input_spec
    image = load_image(request.image, spec.height, spec.width, spec.channels)
    fields = {
        f.name: getattr(request.config, f.name)
        for f in request.config.DESCRIPTOR.fields
        if request.config.HasField(f.name)
    }
    for name, value in fields.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidArgument(f"config.{name}", f"must be a finite number (got {value!r})")
    config = IsolationConfig(**fields)
    if config.steps > settings.max_steps:
        raise InvalidArgument(
            "config.steps", f"{config.steps} steps; this server allows at most {settings.max_steps}"
        )
    if request.priority not in _PRIORITIES:
        raise InvalidArgument(
            "priority", f"unknown priority {request.priority}; use HIGH/NORMAL/LOW"
        )
    png = encode_png(image)
    spec = JobSpec(
        model=info.name,
        model_digest=info.digest,
        targets=(Target((target,)),),
        config=config,
        seed=seed_of(request),
        engine_version=ENGINE_VERSION,
        priority=_PRIORITIES[request.priority],
        tenant=tenant,
        request_id=request_id_of(request.request_id),
        trace_id=trace_id,
        mode="isolation",
        image_key=blob_key(png),
    )
    return spec, png
