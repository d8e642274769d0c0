"""The engine's public data types: what goes in (spec, targets, config) and what comes out.

These are the contracts every other layer builds on (model sources fill an
``InputSpec``; the queue serialises ``GenerationConfig`` and ``Prototype``), so
changes here are API changes. Pure dataclasses: no torch imports at module level
beyond typing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, Self

import torch

from protolens_server.errors import InvalidArgument

if TYPE_CHECKING:
    from protolens_server.engine._score_types import PrototypeScores

Parameterisation = Literal["fourier", "pixel", "maco"]
Start = Literal["noise", "constant", "equidistant"]
TransformPreset = Literal["none", "small", "medium", "large", "xlarge"]
TargetKind = Literal["prototype", "antitype", "hybrid", "unit"]
UnitKind = Literal["channel", "neuron", "direction"]
UNIT_KINDS: tuple[str, ...] = ("channel", "neuron", "direction")
# The size a direction's largest value may have (its scale is normalised away, in float32).
DIRECTION_SCALE = (1e-6, 1e6)
MAX_TRANSFORM_COPIES = 16  # transform_copies: each is a forward and backward pass per step
ObjectiveKind = Literal["margin", "logit"]
StopReason = Literal["converged", "budget", "steps"]


@dataclass(frozen=True)
class InputSpec:
    """What the model expects. The engine optimises x in [0,1] and feeds ``(x - mean) / std``.

    ``mean``/``std`` are per channel in [0,1] image units, so ImageNet models use
    (0.485, 0.456, 0.406)/(0.229, 0.224, 0.225), a model that wants [-1,1] uses
    0.5/0.5, and one that wants [0,255] uses 0/(1/255).
    """

    channels: int = 3
    height: int = 224
    width: int = 224
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)

    def __post_init__(self) -> None:
        if self.channels < 1 or self.height < 8 or self.width < 8:
            raise InvalidArgument("input_spec", f"bad shape {self.shape}; need C>=1, H,W>=8")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if len(value) not in (1, self.channels):
                raise InvalidArgument(
                    f"input_spec.{name}", f"has {len(value)} values, need 1 or {self.channels}"
                )
        if any(s <= 0 for s in self.std):
            raise InvalidArgument("input_spec.std", "every std must be > 0")

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)

    def normalise(self, x01: torch.Tensor) -> torch.Tensor:
        """Map a batch in [0,1] image space to the model's input space (differentiable)."""
        mean = torch.tensor(self.mean, device=x01.device, dtype=x01.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x01.device, dtype=x01.dtype).view(1, -1, 1, 1)
        return (x01 - mean) / std

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InputSpec:
        return cls(
            channels=int(d.get("channels", 3)),
            height=int(d.get("height", 224)),
            width=int(d.get("width", 224)),
            mean=tuple(float(v) for v in d.get("mean", (0.485, 0.456, 0.406))),
            std=tuple(float(v) for v in d.get("std", (0.229, 0.224, 0.225))),
        )


class ImageClassifier(Protocol):
    """Anything the engine can optimise against: a callable image->logits plus its spec.

    ``models.ModelHandle`` satisfies it; so does ``engine.Classifier`` for a bare module.
    An optional ``multi_label`` attribute (True: one independent sigmoid per class, a
    multi-label model; absent: False) picks the objective and what a probability is
    (``_readout``).
    """

    @property
    def module(self) -> Callable[[torch.Tensor], torch.Tensor]: ...

    @property
    def input_spec(self) -> InputSpec: ...

    @property
    def num_classes(self) -> int: ...


@dataclass(frozen=True)
class Classifier:
    """The minimal ``ImageClassifier``: wrap a module (or any callable) and its spec."""

    module: Callable[[torch.Tensor], torch.Tensor]
    input_spec: InputSpec
    num_classes: int
    class_names: tuple[str, ...] = ()
    multi_label: bool = False  # one independent sigmoid per class (``_readout``)


