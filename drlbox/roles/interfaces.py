"""The small interfaces roles use to reach their peers, in-process or over gRPC alike."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, Sequence

import numpy as np


class WeightsUpdate(NamedTuple):
    """Weights newer than the caller's: the online set as one flat float32 vector (see
    `drlbox.ops.flat_weights.WeightLayout`), the aux set when it changed too, and the model's
    few non-float32 weights (which training never changes)."""

    version: int
    weights: np.ndarray
    aux_version: int
    aux: np.ndarray | None
    others: list = []


@dataclass
class ShardState:
    """What a shard starts or resumes from: its slices, its optimizer's variables, versions."""

    weights: np.ndarray                 # the slice of the flat weight vector
    version: int = 0
    aux: np.ndarray | None = None       # the slice of the auxiliary weights, if any
    aux_version: int = 0
    optimizer: list | None = None       # the optimizer's variables; None: a fresh optimizer
    updates: int = 0


class ShardReply(NamedTuple):
    """A shard's answer to an exchange: its version, and its weights when the caller needs
    them (the aux slice with them when it changed too); staleness of the applied gradient."""

    version: int
    weights: np.ndarray | None
    aux_version: int
    aux: np.ndarray | None
    staleness: int | None


class PushResult(NamedTuple):
    """The parameter server's answer to a push: its version, global steps, and stop or not."""

    version: int
    global_steps: int
    stop: bool


@dataclass
class WorkerReport:
    """What a worker tells the parameter server alongside its gradients."""

    worker: int = 0
    env_steps: int = 0
    episode_returns: list = field(default_factory=list)
    episode_lengths: list = field(default_factory=list)
    stats: dict = field(default_factory=dict)


@dataclass
class Evaluation:
    """Mean return of evaluation episodes at some global step."""

    global_steps: int
    mean_return: float
    episodes: int
    wall_seconds: float


@dataclass
class Checkpoint:
    """A saved model: where, after how many env steps, and how long after the first step."""

    path: str
    global_steps: int
    train_seconds: float


# The states a job can be in, as users see them (`status.state == "done"`). The wire carries
# the JobState enum; drlbox.rpc.states maps each name here to JOB_STATE_<NAME> and refuses
# anything else, so a state is added here and in parameter_server.proto together.
JOB_STATES = ("queued", "running", "done", "stopped", "cancelled", "failed")
FINISHED_STATES = ("done", "stopped", "cancelled", "failed")
# A rollout worker's or evaluator's state, served by its RoleStatus service (enum RoleState).
ROLE_STATES = ("idle", "starting", "running", "done")
# The roles that join a job (JoinJob, enum JoiningRole); only workers get a worker index.
JOINING_ROLES = ("worker", "evaluator")


@dataclass
class JobStatus:
    """Progress of a job as the parameter server sees it."""

    job_id: str
    state: str
    message: str = ""
    global_steps: int = 0
    train_steps: int = 0
    updates: int = 0
    version: int = 0
    episodes: int = 0
    recent_return: float = float("nan")
    steps_per_sec: float = 0.0
    wall_seconds: float = 0.0
    train_seconds: float = 0.0
    evaluations: list = field(default_factory=list)
    checkpoints: list = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    recent_returns: list = field(default_factory=list)   # the last <= 100 training episodes
    resumed_from_steps: int = 0     # > 0 when a restarted parameter server resumed the job
    queue_position: int = 0         # 1-based while queued in a cluster
    algorithm: str = ""

    @property
    def running(self) -> bool:
        """True until the job is done or stopped."""
        return self.state == "running"

    def to_dict(self) -> dict:
        """Plain data for JSON."""
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(data: dict) -> "JobStatus":
        """Inverse of `to_dict`."""
        data = dict(data)
        data["evaluations"] = [Evaluation(**e) for e in data.get("evaluations", [])]
        data["checkpoints"] = [Checkpoint(**c) for c in data.get("checkpoints", [])]
        return JobStatus(**data)

    @property
    def finished(self) -> bool:
        """True once the job will not run (any more): done, stopped, cancelled or failed."""
        return self.state in FINISHED_STATES


class ReplaySample(NamedTuple):
    """Rollout lists drawn from replay, their keys and importance weights."""

    lists: list
    keys: np.ndarray
    weights: np.ndarray


class ParameterPeer(Protocol):
    """The parameter server as a rollout worker or evaluator sees it."""

    def get_weights(self, newer_than: int, aux_newer_than: int = -1) -> WeightsUpdate | None:
        """Weights if the server's version is newer than `newer_than`, else None."""

    def push_and_pull(self, gradient: np.ndarray | None, base_version: int,
                      report: WorkerReport, newer_than: int,
                      aux_newer_than: int = -1) -> tuple[PushResult, WeightsUpdate | None]:
        """Apply a flat, clipped gradient (None: only report progress) and, in the same round
        trip, get the weights if the caller's are too old (see `max_staleness`) unless the
        job stops."""

    def report_evaluation(self, global_steps: int, returns: Sequence[float],
                          weights_version: int | None = None) -> PushResult:
        """Record evaluation returns measured on weights of `global_steps` (pulled at
        `weights_version`: when they reach target_return, those weights are the final model);
        raises `drlbox.roles.limits.OutOfRange` when the job has not reached `global_steps`
        (e.g. it resumed from an earlier checkpoint meanwhile)."""

    def status(self) -> JobStatus:
        """The job's progress."""


class ReplayPeer(Protocol):
    """The replay server as a rollout worker sees it."""

    def insert(self, lists: Sequence[dict]) -> None:
        """Add rollout lists."""

    def sample(self, batch_size: int) -> ReplaySample | None:
        """A batch of lists, or None while the memory holds fewer than minlen."""

    def update_priorities(self, keys: np.ndarray, priorities: np.ndarray) -> None:
        """New priorities for sampled lists (prioritized replay)."""
