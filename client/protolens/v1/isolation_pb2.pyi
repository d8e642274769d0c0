from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class IsolationConfig(_message.Message):
    __slots__ = ("steps", "lr", "sparsity", "smoothness", "mask_stride", "samples", "background_contrast", "transforms", "progress_every")
    STEPS_FIELD_NUMBER: _ClassVar[int]
    LR_FIELD_NUMBER: _ClassVar[int]
    SPARSITY_FIELD_NUMBER: _ClassVar[int]
    SMOOTHNESS_FIELD_NUMBER: _ClassVar[int]
    MASK_STRIDE_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    BACKGROUND_CONTRAST_FIELD_NUMBER: _ClassVar[int]
    TRANSFORMS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_EVERY_FIELD_NUMBER: _ClassVar[int]
    steps: int
    lr: float
    sparsity: float
    smoothness: float
    mask_stride: int
    samples: int
    background_contrast: float
    transforms: str
    progress_every: int
    def __init__(self, steps: _Optional[int] = ..., lr: _Optional[float] = ..., sparsity: _Optional[float] = ..., smoothness: _Optional[float] = ..., mask_stride: _Optional[int] = ..., samples: _Optional[int] = ..., background_contrast: _Optional[float] = ..., transforms: _Optional[str] = ..., progress_every: _Optional[int] = ...) -> None: ...

class Isolation(_message.Message):
    __slots__ = ("config", "probability", "probability_kept", "probability_removed", "mask_mean")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_KEPT_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_REMOVED_FIELD_NUMBER: _ClassVar[int]
    MASK_MEAN_FIELD_NUMBER: _ClassVar[int]
    config: IsolationConfig
    probability: float
    probability_kept: float
    probability_removed: float
    mask_mean: float
    def __init__(self, config: _Optional[_Union[IsolationConfig, _Mapping]] = ..., probability: _Optional[float] = ..., probability_kept: _Optional[float] = ..., probability_removed: _Optional[float] = ..., mask_mean: _Optional[float] = ...) -> None: ...
