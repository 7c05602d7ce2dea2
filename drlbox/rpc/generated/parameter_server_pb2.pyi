from drlbox.rpc.generated import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JoiningRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOINING_ROLE_UNSPECIFIED: _ClassVar[JoiningRole]
    JOINING_ROLE_WORKER: _ClassVar[JoiningRole]
    JOINING_ROLE_EVALUATOR: _ClassVar[JoiningRole]

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_DONE: _ClassVar[JobState]
    JOB_STATE_STOPPED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
JOINING_ROLE_UNSPECIFIED: JoiningRole
JOINING_ROLE_WORKER: JoiningRole
JOINING_ROLE_EVALUATOR: JoiningRole
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_DONE: JobState
JOB_STATE_STOPPED: JobState
JOB_STATE_CANCELLED: JobState
JOB_STATE_FAILED: JobState

class RunningJobRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class JoinJobRequest(_message.Message):
    __slots__ = ("job_id", "python_version", "role")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PYTHON_VERSION_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    python_version: str
    role: JoiningRole
    def __init__(self, job_id: _Optional[str] = ..., python_version: _Optional[str] = ..., role: _Optional[_Union[JoiningRole, str]] = ...) -> None: ...

class ShardInfo(_message.Message):
    __slots__ = ("address", "start", "stop")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    address: str
    start: int
    stop: int
    def __init__(self, address: _Optional[str] = ..., start: _Optional[int] = ..., stop: _Optional[int] = ...) -> None: ...

class RunningJob(_message.Message):
    __slots__ = ("job_id", "config_json", "shards", "rollout_spec_json")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_SPEC_JSON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    config_json: str
    shards: _containers.RepeatedCompositeFieldContainer[ShardInfo]
    rollout_spec_json: str
    def __init__(self, job_id: _Optional[str] = ..., config_json: _Optional[str] = ..., shards: _Optional[_Iterable[_Union[ShardInfo, _Mapping]]] = ..., rollout_spec_json: _Optional[str] = ...) -> None: ...

class JobChunk(_message.Message):
    __slots__ = ("job", "makers", "worker_index")
    JOB_FIELD_NUMBER: _ClassVar[int]
    MAKERS_FIELD_NUMBER: _ClassVar[int]
    WORKER_INDEX_FIELD_NUMBER: _ClassVar[int]
    job: RunningJob
    makers: bytes
    worker_index: int
    def __init__(self, job: _Optional[_Union[RunningJob, _Mapping]] = ..., makers: _Optional[bytes] = ..., worker_index: _Optional[int] = ...) -> None: ...

class ShardsRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class ShardMap(_message.Message):
    __slots__ = ("shards", "complete")
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    shards: _containers.RepeatedCompositeFieldContainer[ShardInfo]
    complete: bool
    def __init__(self, shards: _Optional[_Iterable[_Union[ShardInfo, _Mapping]]] = ..., complete: _Optional[bool] = ...) -> None: ...

class WorkerReport(_message.Message):
    __slots__ = ("worker", "env_steps", "episode_returns", "episode_lengths", "stats")
    class StatsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    WORKER_FIELD_NUMBER: _ClassVar[int]
    ENV_STEPS_FIELD_NUMBER: _ClassVar[int]
    EPISODE_RETURNS_FIELD_NUMBER: _ClassVar[int]
    EPISODE_LENGTHS_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    worker: int
    env_steps: int
    episode_returns: _containers.RepeatedScalarFieldContainer[float]
    episode_lengths: _containers.RepeatedScalarFieldContainer[int]
    stats: _containers.ScalarMap[str, float]
    def __init__(self, worker: _Optional[int] = ..., env_steps: _Optional[int] = ..., episode_returns: _Optional[_Iterable[float]] = ..., episode_lengths: _Optional[_Iterable[int]] = ..., stats: _Optional[_Mapping[str, float]] = ...) -> None: ...