@dataclass(frozen=True)
class UnitTerm:
    """One weighted term of a unit objective: what a layer's activation should do.

    - ``channel``: the mean of channel ``index`` over positions (tokens for a
      (B, T, D) output; the value itself for a (B, D) output);
    - ``neuron``: channel ``index`` at one position, ``position`` = (y, x) in the
      layer's own grid (a token index for (B, T, D)); unset: the centre;
    - ``direction``: the spatial mean of the activation projected on ``direction``
      (one value per channel, normalised to unit length): a one-hot direction is
      the channel objective of that channel.

    ``layer`` is a module path as ``layers`` lists it, or ``"logits"`` (then a
    channel is a class logit). The objective maximises ``weight * value``: a
    negative weight minimises the value (differences of terms).
    """

    layer: str
    unit: UnitKind = "channel"
    index: int = 0
    position: tuple[int, ...] = ()
    direction: tuple[float, ...] = ()
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not self.layer:
            raise InvalidArgument("target.layer", "name a layer (see `protolens layers MODEL`)")
        if self.unit not in UNIT_KINDS:
            raise InvalidArgument(
                "target.unit", f"must be channel, neuron or direction ({self.unit!r})"
            )
        if self.unit == "direction":
            if not self.direction or not any(v != 0 for v in self.direction):
                raise InvalidArgument("target.direction", "needs one non-zero value per channel")
            # The engine normalises it in the activations' float32: all values 1e20 became
            # 0 (a constant objective, a meaningless picture), 1e-30 inf, 1e39 NaN.
            largest = max(abs(v) for v in self.direction)
            if not DIRECTION_SCALE[0] <= largest <= DIRECTION_SCALE[1]:
                raise InvalidArgument(
                    "target.direction",
                    f"its largest value is {largest:g}; scale it to between"
                    f" {DIRECTION_SCALE[0]:g} and {DIRECTION_SCALE[1]:g} (only its direction"
                    " counts: it is normalised to unit length)",
                )
        elif self.direction:  # an unset unit kind is a channel: the direction was ignored
            raise InvalidArgument(
                "target.direction", f"only a direction term has one (this is a {self.unit})"
            )
        elif self.index < 0:
            raise InvalidArgument("target.index", f"must be >= 0 (got {self.index})")
        if self.position and (self.unit != "neuron" or len(self.position) not in (1, 2)):
            raise InvalidArgument(
                "target.position", "only a neuron has a position: (y, x) or (token,)"
            )
        if any(p < 0 for p in self.position):
            raise InvalidArgument("target.position", f"must be >= 0 (got {self.position})")
        if not (self.weight == self.weight and abs(self.weight) < 1e6) or self.weight == 0:
            raise InvalidArgument(
                "target.weight", f"must be finite and non-zero (got {self.weight})"
            )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UnitTerm:
        return cls(
            layer=str(d["layer"]),
            unit=str(d.get("unit", "channel")),  # type: ignore[arg-type]
            index=int(d.get("index", 0)),
            position=tuple(int(v) for v in d.get("position", ())),
            direction=tuple(float(v) for v in d.get("direction", ())),
            weight=float(d.get("weight", 1.0)),
        )

    def label(self) -> str:
        """``layer:features.3:channel:12`` (the CLI's syntax), with a ``2*`` weight prefix."""
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
    """What one prototype optimises for.

    - ``prototype``: maximise one class's logit (``classes`` has one entry);
    - ``antitype``: minimise one class's logit;
    - ``hybrid``: maximise two or more classes at once;
    - ``unit``: maximise a weighted sum of ``units`` (layer channels, neurons,
      directions; ``classes`` is empty).
    """

    classes: tuple[int, ...]
    kind: TargetKind = "prototype"
    units: tuple[UnitTerm, ...] = ()

    def __post_init__(self) -> None:
        if self.kind == "unit" or self.units:
            if self.kind != "unit" or self.classes or not self.units:
                raise InvalidArgument(
                    "target", "a unit target names one or more units and no classes"
                )
            return
        if not self.classes:
            raise InvalidArgument("target", "needs at least one class")
        if self.kind in ("prototype", "antitype") and len(self.classes) != 1:
            raise InvalidArgument("target", f"a {self.kind} names exactly one class")
        if self.kind == "hybrid" and len(self.classes) < 2:
            raise InvalidArgument("target", "a hybrid names two or more classes")

    @classmethod
    def of(cls, c: int | Sequence[int] | Target) -> Target:
        if isinstance(c, Target):
            return c
        if isinstance(c, int):
            return cls((c,))
        classes = tuple(int(v) for v in c)
        return cls(classes, "hybrid" if len(classes) > 1 else "prototype")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Target:
        """A target from its stored form (``dataclasses.asdict``)."""
        units = tuple(UnitTerm.from_dict(u) for u in d.get("units", ()))
        return cls(tuple(int(c) for c in d["classes"]), d.get("kind", "prototype"), units)

    def material(self) -> dict[str, Any]:
        """What a cache key hashes of this target (a class target: classes and kind)."""
        out: dict[str, Any] = {"classes": list(self.classes), "kind": self.kind}
        if self.units:
            out["units"] = [dataclasses.asdict(u) for u in self.units]
        return out

    def label(self) -> str:
        if self.kind == "unit":
            return "+".join(u.label() for u in self.units).replace("+-", "-")
        joined = "+".join(str(c) for c in self.classes)
        return {"prototype": joined, "antitype": f"-{joined}", "hybrid": joined}[self.kind]


