from protolens.v1 import units_pb2 as _units_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Priority(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRIORITY_UNSPECIFIED: _ClassVar[Priority]
    PRIORITY_HIGH: _ClassVar[Priority]
    PRIORITY_NORMAL: _ClassVar[Priority]
    PRIORITY_LOW: _ClassVar[Priority]

class TargetKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TARGET_KIND_UNSPECIFIED: _ClassVar[TargetKind]
    TARGET_KIND_PROTOTYPE: _ClassVar[TargetKind]
    TARGET_KIND_ANTITYPE: _ClassVar[TargetKind]
    TARGET_KIND_HYBRID: _ClassVar[TargetKind]
    TARGET_KIND_UNIT: _ClassVar[TargetKind]
PRIORITY_UNSPECIFIED: Priority
PRIORITY_HIGH: Priority
PRIORITY_NORMAL: Priority
PRIORITY_LOW: Priority
TARGET_KIND_UNSPECIFIED: TargetKind
TARGET_KIND_PROTOTYPE: TargetKind
TARGET_KIND_ANTITYPE: TargetKind
TARGET_KIND_HYBRID: TargetKind
TARGET_KIND_UNIT: TargetKind

class ClassRef(_message.Message):
    __slots__ = ("index", "name")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    index: int
    name: str
    def __init__(self, index: _Optional[int] = ..., name: _Optional[str] = ...) -> None: ...

class Target(_message.Message):
    __slots__ = ("classes", "kind", "units")
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    UNITS_FIELD_NUMBER: _ClassVar[int]
    classes: _containers.RepeatedCompositeFieldContainer[ClassRef]
    kind: TargetKind
    units: _containers.RepeatedCompositeFieldContainer[_units_pb2.UnitTerm]
    def __init__(self, classes: _Optional[_Iterable[_Union[ClassRef, _Mapping]]] = ..., kind: _Optional[_Union[TargetKind, str]] = ..., units: _Optional[_Iterable[_Union[_units_pb2.UnitTerm, _Mapping]]] = ...) -> None: ...

class ResolvedTarget(_message.Message):
    __slots__ = ("classes", "class_names", "kind", "units")
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    UNITS_FIELD_NUMBER: _ClassVar[int]
    classes: _containers.RepeatedScalarFieldContainer[int]
    class_names: _containers.RepeatedScalarFieldContainer[str]
    kind: TargetKind
    units: _containers.RepeatedCompositeFieldContainer[_units_pb2.UnitTerm]
    def __init__(self, classes: _Optional[_Iterable[int]] = ..., class_names: _Optional[_Iterable[str]] = ..., kind: _Optional[_Union[TargetKind, str]] = ..., units: _Optional[_Iterable[_Union[_units_pb2.UnitTerm, _Mapping]]] = ...) -> None: ...

class GenerationConfig(_message.Message):
    __slots__ = ("steps", "lr", "parameterisation", "decorrelate", "start", "start_value", "equidistant_steps", "transforms", "hf_penalty", "blur_every", "blur_sigma", "diversity", "bn_prior", "max_batch", "autocast", "channels_last", "progress_every", "alpha", "alpha_penalty", "max_steps", "objective", "fourier_decay", "maco_decay", "margin_temperature", "transform_copies")
    STEPS_FIELD_NUMBER: _ClassVar[int]
    LR_FIELD_NUMBER: _ClassVar[int]
    PARAMETERISATION_FIELD_NUMBER: _ClassVar[int]
    DECORRELATE_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    START_VALUE_FIELD_NUMBER: _ClassVar[int]
    EQUIDISTANT_STEPS_FIELD_NUMBER: _ClassVar[int]
    TRANSFORMS_FIELD_NUMBER: _ClassVar[int]
    HF_PENALTY_FIELD_NUMBER: _ClassVar[int]
    BLUR_EVERY_FIELD_NUMBER: _ClassVar[int]
    BLUR_SIGMA_FIELD_NUMBER: _ClassVar[int]
    DIVERSITY_FIELD_NUMBER: _ClassVar[int]
    BN_PRIOR_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    AUTOCAST_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_LAST_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_EVERY_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    ALPHA_PENALTY_FIELD_NUMBER: _ClassVar[int]
    MAX_STEPS_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    FOURIER_DECAY_FIELD_NUMBER: _ClassVar[int]
    MACO_DECAY_FIELD_NUMBER: _ClassVar[int]
    MARGIN_TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TRANSFORM_COPIES_FIELD_NUMBER: _ClassVar[int]
    steps: int
    lr: float
    parameterisation: str
    decorrelate: bool
    start: str
    start_value: float
    equidistant_steps: int
    transforms: str
    hf_penalty: float
    blur_every: int
    blur_sigma: float
    diversity: float
    bn_prior: float
    max_batch: int
    autocast: bool
    channels_last: bool
    progress_every: int
    alpha: bool
    alpha_penalty: float
    max_steps: int
    objective: str
    fourier_decay: float
    maco_decay: float
    margin_temperature: float
    transform_copies: int
    def __init__(self, steps: _Optional[int] = ..., lr: _Optional[float] = ..., parameterisation: _Optional[str] = ..., decorrelate: _Optional[bool] = ..., start: _Optional[str] = ..., start_value: _Optional[float] = ..., equidistant_steps: _Optional[int] = ..., transforms: _Optional[str] = ..., hf_penalty: _Optional[float] = ..., blur_every: _Optional[int] = ..., blur_sigma: _Optional[float] = ..., diversity: _Optional[float] = ..., bn_prior: _Optional[float] = ..., max_batch: _Optional[int] = ..., autocast: _Optional[bool] = ..., channels_last: _Optional[bool] = ..., progress_every: _Optional[int] = ..., alpha: _Optional[bool] = ..., alpha_penalty: _Optional[float] = ..., max_steps: _Optional[int] = ..., objective: _Optional[str] = ..., fourier_decay: _Optional[float] = ..., maco_decay: _Optional[float] = ..., margin_temperature: _Optional[float] = ..., transform_copies: _Optional[int] = ...) -> None: ...

class Status(_message.Message):
    __slots__ = ("code", "message", "reason", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    reason: str
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., reason: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ClassProbability(_message.Message):
    __slots__ = ("index", "name", "probability")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    index: int
    name: str
    probability: float
    def __init__(self, index: _Optional[int] = ..., name: _Optional[str] = ..., probability: _Optional[float] = ...) -> None: ...

class Caveat(_message.Message):
    __slots__ = ("code", "message", "classes", "files")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    classes: _containers.RepeatedScalarFieldContainer[int]
    files: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., classes: _Optional[_Iterable[int]] = ..., files: _Optional[_Iterable[str]] = ...) -> None: ...
