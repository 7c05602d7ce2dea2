from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RoleState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_STATE_UNSPECIFIED: _ClassVar[RoleState]
    ROLE_STATE_IDLE: _ClassVar[RoleState]
    ROLE_STATE_STARTING: _ClassVar[RoleState]
    ROLE_STATE_RUNNING: _ClassVar[RoleState]
    ROLE_STATE_DONE: _ClassVar[RoleState]
ROLE_STATE_UNSPECIFIED: RoleState
ROLE_STATE_IDLE: RoleState
ROLE_STATE_STARTING: RoleState
ROLE_STATE_RUNNING: RoleState
ROLE_STATE_DONE: RoleState

class RoleStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RoleStatusReply(_message.Message):
    __slots__ = ("role", "state", "job_id", "counters")
    class CountersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ROLE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    COUNTERS_FIELD_NUMBER: _ClassVar[int]
    role: str
    state: RoleState
    job_id: str
    counters: _containers.ScalarMap[str, float]
    def __init__(self, role: _Optional[str] = ..., state: _Optional[_Union[RoleState, str]] = ..., job_id: _Optional[str] = ..., counters: _Optional[_Mapping[str, float]] = ...) -> None: ...