class PushReply(_message.Message):
    __slots__ = ("version", "global_steps", "stop")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    version: int
    global_steps: int
    stop: bool
    def __init__(self, version: _Optional[int] = ..., global_steps: _Optional[int] = ..., stop: _Optional[bool] = ...) -> None: ...

class RequestHeader(_message.Message):
    __slots__ = ("job_id", "shard", "base_version", "report", "newer_than", "aux_newer_than", "pull", "gradient_values", "gradient_bfloat16")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    BASE_VERSION_FIELD_NUMBER: _ClassVar[int]
    REPORT_FIELD_NUMBER: _ClassVar[int]
    NEWER_THAN_FIELD_NUMBER: _ClassVar[int]
    AUX_NEWER_THAN_FIELD_NUMBER: _ClassVar[int]
    PULL_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_VALUES_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_BFLOAT16_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    shard: int
    base_version: int
    report: WorkerReport
    newer_than: int
    aux_newer_than: int
    pull: bool
    gradient_values: int
    gradient_bfloat16: bool
    def __init__(self, job_id: _Optional[str] = ..., shard: _Optional[int] = ..., base_version: _Optional[int] = ..., report: _Optional[_Union[WorkerReport, _Mapping]] = ..., newer_than: _Optional[int] = ..., aux_newer_than: _Optional[int] = ..., pull: _Optional[bool] = ..., gradient_values: _Optional[int] = ..., gradient_bfloat16: _Optional[bool] = ...) -> None: ...

class ExchangeRequest(_message.Message):
    __slots__ = ("header", "data", "pad")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    PAD_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    data: bytes
    pad: bytes
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., data: _Optional[bytes] = ..., pad: _Optional[bytes] = ...) -> None: ...

class ReplyHeader(_message.Message):
    __slots__ = ("push", "version", "aux_version", "weight_values", "aux_values", "others")
    PUSH_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    AUX_VERSION_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_VALUES_FIELD_NUMBER: _ClassVar[int]
    AUX_VALUES_FIELD_NUMBER: _ClassVar[int]
    OTHERS_FIELD_NUMBER: _ClassVar[int]
    push: PushReply
    version: int
    aux_version: int
    weight_values: int
    aux_values: int
    others: _tensor_pb2.TensorList
    def __init__(self, push: _Optional[_Union[PushReply, _Mapping]] = ..., version: _Optional[int] = ..., aux_version: _Optional[int] = ..., weight_values: _Optional[int] = ..., aux_values: _Optional[int] = ..., others: _Optional[_Union[_tensor_pb2.TensorList, _Mapping]] = ...) -> None: ...

class ExchangeReply(_message.Message):
    __slots__ = ("header", "data", "pad")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    PAD_FIELD_NUMBER: _ClassVar[int]
    header: ReplyHeader
    data: bytes
    pad: bytes
    def __init__(self, header: _Optional[_Union[ReplyHeader, _Mapping]] = ..., data: _Optional[bytes] = ..., pad: _Optional[bytes] = ...) -> None: ...

class JoinShardRequest(_message.Message):
    __slots__ = ("address", "port")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    address: str
    port: int
    def __init__(self, address: _Optional[str] = ..., port: _Optional[int] = ...) -> None: ...

