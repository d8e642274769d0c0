"""Model metadata that lives beside a model file: input spec, class names, factory.

A sidecar is a JSON object, all keys optional::

    {"channels": 3, "height": 224, "width": 224,
     "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
     "class_names": ["cat", "dog"]          # or {"0": "cat", "1": ["n02084071", "dog"]}
     "factory": "package.module:function",  # eager weights (.pth, eager .mar) only
     "description": "what this model is",
     "output": "multi-label-logits"}        # forward returns one logit per label

It is found as ``<model file>.json`` (``m.pt.json``) or ``<stem>.json``
(``m.json``), or inside a ``.mar`` as ``input_spec.json``. Class names may also
come from a TorchServe ``index_to_name.json`` (``{"0": "name" | ["id", "name"]}``).

``output`` declares what ``forward`` returns where loading cannot tell (``OUTPUTS``):
``auto`` (the default: logits, or probabilities the load recognises, ``_probe_output``)
or ``multi-label-logits`` (one independent logit per label, a model trained with a
binary cross-entropy per class and no sigmoid in ``forward``): such logits look like
a single-label model's.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protolens_server.engine.types import InputSpec
from protolens_server.errors import InvalidArgument, ProtolensError

SPEC_KEYS = ("channels", "height", "width", "mean", "std")
SIDECAR_KEYS = frozenset((*SPEC_KEYS, "class_names", "factory", "description", "output"))
AUTO, MULTI_LABEL_LOGITS = "auto", "multi-label-logits"
OUTPUTS = (AUTO, MULTI_LABEL_LOGITS)  # the values of a declared ``output``


@dataclass(frozen=True)
class ClassNames:
    """Display names (one per output) and, per class, other names it answers to."""

    names: tuple[str, ...]
    aliases: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Sidecar:
    input_spec: InputSpec | None = None
    classes: ClassNames | None = None
    factory: str | None = None
    description: str = ""
    origin: str = ""
    output: str = ""  # a declared output (OUTPUTS), "" when not declared
    # which of SPEC_KEYS the source gave ("" = all, e.g. explicit arguments): a sidecar
    # that gives only mean/std leaves the shape to what a .pt2 program says
    spec_keys: frozenset[str] = frozenset()

    @property
    def gives_shape(self) -> bool:
        return not self.spec_keys or bool({"channels", "height", "width"} & self.spec_keys)

    def merged_over(self, other: Sidecar) -> Sidecar:
        """``self`` with gaps filled from ``other`` (self wins)."""
        return Sidecar(
            input_spec=self.input_spec or other.input_spec,
            classes=self.classes or other.classes,
            factory=self.factory or other.factory,
            description=self.description or other.description,
            # error messages about class names should name where the names came from
            origin=(self.origin if self.classes or not other.classes else other.origin)
            or other.origin,
            spec_keys=self.spec_keys if self.input_spec else other.spec_keys,
            output=self.output or other.output,
        )


def parse_sidecar(data: Any, origin: str) -> Sidecar:
    """Validate a decoded sidecar object; errors name ``origin`` and the key."""
    if not isinstance(data, dict):
        raise InvalidArgument(origin, "a model sidecar must be a JSON object")
    unknown = sorted(set(data) - SIDECAR_KEYS)
    if unknown:
        raise InvalidArgument(
            f"{origin}: {unknown[0]}",
            f"is not a sidecar key (known: {', '.join(sorted(SIDECAR_KEYS))})",
        )
    spec = None
    if any(k in data for k in SPEC_KEYS):
        spec = spec_from_mapping({k: data[k] for k in SPEC_KEYS if k in data}, origin)
    classes = None
    if "class_names" in data:
        classes = parse_class_names(data["class_names"], f"{origin}: class_names")
    factory = data.get("factory")
    if factory is not None and (not isinstance(factory, str) or ":" not in factory):
        raise InvalidArgument(f"{origin}: factory", "must be 'package.module:function'")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise InvalidArgument(f"{origin}: description", "must be a string")
    output = parse_output(data["output"], f"{origin}: output") if "output" in data else ""
    return Sidecar(
        spec,
        classes,
        factory,
        description,
        origin,
        output,
        frozenset(k for k in SPEC_KEYS if k in data),
    )


def parse_output(value: Any, field: str = "output") -> str:
    """A declared ``output`` (``OUTPUTS``); ``InvalidArgument`` naming ``field`` otherwise."""
    if isinstance(value, str) and value.strip().lower() in OUTPUTS:
        return value.strip().lower()
    raise InvalidArgument(
        field,
        f"must be {MULTI_LABEL_LOGITS!r} (forward returns one logit per label: a multi-label "
        f"model trained with a binary cross-entropy per class, no sigmoid in forward) or "
        f"{AUTO!r} (the default: logits, or probabilities recognised at load); got {value!r}",
    )


def spec_from_mapping(d: Mapping[str, Any], origin: str) -> InputSpec:
    def floats(v: Any) -> tuple[float, ...]:
        return (float(v),) if isinstance(v, int | float) else tuple(float(x) for x in v)

    try:
        kwargs: dict[str, Any] = {}
        for k in ("channels", "height", "width"):
            if k in d:
                kwargs[k] = int(d[k])
        channels = kwargs.get("channels", 3)
        for k in ("mean", "std"):
            if k in d:
                kwargs[k] = floats(d[k])
            elif channels != 3:
                # The InputSpec defaults are ImageNet's 3-channel values.
                kwargs[k] = (0.0,) if k == "mean" else (1.0,)
        return InputSpec(**kwargs)
    except ProtolensError as exc:
        raise InvalidArgument(origin, str(exc)) from exc
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(origin, f"bad input spec value: {exc}") from exc


def parse_class_names(data: Any, origin: str) -> ClassNames:
    """A list of names, or a TorchServe index_to_name mapping with keys 0..N-1."""
    entries: list[Any]
    if isinstance(data, list):
        entries = data
    elif isinstance(data, dict):
        try:
            indexed = {int(k): v for k, v in data.items()}
        except ValueError as exc:
            raise InvalidArgument(origin, "keys must be class indices '0', '1', ...") from exc
        if sorted(indexed) != list(range(len(indexed))):
            raise InvalidArgument(origin, f"keys must be exactly 0..{len(indexed) - 1}")
        entries = [indexed[i] for i in range(len(indexed))]
    else:
        raise InvalidArgument(origin, "must be a list of names or an index_to_name mapping")
    names: list[str] = []
    aliases: list[tuple[str, ...]] = []
    for i, entry in enumerate(entries):
        if isinstance(entry, str):
            parts = [entry]
        elif isinstance(entry, Sequence) and entry and all(isinstance(p, str) for p in entry):
            parts = list(entry)  # TorchServe ["wnid", "name"]: the last is the display name
            parts = [parts[-1], *parts[:-1]]
        else:
            raise InvalidArgument(origin, f"class {i}: expected a name or [id, name]")
        display = parts[0].strip()
        if not display:
            raise InvalidArgument(origin, f"class {i}: empty name")
        extra = [p.strip() for p in parts[1:]]
        if "," in display:  # "tabby, tabby cat": every part is a synonym
            extra += [s.strip() for s in display.split(",")]
        names.append(display)
        aliases.append(tuple(a for a in dict.fromkeys(extra) if a and a != display))
    return ClassNames(tuple(names), tuple(aliases))


def read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgument(str(path), f"cannot read {what}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise InvalidArgument(str(path), f"{what} is not valid JSON: {exc}") from exc


def sidecar_paths(model_path: Path) -> list[Path]:
    return [model_path.with_name(model_path.name + ".json"), model_path.with_suffix(".json")]


def find_sidecar(model_path: Path) -> Sidecar:
    """The sidecar beside ``model_path``, plus a sibling ``index_to_name.json``."""
    sidecar = Sidecar()
    for candidate in sidecar_paths(model_path):
        if candidate.is_file() and candidate != model_path:
            sidecar = parse_sidecar(read_json(candidate, "model sidecar"), str(candidate))
            break
    index = model_path.with_name("index_to_name.json")
    if sidecar.classes is None and index.is_file():
        classes = parse_class_names(read_json(index, "index_to_name.json"), str(index))
        sidecar = dataclasses.replace(sidecar, classes=classes, origin=sidecar.origin or str(index))
    return sidecar
