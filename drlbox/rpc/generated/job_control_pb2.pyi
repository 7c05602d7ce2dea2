from drlbox.rpc.generated import parameter_server_pb2 as _parameter_server_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SubmitChunk(_message.Message):
    __slots__ = ("python_version", "algorithm", "config")
    PYTHON_VERSION_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    python_version: str
    algorithm: str
    config: bytes
    def __init__(self, python_version: _Optional[str] = ..., algorithm: _Optional[str] = ..., config: _Optional[bytes] = ...) -> None: ...

class JobRef(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class JobList(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[_parameter_server_pb2.JobStatus]
    def __init__(self, jobs: _Optional[_Iterable[_Union[_parameter_server_pb2.JobStatus, _Mapping]]] = ...) -> None: ...

class CheckpointRequest(_message.Message):
    __slots__ = ("job_id", "latest", "global_steps")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    LATEST_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    latest: bool
    global_steps: int
    def __init__(self, job_id: _Optional[str] = ..., latest: _Optional[bool] = ..., global_steps: _Optional[int] = ...) -> None: ...

class FileChunk(_message.Message):
    __slots__ = ("name", "global_steps", "data")
    NAME_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    name: str
    global_steps: int
    data: bytes
    def __init__(self, name: _Optional[str] = ..., global_steps: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...
