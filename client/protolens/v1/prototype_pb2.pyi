from google.protobuf import struct_pb2 as _struct_pb2
from protolens.v1 import common_pb2 as _common_pb2
from protolens.v1 import job_pb2 as _job_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LayerValues(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class Estimate(_message.Message):
    __slots__ = ("value", "low", "high", "reason")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    value: float
    low: float
    high: float
    reason: str
    def __init__(self, value: _Optional[float] = ..., low: _Optional[float] = ..., high: _Optional[float] = ..., reason: _Optional[str] = ...) -> None: ...

class Scores(_message.Message):
    __slots__ = ("layer_names", "per_layer", "summary", "robustness", "reference_set", "reference_digest", "details", "path_similarity", "determinate_layers", "layers", "confidence", "resamples", "caveats")
    class PerLayerEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: LayerValues
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[LayerValues, _Mapping]] = ...) -> None: ...
    class SummaryEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class RobustnessEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    LAYER_NAMES_FIELD_NUMBER: _ClassVar[int]
    PER_LAYER_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    ROBUSTNESS_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_SET_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    PATH_SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    DETERMINATE_LAYERS_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    RESAMPLES_FIELD_NUMBER: _ClassVar[int]
    CAVEATS_FIELD_NUMBER: _ClassVar[int]
    layer_names: _containers.RepeatedScalarFieldContainer[str]
    per_layer: _containers.MessageMap[str, LayerValues]
    summary: _containers.ScalarMap[str, float]
    robustness: _containers.ScalarMap[str, float]
    reference_set: str
    reference_digest: str
    details: _struct_pb2.Struct
    path_similarity: Estimate
    determinate_layers: int
    layers: _containers.RepeatedCompositeFieldContainer[Estimate]
    confidence: float
    resamples: int
    caveats: _containers.RepeatedCompositeFieldContainer[_common_pb2.Caveat]
    def __init__(self, layer_names: _Optional[_Iterable[str]] = ..., per_layer: _Optional[_Mapping[str, LayerValues]] = ..., summary: _Optional[_Mapping[str, float]] = ..., robustness: _Optional[_Mapping[str, float]] = ..., reference_set: _Optional[str] = ..., reference_digest: _Optional[str] = ..., details: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., path_similarity: _Optional[_Union[Estimate, _Mapping]] = ..., determinate_layers: _Optional[int] = ..., layers: _Optional[_Iterable[_Union[Estimate, _Mapping]]] = ..., confidence: _Optional[float] = ..., resamples: _Optional[int] = ..., caveats: _Optional[_Iterable[_Union[_common_pb2.Caveat, _Mapping]]] = ...) -> None: ...

class Provenance(_message.Message):
    __slots__ = ("model", "model_digest", "config", "seed", "engine_version", "reference_set", "reference_digest", "cache_key")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_DIGEST_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    ENGINE_VERSION_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_SET_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    CACHE_KEY_FIELD_NUMBER: _ClassVar[int]
    model: str
    model_digest: str
    config: _common_pb2.GenerationConfig
    seed: int
    engine_version: str
    reference_set: str
    reference_digest: str
    cache_key: str
    def __init__(self, model: _Optional[str] = ..., model_digest: _Optional[str] = ..., config: _Optional[_Union[_common_pb2.GenerationConfig, _Mapping]] = ..., seed: _Optional[int] = ..., engine_version: _Optional[str] = ..., reference_set: _Optional[str] = ..., reference_digest: _Optional[str] = ..., cache_key: _Optional[str] = ...) -> None: ...

class Prototype(_message.Message):
    __slots__ = ("name", "summary", "png", "scores", "provenance", "float_tensor")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    PNG_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    FLOAT_TENSOR_FIELD_NUMBER: _ClassVar[int]
    name: str
    summary: _job_pb2.PrototypeSummary
    png: bytes
    scores: Scores
    provenance: Provenance
    float_tensor: bytes
    def __init__(self, name: _Optional[str] = ..., summary: _Optional[_Union[_job_pb2.PrototypeSummary, _Mapping]] = ..., png: _Optional[bytes] = ..., scores: _Optional[_Union[Scores, _Mapping]] = ..., provenance: _Optional[_Union[Provenance, _Mapping]] = ..., float_tensor: _Optional[bytes] = ...) -> None: ...
