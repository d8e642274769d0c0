import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from protolens.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CheckState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHECK_STATE_UNSPECIFIED: _ClassVar[CheckState]
    CHECK_STATE_RUNNING: _ClassVar[CheckState]
    CHECK_STATE_SUCCEEDED: _ClassVar[CheckState]
    CHECK_STATE_FAILED: _ClassVar[CheckState]
    CHECK_STATE_CANCELLED: _ClassVar[CheckState]
CHECK_STATE_UNSPECIFIED: CheckState
CHECK_STATE_RUNNING: CheckState
CHECK_STATE_SUCCEEDED: CheckState
CHECK_STATE_FAILED: CheckState
CHECK_STATE_CANCELLED: CheckState

class Check(_message.Message):
    __slots__ = ("name", "state", "model", "baseline", "progress", "message", "passed", "failed_rules", "flagged_classes", "jobs", "cache_hits", "error", "create_time", "end_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    FAILED_RULES_FIELD_NUMBER: _ClassVar[int]
    FLAGGED_CLASSES_FIELD_NUMBER: _ClassVar[int]
    JOBS_FIELD_NUMBER: _ClassVar[int]
    CACHE_HITS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: CheckState
    model: str
    baseline: str
    progress: float
    message: str
    passed: bool
    failed_rules: _containers.RepeatedScalarFieldContainer[str]
    flagged_classes: _containers.RepeatedScalarFieldContainer[str]
    jobs: int
    cache_hits: int
    error: _common_pb2.Status
    create_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., state: _Optional[_Union[CheckState, str]] = ..., model: _Optional[str] = ..., baseline: _Optional[str] = ..., progress: _Optional[float] = ..., message: _Optional[str] = ..., passed: _Optional[bool] = ..., failed_rules: _Optional[_Iterable[str]] = ..., flagged_classes: _Optional[_Iterable[str]] = ..., jobs: _Optional[int] = ..., cache_hits: _Optional[int] = ..., error: _Optional[_Union[_common_pb2.Status, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class StartCheckRequest(_message.Message):
    __slots__ = ("model", "baseline", "classes", "config", "prototypes_per_class", "seed", "reference_set", "policy_yaml", "request_id")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    PROTOTYPES_PER_CLASS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_SET_FIELD_NUMBER: _ClassVar[int]
    POLICY_YAML_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    model: str
    baseline: str
    classes: _containers.RepeatedScalarFieldContainer[str]
    config: _common_pb2.GenerationConfig
    prototypes_per_class: int
    seed: int
    reference_set: str
    policy_yaml: str
    request_id: str
    def __init__(self, model: _Optional[str] = ..., baseline: _Optional[str] = ..., classes: _Optional[_Iterable[str]] = ..., config: _Optional[_Union[_common_pb2.GenerationConfig, _Mapping]] = ..., prototypes_per_class: _Optional[int] = ..., seed: _Optional[int] = ..., reference_set: _Optional[str] = ..., policy_yaml: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class StartCheckResponse(_message.Message):
    __slots__ = ("check",)
    CHECK_FIELD_NUMBER: _ClassVar[int]
    check: Check
    def __init__(self, check: _Optional[_Union[Check, _Mapping]] = ...) -> None: ...

class GetCheckRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetCheckResponse(_message.Message):
    __slots__ = ("check",)
    CHECK_FIELD_NUMBER: _ClassVar[int]
    check: Check
    def __init__(self, check: _Optional[_Union[Check, _Mapping]] = ...) -> None: ...

class ListChecksRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListChecksResponse(_message.Message):
    __slots__ = ("checks", "next_page_token")
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    checks: _containers.RepeatedCompositeFieldContainer[Check]
    next_page_token: str
    def __init__(self, checks: _Optional[_Iterable[_Union[Check, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelCheckRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class CancelCheckResponse(_message.Message):
    __slots__ = ("check",)
    CHECK_FIELD_NUMBER: _ClassVar[int]
    check: Check
    def __init__(self, check: _Optional[_Union[Check, _Mapping]] = ...) -> None: ...

class GetCheckReportRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetCheckReportResponse(_message.Message):
    __slots__ = ("html", "json")
    HTML_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    html: str
    json: str
    def __init__(self, html: _Optional[str] = ..., json: _Optional[str] = ...) -> None: ...