_SCALARS = (str, int, float, bool, type(None))
_KINDS = {int: "a whole number", float: "a number", bool: "1/0, true/false or yes/no"}
_BOOLS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


class OptionRecord:
    """What an engine options record (``GenerationConfig``, ``IsolationConfig``) shares:
    range checks that name the field, and a plain dict form that refuses unknown keys."""

    _KIND: ClassVar[str] = "an option"  # "config.X is not <_KIND>"

    def _require(self, checks: Sequence[tuple[str, bool, str]]) -> None:
        for name, ok, why in checks:
            if not ok:
                raise InvalidArgument(f"config.{name}", f"{why} (got {getattr(self, name)!r})")

    def to_dict(self) -> dict[str, Any]:
        """The fields as a new plain dict (``dataclasses.asdict``'s answer). Options are
        scalars, so the common case is a shallow copy: ``asdict``'s recursive deep copy
        costs ~20 us, paid per job by the worker's batching, cache keys and provenance."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        if all(isinstance(v, _SCALARS) for v in out.values()):
            return out
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def parse_changes(cls, pairs: Sequence[str]) -> dict[str, Any]:
        """``FIELD=VALUE`` strings (a command line's form) as typed changes: each value is
        read as its field's default's type, a bool from 1/0, true/false or yes/no. An
        unknown field, a pair without ``=`` or a value of the wrong type names itself."""
        defaults = cls()
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        out: dict[str, Any] = {}
        for pair in pairs:
            name, sep, text = (part.strip() for part in pair.partition("="))
            if not sep or not name:
                raise InvalidArgument("config", f"{pair!r}: expected FIELD=VALUE, e.g. lr=0.05")
            if name not in known:
                raise InvalidArgument(f"config.{name}", f"is not {cls._KIND}")
            kind = type(getattr(defaults, name))
            try:
                out[name] = _BOOLS[text.lower()] if kind is bool else kind(text)
            except (KeyError, ValueError):
                raise InvalidArgument(f"config.{name}", f"{text!r} is not {_KINDS[kind]}") from None
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(d) - known)
        if unknown:
            raise InvalidArgument(f"config.{unknown[0]}", f"is not {cls._KIND}")
        return cls(**d)


@dataclass(frozen=True)
class GenerationConfig(OptionRecord):
    """Every knob that determines the output (and therefore the cache key).

    Defaults are the product's recommended settings and tune themselves per model:
    ``steps = 0`` runs each prototype until its progress stalls (at most
    ``max_steps``; a positive ``steps`` runs exactly that many), ``lr = 0`` lets the
    learning-rate finder pick the rate (``_lr_finder``). ``objective``: ``margin``
    maximises the target logit over the soft maximum of the others (keeps improving
    past probability saturation); ``logit`` is the earlier target logit plus
    log-probability. For a multi-label model (``ImageClassifier.multi_label``) each label
    is its own two-way choice, present or absent: ``margin`` is then the label's log-odds
    (its logit; the other labels are left alone), ``logit`` the log-odds plus its log
    sigmoid, and ``margin_temperature`` has nothing to spread (``_readout``).
    ``fourier_decay`` is the exponent of ``"fourier"``'s 1/f^k scaling; ``"maco"``
    optimises the spectrum's phase and each image's contrast under a fixed
    1/f^``maco_decay`` magnitude (``_param``). ``bn_prior`` (DeepInversion's
    BatchNorm-statistics prior, eager models with BatchNorm modules only) is off by
    default: on the self-tuning optimisation it lowered the path similarity it was
    meant to raise (docs/scores.md). ``transform_copies`` averages each step's loss
    over that many independently transformed copies of every image (a transform
    ensemble: K forward passes per step; docs/scores.md measures it). ``max_batch``
    caps the images optimised at once; 0 sizes chunks to the device's memory
    (``generate``'s ``memory_budget``; a fixed 32 off CUDA). Options that only
    change how fast the same result is made and belong to the machine, not the
    request (``torch.compile``, the memory budget), are ``generate`` arguments.
    """

    _KIND: ClassVar[str] = "a generation option"

    steps: int = 0
    max_steps: int = 256
    lr: float = 0.0
    objective: ObjectiveKind = "margin"
    margin_temperature: float = 1.0
    parameterisation: Parameterisation = "fourier"
    fourier_decay: float = 1.0
    maco_decay: float = 2.0
    decorrelate: bool = True
    start: Start = "equidistant"
    start_value: float = 0.5
    equidistant_steps: int = 16
    transforms: TransformPreset = "medium"
    transform_copies: int = 1
    hf_penalty: float = 1.0
    blur_every: int = 0
    blur_sigma: float = 0.5
    diversity: float = 0.0
    bn_prior: float = 0.0
    bn_prior_every: int = 2
    prototypes: int = 1
    max_batch: int = 32
    autocast: bool = True
    channels_last: bool = True
    progress_every: int = 8
    alpha: bool = False
    alpha_penalty: float = 8.0

    def __post_init__(self) -> None:
        checks = [
            (
                "steps",
                0 <= self.steps <= 100_000,
                "must be 0..100000 (0: until converged, at most max_steps)",
            ),
            ("max_steps", 1 <= self.max_steps <= 100_000, "must be 1..100000"),
            ("lr", 0 <= self.lr <= 10, "must be in [0, 10] (0: found per model)"),
            ("objective", self.objective in ("margin", "logit"), "must be 'margin' or 'logit'"),
            (
                "margin_temperature",
                0.1 <= self.margin_temperature <= 100,
                "must be in [0.1, 100] (1: the plain soft maximum)",
            ),
            ("fourier_decay", 0 <= self.fourier_decay <= 4, "must be in [0, 4]"),
            ("maco_decay", 0 <= self.maco_decay <= 4, "must be in [0, 4]"),
            (
                "parameterisation",
                self.parameterisation in ("fourier", "pixel", "maco"),
                "must be 'fourier', 'pixel' or 'maco'",
            ),
            (
                "start",
                self.start in ("noise", "constant", "equidistant"),
                "must be 'noise', 'constant' or 'equidistant'",
            ),
            ("start_value", 0.0 <= self.start_value <= 1.0, "must be in [0, 1]"),
            ("equidistant_steps", 0 <= self.equidistant_steps <= 10_000, "must be 0..10000"),
            (
                "transforms",
                self.transforms in ("none", "small", "medium", "large", "xlarge"),
                "must be none|small|medium|large|xlarge",
            ),
            (
                "transform_copies",
                1 <= self.transform_copies <= MAX_TRANSFORM_COPIES,
                f"must be 1..{MAX_TRANSFORM_COPIES} (each step costs that many forward passes)",
            ),
            ("hf_penalty", 0 <= self.hf_penalty <= 1e4, "must be in [0, 10000]"),
            ("blur_every", self.blur_every >= 0, "must be >= 0"),
            ("blur_sigma", 0 < self.blur_sigma <= 100, "must be in (0, 100] pixels"),
            ("diversity", 0 <= self.diversity <= 1e4, "must be in [0, 10000]"),
            ("bn_prior", 0 <= self.bn_prior <= 1e4, "must be in [0, 10000]"),
            ("bn_prior_every", self.bn_prior_every >= 1, "must be >= 1"),
            ("prototypes", 1 <= self.prototypes <= 64, "must be 1..64"),
            (
                "max_batch",
                self.max_batch >= 0,
                "must be >= 0 (0: as many images as fit the device memory budget)",
            ),
            ("progress_every", self.progress_every >= 1, "must be >= 1"),
            ("alpha_penalty", 0 <= self.alpha_penalty <= 1e4, "must be in [0, 10000]"),
        ]
        self._require(checks)

    def replace(self, **changes: Any) -> GenerationConfig:
        return dataclasses.replace(self, **changes)

    @property
    def step_budget(self) -> int:
        """The most steps a prototype can take: ``steps`` when fixed, else ``max_steps``."""
        return self.steps or self.max_steps


@dataclass(frozen=True)
class ProgressEvent:
    """Sent to ``on_progress`` at step 0 (the starting point is ready: the optimisation
    begins), every ``config.progress_every`` steps and at the end."""

    step: int
    total_steps: int  # the step budget (config.steps, or max_steps when it stops by convergence)
    target_probabilities: tuple[float, ...]  # one per prototype in the batch, in output order
    lr: float = 0.0  # the learning rate in use (given, or chosen by the finder)
    # per prototype: "" while it runs, then why it stopped (converged / budget / steps)
    stop_reasons: tuple[str, ...] = ()


@dataclass
class PrototypeFacts:
    """What one prototype is, wherever it is held: the one shape of those facts.

    The engine's ``Prototype`` extends it with the image; the queue's
    ``StoredPrototype`` with blob keys (its JSON form flattens these fields); the API's
    ``PrototypeSummary`` message is its wire form, and the SDK converts from that
    message (the client never imports the server).
    """

    target: Target
    index: int  # which prototype of this target (0..prototypes-1)
    # the target's probability (mean over classes for a hybrid): the softmax over the
    # classes, or for a multi-label model (``multi_label``) the label's own sigmoid
    probability: float
    logit: float
    top5: list[tuple[int, float]]  # (class index, probability), most probable first
    steps: int  # steps this prototype took
    seed: int
    lr: float = 0.0  # the learning rate used (config.lr, or the finder's choice when it is 0)
    stop_reason: str = ""  # converged / budget / steps
    # probabilities (``probability``, ``top5``) are each label's own sigmoid: the model is
    # multi-label, its labels independent (they need not sum to 1)
    multi_label: bool = False

    def facts(self) -> PrototypeFacts:
        """These facts alone, as plain Python numbers (JSON-able), whatever extends them."""
        return PrototypeFacts(
            target=self.target,
            index=int(self.index),
            probability=float(self.probability),
            logit=float(self.logit),
            top5=[(int(c), float(q)) for c, q in self.top5],
            steps=int(self.steps),
            seed=int(self.seed),
            lr=float(self.lr),
            stop_reason=str(self.stop_reason),
            multi_label=bool(self.multi_label),
        )


@dataclass(kw_only=True)
class Prototype(PrototypeFacts):
    """One generated prototype and everything needed to trust or reproduce it: its facts,
    the image and the options that made it."""

    image: torch.Tensor  # (C, H, W) float32 in [0, 1], on CPU
    config: GenerationConfig
    scores: PrototypeScores | None = None  # set once scored (scores.scoring)
    extras: dict[str, Any] = field(default_factory=dict)
