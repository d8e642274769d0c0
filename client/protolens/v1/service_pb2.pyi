from protolens.v1 import common_pb2 as _common_pb2
from protolens.v1 import isolation_pb2 as _isolation_pb2
from protolens.v1 import job_pb2 as _job_pb2
from protolens.v1 import model_pb2 as _model_pb2
from protolens.v1 import prototype_pb2 as _prototype_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CREATE_OUTCOME_UNSPECIFIED: _ClassVar[CreateOutcome]
    CREATE_OUTCOME_QUEUED: _ClassVar[CreateOutcome]
    CREATE_OUTCOME_CACHE_HIT: _ClassVar[CreateOutcome]
    CREATE_OUTCOME_DEDUP_JOIN: _ClassVar[CreateOutcome]
    CREATE_OUTCOME_IDEMPOTENT_REPLAY: _ClassVar[CreateOutcome]
CREATE_OUTCOME_UNSPECIFIED: CreateOutcome
CREATE_OUTCOME_QUEUED: CreateOutcome
CREATE_OUTCOME_CACHE_HIT: CreateOutcome
CREATE_OUTCOME_DEDUP_JOIN: CreateOutcome
CREATE_OUTCOME_IDEMPOTENT_REPLAY: CreateOutcome

class CreatePrototypeJobRequest(_message.Message):
    __slots__ = ("model", "targets", "prototypes_per_target", "config", "seed", "reference_set", "priority", "request_id")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    PROTOTYPES_PER_TARGET_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_SET_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    model: str
    targets: _containers.RepeatedCompositeFieldContainer[_common_pb2.Target]
    prototypes_per_target: int
    config: _common_pb2.GenerationConfig
    seed: int
    reference_set: str
    priority: _common_pb2.Priority
    request_id: str
    def __init__(self, model: _Optional[str] = ..., targets: _Optional[_Iterable[_Union[_common_pb2.Target, _Mapping]]] = ..., prototypes_per_target: _Optional[int] = ..., config: _Optional[_Union[_common_pb2.GenerationConfig, _Mapping]] = ..., seed: _Optional[int] = ..., reference_set: _Optional[str] = ..., priority: _Optional[_Union[_common_pb2.Priority, str]] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreatePrototypeJobResponse(_message.Message):
    __slots__ = ("job", "outcome")
    JOB_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    job: _job_pb2.Job
    outcome: CreateOutcome
    def __init__(self, job: _Optional[_Union[_job_pb2.Job, _Mapping]] = ..., outcome: _Optional[_Union[CreateOutcome, str]] = ...) -> None: ...

class CreateIsolationJobRequest(_message.Message):
    __slots__ = ("model", "image", "target", "config", "seed", "priority", "request_id")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    model: str
    image: bytes
    target: _common_pb2.ClassRef
    config: _isolation_pb2.IsolationConfig
    seed: int
    priority: _common_pb2.Priority
    request_id: str
    def __init__(self, model: _Optional[str] = ..., image: _Optional[bytes] = ..., target: _Optional[_Union[_common_pb2.ClassRef, _Mapping]] = ..., config: _Optional[_Union[_isolation_pb2.IsolationConfig, _Mapping]] = ..., seed: _Optional[int] = ..., priority: _Optional[_Union[_common_pb2.Priority, str]] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateIsolationJobResponse(_message.Message):
    __slots__ = ("job", "outcome")
    JOB_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    job: _job_pb2.Job
    outcome: CreateOutcome
    def __init__(self, job: _Optional[_Union[_job_pb2.Job, _Mapping]] = ..., outcome: _Optional[_Union[CreateOutcome, str]] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: _job_pb2.Job
    def __init__(self, job: _Optional[_Union[_job_pb2.Job, _Mapping]] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[_job_pb2.Job]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[_job_pb2.Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class CancelJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: _job_pb2.Job
    def __init__(self, job: _Optional[_Union[_job_pb2.Job, _Mapping]] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("name", "cursor")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    name: str
    cursor: str
    def __init__(self, name: _Optional[str] = ..., cursor: _Optional[str] = ...) -> None: ...

class WatchJobResponse(_message.Message):
    __slots__ = ("state", "progress", "message", "cursor")
    STATE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    state: _job_pb2.JobState
    progress: _job_pb2.Progress
    message: str
    cursor: str
    def __init__(self, state: _Optional[_Union[_job_pb2.JobState, str]] = ..., progress: _Optional[_Union[_job_pb2.Progress, _Mapping]] = ..., message: _Optional[str] = ..., cursor: _Optional[str] = ...) -> None: ...

class GetPrototypeRequest(_message.Message):
    __slots__ = ("name", "include_float", "preview_channels")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_FLOAT_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_CHANNELS_FIELD_NUMBER: _ClassVar[int]
    name: str
    include_float: bool
    preview_channels: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., include_float: _Optional[bool] = ..., preview_channels: _Optional[_Iterable[int]] = ...) -> None: ...

class GetPrototypeResponse(_message.Message):
    __slots__ = ("prototype",)
    PROTOTYPE_FIELD_NUMBER: _ClassVar[int]
    prototype: _prototype_pb2.Prototype
    def __init__(self, prototype: _Optional[_Union[_prototype_pb2.Prototype, _Mapping]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "next_page_token")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[_model_pb2.Model]
    next_page_token: str
    def __init__(self, models: _Optional[_Iterable[_Union[_model_pb2.Model, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: _model_pb2.Model
    def __init__(self, model: _Optional[_Union[_model_pb2.Model, _Mapping]] = ...) -> None: ...
