from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class ReplayChunk(_message.Message):
    __slots__ = ("job_id", "data")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    data: bytes
    def __init__(self, job_id: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class SampleRequest(_message.Message):
    __slots__ = ("job_id", "batch_size")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    batch_size: int
    def __init__(self, job_id: _Optional[str] = ..., batch_size: _Optional[int] = ...) -> None: ...

class PriorityUpdate(_message.Message):
    __slots__ = ("job_id", "keys", "priorities")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    PRIORITIES_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    keys: _containers.RepeatedScalarFieldContainer[int]
    priorities: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, job_id: _Optional[str] = ..., keys: _Optional[_Iterable[int]] = ..., priorities: _Optional[_Iterable[float]] = ...) -> None: ...

class ReplayInfo(_message.Message):
    __slots__ = ("size", "ready")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    size: int
    ready: bool
    def __init__(self, size: _Optional[int] = ..., ready: _Optional[bool] = ...) -> None: ...
