"""The replay role: a replay memory behind the small interface rollout workers use.

Inserts are checked against the job's rollout spec (the names, dtypes and shapes of the lists
its workers make) and bounded in count and bytes; sample and priority sizes are bounded by the
memory: a bad call is refused whole and changes nothing.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Sequence

import numpy as np

from drlbox.ops.rollout import check_list, max_list_bytes
from drlbox.replay import ReplayNotReady, UniformReplay
from drlbox.roles.interfaces import ReplaySample
from drlbox.roles.limits import OutOfRange, Refused, TooLarge, need

INSERT_OVERHEAD_BYTES = 64 << 10     # message framing around the arrays, generously


class ReplayService:
    """Insert and sample rollout lists; `sample` answers None while the memory is not ready.

    Without a `spec` (tests, hand-made memories) inserts are not checked.
    """

    def __init__(self, memory: UniformReplay, spec: dict | None = None,
                 rollout_maxlen: int = 1, max_lists: int = 1024):
        self.memory = memory
        self.spec, self.rollout_maxlen, self.max_lists = spec, rollout_maxlen, max_lists
        self.max_insert_bytes = (INSERT_OVERHEAD_BYTES + max_lists * (
            max_list_bytes(spec, rollout_maxlen) + 1024) if spec else None)
        self.inserted = self.sampled = 0      # lists inserted, batches sampled (metrics)
        self._counting = threading.Lock()     # calls arrive on several server threads

    def insert(self, lists: Sequence[dict]) -> None:
        """Add rollout lists, all or none."""
        need(1 <= len(lists) <= self.max_lists, "lists",
             f"an insert holds 1 to {self.max_lists} lists, got {len(lists)}", TooLarge)
        if self.spec is not None:
            for i, rollout in enumerate(lists):
                try:
                    check_list(rollout, self.spec, self.rollout_maxlen)
                except ValueError as err:
                    raise Refused(f"lists[{i}]: {err}") from None
        self.memory.extend(lists)
        with self._counting:
            self.inserted += len(lists)

    def sample(self, batch_size: int) -> ReplaySample | None:
        """A batch of lists with keys and importance weights, or None when not ready."""
        need(1 <= batch_size <= self.max_lists, "batch_size",
             f"must be between 1 and {self.max_lists} (lists per batch this job may ask "
             f"for), got {batch_size}", OutOfRange)
        try:
            drawn = self.memory.sample(batch_size)
        except ReplayNotReady:
            return None
        with self._counting:
            self.sampled += 1
        return ReplaySample(list(drawn.items), drawn.keys, drawn.weights)

    def update_priorities(self, keys: np.ndarray, priorities: np.ndarray) -> None:
        """New priorities for sampled lists (no-op for uniform replay)."""
        need(len(keys) <= self.memory.maxlen, "keys",
             f"at most the memory's maxlen {self.memory.maxlen}, got {len(keys)}", TooLarge)
        try:
            self.memory.update_priorities(keys, priorities)
        except ValueError as err:
            raise Refused(f"priorities: {err}") from None

    def __len__(self) -> int:
        return len(self.memory)

    @property
    def ready(self) -> bool:
        """True once the memory holds minlen lists."""
        return self.memory.ready


def service_for(settings: dict[str, Any]) -> ReplayService:
    """A fresh replay service for a job, from its plain settings (and rollout spec)."""
    from drlbox.config import REPLAY_DEFAULTS
    from drlbox.replay import make_replay

    memory = make_replay(settings["replay_type"], seed=settings.get("seed"),
                         **{**REPLAY_DEFAULTS, **settings.get("replay_kwargs", {})})
    return ReplayService(memory, settings.get("rollout_spec"), settings["rollout_maxlen"],
                         max(64, 4 * settings["batch_size"]))


class ReplayTable:
    """The replay memory of the job being trained; another job's first call gets a fresh one.

    `make_service(job_id)` builds the service for a job this table has not seen, or returns
    None when that job is not the one running.
    """

    def __init__(self, make_service: Callable[[str], ReplayService | None],
                 job_id: str | None = None, service: ReplayService | None = None):
        self._make_service = make_service
        self._lock = threading.Lock()
        self.job_id = job_id
        self._service = service

    def for_job(self, job_id: str) -> ReplayService | None:
        """The job's replay service, or None when job_id is not a job this server can hold."""
        with self._lock:
            if job_id != self.job_id:
                service = self._make_service(job_id)
                if service is None:
                    return None
                self.job_id, self._service = job_id, service
            return self._service

    def current(self) -> tuple[str, ReplayService] | None:
        """(job id, service) of the memory held now, if any (for the metrics)."""
        with self._lock:
            return None if self._service is None else (self.job_id, self._service)