class StateChunk(_message.Message):
    __slots__ = ("job_id", "shard", "settings_json", "address", "data")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_JSON_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    shard: int
    settings_json: str
    address: str
    data: bytes
    def __init__(self, job_id: _Optional[str] = ..., shard: _Optional[int] = ..., settings_json: _Optional[str] = ..., address: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class ShardReadyRequest(_message.Message):
    __slots__ = ("job_id", "shard", "address")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    shard: int
    address: str
    def __init__(self, job_id: _Optional[str] = ..., shard: _Optional[int] = ..., address: _Optional[str] = ...) -> None: ...

class ShardReadyReply(_message.Message):
    __slots__ = ("accepted",)
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    def __init__(self, accepted: _Optional[bool] = ...) -> None: ...

class SnapshotRequest(_message.Message):
    __slots__ = ("job_id", "shard")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    shard: int
    def __init__(self, job_id: _Optional[str] = ..., shard: _Optional[int] = ...) -> None: ...

class EvaluationReport(_message.Message):
    __slots__ = ("job_id", "global_steps", "returns", "weights_version")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    RETURNS_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_VERSION_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    global_steps: int
    returns: _containers.RepeatedScalarFieldContainer[float]
    weights_version: int
    def __init__(self, job_id: _Optional[str] = ..., global_steps: _Optional[int] = ..., returns: _Optional[_Iterable[float]] = ..., weights_version: _Optional[int] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class StopRequest(_message.Message):
    __slots__ = ("job_id", "reason")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    reason: str
    def __init__(self, job_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class Evaluation(_message.Message):
    __slots__ = ("global_steps", "mean_return", "episodes", "wall_seconds")
    GLOBAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    MEAN_RETURN_FIELD_NUMBER: _ClassVar[int]
    EPISODES_FIELD_NUMBER: _ClassVar[int]
    WALL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    global_steps: int
    mean_return: float
    episodes: int
    wall_seconds: float
    def __init__(self, global_steps: _Optional[int] = ..., mean_return: _Optional[float] = ..., episodes: _Optional[int] = ..., wall_seconds: _Optional[float] = ...) -> None: ...

class Checkpoint(_message.Message):
    __slots__ = ("path", "global_steps", "train_seconds")
    PATH_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    path: str
    global_steps: int
    train_seconds: float
    def __init__(self, path: _Optional[str] = ..., global_steps: _Optional[int] = ..., train_seconds: _Optional[float] = ...) -> None: ...

class JobStatus(_message.Message):
    __slots__ = ("job_id", "state", "message", "global_steps", "train_steps", "updates", "version", "episodes", "recent_return", "steps_per_sec", "wall_seconds", "evaluations", "checkpoints", "stats", "train_seconds", "recent_returns", "resumed_from_steps", "queue_position", "algorithm")
    class StatsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_STEPS_FIELD_NUMBER: _ClassVar[int]
    UPDATES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EPISODES_FIELD_NUMBER: _ClassVar[int]
    RECENT_RETURN_FIELD_NUMBER: _ClassVar[int]
    STEPS_PER_SEC_FIELD_NUMBER: _ClassVar[int]
    WALL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    EVALUATIONS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RECENT_RETURNS_FIELD_NUMBER: _ClassVar[int]
    RESUMED_FROM_STEPS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_POSITION_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    state: JobState
    message: str
    global_steps: int
    train_steps: int
    updates: int
    version: int
    episodes: int
    recent_return: float
    steps_per_sec: float
    wall_seconds: float
    evaluations: _containers.RepeatedCompositeFieldContainer[Evaluation]
    checkpoints: _containers.RepeatedCompositeFieldContainer[Checkpoint]
    stats: _containers.ScalarMap[str, float]
    train_seconds: float
    recent_returns: _containers.RepeatedScalarFieldContainer[float]
    resumed_from_steps: int
    queue_position: int
    algorithm: str
    def __init__(self, job_id: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., message: _Optional[str] = ..., global_steps: _Optional[int] = ..., train_steps: _Optional[int] = ..., updates: _Optional[int] = ..., version: _Optional[int] = ..., episodes: _Optional[int] = ..., recent_return: _Optional[float] = ..., steps_per_sec: _Optional[float] = ..., wall_seconds: _Optional[float] = ..., evaluations: _Optional[_Iterable[_Union[Evaluation, _Mapping]]] = ..., checkpoints: _Optional[_Iterable[_Union[Checkpoint, _Mapping]]] = ..., stats: _Optional[_Mapping[str, float]] = ..., train_seconds: _Optional[float] = ..., recent_returns: _Optional[_Iterable[float]] = ..., resumed_from_steps: _Optional[int] = ..., queue_position: _Optional[int] = ..., algorithm: _Optional[str] = ...) -> None: ...
