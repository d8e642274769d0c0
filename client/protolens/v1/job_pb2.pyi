import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from protolens.v1 import common_pb2 as _common_pb2
from protolens.v1 import isolation_pb2 as _isolation_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]

class JobPhase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_PHASE_UNSPECIFIED: _ClassVar[JobPhase]
    JOB_PHASE_LOADING_MODEL: _ClassVar[JobPhase]
    JOB_PHASE_PREPARING: _ClassVar[JobPhase]
    JOB_PHASE_OPTIMISING: _ClassVar[JobPhase]
    JOB_PHASE_SCORING: _ClassVar[JobPhase]
    JOB_PHASE_STORING: _ClassVar[JobPhase]
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState
JOB_PHASE_UNSPECIFIED: JobPhase
JOB_PHASE_LOADING_MODEL: JobPhase
JOB_PHASE_PREPARING: JobPhase
JOB_PHASE_OPTIMISING: JobPhase
JOB_PHASE_SCORING: JobPhase
JOB_PHASE_STORING: JobPhase

class Progress(_message.Message):
    __slots__ = ("step", "total_steps", "best_probability", "fraction", "phase", "phase_message", "update_time")
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    BEST_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    FRACTION_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    PHASE_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    step: int
    total_steps: int
    best_probability: float
    fraction: float
    phase: JobPhase
    phase_message: str
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, step: _Optional[int] = ..., total_steps: _Optional[int] = ..., best_probability: _Optional[float] = ..., fraction: _Optional[float] = ..., phase: _Optional[_Union[JobPhase, str]] = ..., phase_message: _Optional[str] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("name", "state", "model", "model_digest", "targets", "prototypes_per_target", "config", "seed", "reference_set", "priority", "request_id", "progress", "create_time", "start_time", "end_time", "error", "cache_hit", "attempts", "prototypes", "isolation")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_DIGEST_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    PROTOTYPES_PER_TARGET_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_SET_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CACHE_HIT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    PROTOTYPES_FIELD_NUMBER: _ClassVar[int]
    ISOLATION_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: JobState
    model: str
    model_digest: str
    targets: _containers.RepeatedCompositeFieldContainer[_common_pb2.ResolvedTarget]
    prototypes_per_target: int
    config: _common_pb2.GenerationConfig
    seed: int
    reference_set: str
    priority: _common_pb2.Priority
    request_id: str
    progress: Progress
    create_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    error: _common_pb2.Status
    cache_hit: bool
    attempts: int
    prototypes: _containers.RepeatedCompositeFieldContainer[PrototypeSummary]
    isolation: _isolation_pb2.Isolation
    def __init__(self, name: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., model: _Optional[str] = ..., model_digest: _Optional[str] = ..., targets: _Optional[_Iterable[_Union[_common_pb2.ResolvedTarget, _Mapping]]] = ..., prototypes_per_target: _Optional[int] = ..., config: _Optional[_Union[_common_pb2.GenerationConfig, _Mapping]] = ..., seed: _Optional[int] = ..., reference_set: _Optional[str] = ..., priority: _Optional[_Union[_common_pb2.Priority, str]] = ..., request_id: _Optional[str] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., error: _Optional[_Union[_common_pb2.Status, _Mapping]] = ..., cache_hit: _Optional[bool] = ..., attempts: _Optional[int] = ..., prototypes: _Optional[_Iterable[_Union[PrototypeSummary, _Mapping]]] = ..., isolation: _Optional[_Union[_isolation_pb2.Isolation, _Mapping]] = ...) -> None: ...

class PrototypeSummary(_message.Message):
    __slots__ = ("name", "index", "target", "target_index", "probability", "logit", "top5", "steps", "seed", "has_scores", "lr", "stop_reason", "multi_label", "caveats")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    TARGET_INDEX_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    LOGIT_FIELD_NUMBER: _ClassVar[int]
    TOP5_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    HAS_SCORES_FIELD_NUMBER: _ClassVar[int]
    LR_FIELD_NUMBER: _ClassVar[int]
    STOP_REASON_FIELD_NUMBER: _ClassVar[int]
    MULTI_LABEL_FIELD_NUMBER: _ClassVar[int]
    CAVEATS_FIELD_NUMBER: _ClassVar[int]
    name: str
    index: int
    target: _common_pb2.ResolvedTarget
    target_index: int
    probability: float
    logit: float
    top5: _containers.RepeatedCompositeFieldContainer[_common_pb2.ClassProbability]
    steps: int
    seed: int
    has_scores: bool
    lr: float
    stop_reason: str
    multi_label: bool
    caveats: _containers.RepeatedCompositeFieldContainer[_common_pb2.Caveat]
    def __init__(self, name: _Optional[str] = ..., index: _Optional[int] = ..., target: _Optional[_Union[_common_pb2.ResolvedTarget, _Mapping]] = ..., target_index: _Optional[int] = ..., probability: _Optional[float] = ..., logit: _Optional[float] = ..., top5: _Optional[_Iterable[_Union[_common_pb2.ClassProbability, _Mapping]]] = ..., steps: _Optional[int] = ..., seed: _Optional[int] = ..., has_scores: _Optional[bool] = ..., lr: _Optional[float] = ..., stop_reason: _Optional[str] = ..., multi_label: _Optional[bool] = ..., caveats: _Optional[_Iterable[_Union[_common_pb2.Caveat, _Mapping]]] = ...) -> None: ...
