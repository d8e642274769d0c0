from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class UnitKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UNIT_KIND_UNSPECIFIED: _ClassVar[UnitKind]
    UNIT_KIND_CHANNEL: _ClassVar[UnitKind]
    UNIT_KIND_NEURON: _ClassVar[UnitKind]
    UNIT_KIND_DIRECTION: _ClassVar[UnitKind]
UNIT_KIND_UNSPECIFIED: UnitKind
UNIT_KIND_CHANNEL: UnitKind
UNIT_KIND_NEURON: UnitKind
UNIT_KIND_DIRECTION: UnitKind

class UnitTerm(_message.Message):
    __slots__ = ("layer", "unit", "index", "position", "direction", "weight")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    layer: str
    unit: UnitKind
    index: int
    position: _containers.RepeatedScalarFieldContainer[int]
    direction: _containers.RepeatedScalarFieldContainer[float]
    weight: float
    def __init__(self, layer: _Optional[str] = ..., unit: _Optional[_Union[UnitKind, str]] = ..., index: _Optional[int] = ..., position: _Optional[_Iterable[int]] = ..., direction: _Optional[_Iterable[float]] = ..., weight: _Optional[float] = ...) -> None: ...

class Layer(_message.Message):
    __slots__ = ("name", "shape")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...
