"""``ModelInfo``: what the service may say about a model without loading it.

A model in the store is in one of three states:

- ``READY``: inspected and loadable; input spec, classes and digest are known;
- ``UNUSABLE``: the file is broken or hostile; ``unusable_reason`` says why and what
  to fix (listed, never loaded again until the file changes);
- ``INSPECTING``: new or changed, its inspection still running.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from protolens_server.engine.types import InputSpec
from protolens_server.errors import FailedPrecondition, InvalidModel, ProtolensError
from protolens_server.models.handle import ModelHandle


class ModelState(StrEnum):
    READY = "READY"
    UNUSABLE = "UNUSABLE"
    INSPECTING = "INSPECTING"


@dataclass(frozen=True)
class ModelInfo:
    name: str  # canonical: "name" or "name@version"
    source: str
    format: str
    input_spec: InputSpec | None  # None unless READY
    num_classes: int
    class_names: tuple[str, ...]
    digest: str
    description: str = ""
    version: str = ""
    class_aliases: tuple[tuple[str, ...], ...] = field(default=(), repr=False)
    state: ModelState = ModelState.READY
    unusable_reason: str = ""
    # (name, output shape per image) of every layer a unit target may name, ending with
    # "logits"; empty when unknown (not READY, or the probe failed)
    layers: tuple[tuple[str, tuple[int, ...]], ...] = field(default=(), repr=False)
    multi_label: bool = False  # one independent sigmoid per class (``ModelHandle.multi_label``)

    @property
    def usable(self) -> bool:
        return self.state is ModelState.READY

    def refusal(self) -> ProtolensError:
        """Why a job cannot use this model: InvalidModel (UNUSABLE: the reason says what to
        fix) or FailedPrecondition (INSPECTING: retry shortly)."""
        if self.state is ModelState.INSPECTING:
            return FailedPrecondition(
                f"model {self.name!r} is {self.unusable_reason}", model=self.name, retry_after_s="2"
            )
        return InvalidModel(
            f"model {self.name!r} is unusable: {self.unusable_reason}", model=self.name
        )

    @classmethod
    def of(cls, handle: ModelHandle, name: str, version: str = "") -> ModelInfo:
        return cls(
            name=name,
            source=handle.source,
            format=handle.format,
            input_spec=handle.input_spec,
            num_classes=handle.num_classes,
            class_names=handle.class_names,
            digest=handle.digest,
            description=handle.description,
            version=version,
            class_aliases=handle.class_aliases,
            layers=_layers(handle),
            multi_label=handle.multi_label,
        )

    @classmethod
    def not_ready(
        cls,
        name: str,
        version: str,
        reason: str,
        *,
        source: str = "",
        state: ModelState = ModelState.UNUSABLE,
    ) -> ModelInfo:
        return cls(
            name=name,
            source=source,
            format="",
            input_spec=None,
            num_classes=0,
            class_names=(),
            digest="",
            version=version,
            state=state,
            unusable_reason=reason,
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "source": self.source,
            "format": self.format,
            "input_spec": self.input_spec.to_dict() if self.input_spec else None,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "digest": self.digest,
            "description": self.description,
            "state": self.state.value,
            "multi_label": self.multi_label,
        }
        if self.unusable_reason:
            out["unusable_reason"] = self.unusable_reason
        return out

    def to_wire(self) -> dict[str, Any]:
        """``to_dict`` plus class aliases: what an inspection process sends back (JSON)."""
        return {
            **self.to_dict(),
            "class_aliases": [list(a) for a in self.class_aliases],
            "layers": [[name, list(shape)] for name, shape in self.layers],
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> ModelInfo:
        spec = data.get("input_spec")
        return cls(
            name=str(data["name"]),
            source=str(data["source"]),
            format=str(data["format"]),
            input_spec=InputSpec.from_dict(spec) if spec else None,
            num_classes=int(data["num_classes"]),
            class_names=tuple(str(n) for n in data["class_names"]),
            digest=str(data["digest"]),
            description=str(data.get("description", "")),
            version=str(data.get("version", "")),
            class_aliases=tuple(tuple(str(a) for a in al) for al in data.get("class_aliases", ())),
            state=ModelState(data.get("state", "READY")),
            unusable_reason=str(data.get("unusable_reason", "")),
            layers=tuple(
                (str(name), tuple(int(v) for v in shape)) for name, shape in data.get("layers", ())
            ),
            multi_label=bool(data.get("multi_label", False)),
        )


def _layers(handle: ModelHandle) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """The handle's layers with their shapes (one probe forward, memoised per module); a
    model the probe cannot run lists none (jobs on it then fail as before, at the worker)."""
    from protolens_server.engine import layer_shapes

    try:
        return tuple(layer_shapes(handle))
    except Exception:  # the probe is advisory here: the model loaded, which is what counts
        return ()
