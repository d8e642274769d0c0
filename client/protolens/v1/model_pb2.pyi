from protolens.v1 import units_pb2 as _units_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InputSpec(_message.Message):
    __slots__ = ("channels", "height", "width", "mean", "std")
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    channels: int
    height: int
    width: int
    mean: _containers.RepeatedScalarFieldContainer[float]
    std: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, channels: _Optional[int] = ..., height: _Optional[int] = ..., width: _Optional[int] = ..., mean: _Optional[_Iterable[float]] = ..., std: _Optional[_Iterable[float]] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("name", "source", "input_spec", "num_classes", "class_names", "digest", "format", "description", "state", "unusable_reason", "layers", "multi_label")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATE_UNSPECIFIED: _ClassVar[Model.State]
        STATE_READY: _ClassVar[Model.State]
        STATE_UNUSABLE: _ClassVar[Model.State]
        STATE_INSPECTING: _ClassVar[Model.State]
    STATE_UNSPECIFIED: Model.State
    STATE_READY: Model.State
    STATE_UNUSABLE: Model.State
    STATE_INSPECTING: Model.State
    NAME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    INPUT_SPEC_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    UNUSABLE_REASON_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    MULTI_LABEL_FIELD_NUMBER: _ClassVar[int]
    name: str
    source: str
    input_spec: InputSpec
    num_classes: int
    class_names: _containers.RepeatedScalarFieldContainer[str]
    digest: str
    format: str
    description: str
    state: Model.State
    unusable_reason: str
    layers: _containers.RepeatedCompositeFieldContainer[_units_pb2.Layer]
    multi_label: bool
    def __init__(self, name: _Optional[str] = ..., source: _Optional[str] = ..., input_spec: _Optional[_Union[InputSpec, _Mapping]] = ..., num_classes: _Optional[int] = ..., class_names: _Optional[_Iterable[str]] = ..., digest: _Optional[str] = ..., format: _Optional[str] = ..., description: _Optional[str] = ..., state: _Optional[_Union[Model.State, str]] = ..., unusable_reason: _Optional[str] = ..., layers: _Optional[_Iterable[_Union[_units_pb2.Layer, _Mapping]]] = ..., multi_label: _Optional[bool] = ...) -> None: ...
