"""The replay role: a replay memory behind the small interface rollout workers use."""
from __future__ import annotations

import threading
from typing import Callable, Sequence

import numpy as np

from drlbox.replay import ReplayNotReady, UniformReplay
from drlbox.roles.interfaces import ReplaySample


class ReplayService:
    """Insert and sample rollout lists; `sample` answers None while the memory is not ready."""

    def __init__(self, memory: UniformReplay):
        self.memory = memory

    def insert(self, lists: Sequence[dict]) -> None:
        """Add rollout lists."""
        self.memory.extend(lists)

    def sample(self, batch_size: int) -> ReplaySample | None:
        """A batch of lists with keys and importance weights, or None when not ready."""
        try:
            drawn = self.memory.sample(batch_size)
        except ReplayNotReady:
            return None
        return ReplaySample(list(drawn.items), drawn.keys, drawn.weights)

    def update_priorities(self, keys: np.ndarray, priorities: np.ndarray) -> None:
        """New priorities for sampled lists (no-op for uniform replay)."""
        self.memory.update_priorities(keys, priorities)

    def __len__(self) -> int:
        return len(self.memory)

    @property
    def ready(self) -> bool:
        """True once the memory holds minlen lists."""
        return self.memory.ready


class ReplayTable:
    """The replay memory of the job being trained; another job's first call gets a fresh one.

    `make_memory(job_id)` builds the memory for a job this table has not seen, or returns None
    when that job is unknown (locally there is only ever the one job).
    """

    def __init__(self, make_memory: Callable[[str], UniformReplay | None],
                 job_id: str | None = None, memory: UniformReplay | None = None):
        self._make_memory = make_memory
        self._lock = threading.Lock()
        self.job_id = job_id
        self._service = ReplayService(memory) if memory is not None else None

    def for_job(self, job_id: str) -> ReplayService | None:
        """The job's replay service, or None when job_id is not a job this server can hold."""
        with self._lock:
            if job_id != self.job_id:
                memory = self._make_memory(job_id)
                if memory is None:
                    return None
                self.job_id, self._service = job_id, ReplayService(memory)
            return self._service
