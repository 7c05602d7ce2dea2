"""Job tables: what a parameter-server process serves, as its gRPC servicer asks it.

Every table answers `current()` (the running job's parameter server, shards or not),
`running()` (job and server once every slice is served), `server_for(job_id)`,
`slice_for(job_id, index)` (what serves that slice here) and `next_worker_index(job_id)`. A
parameter server's table is `drlbox.roles.job_host.JobHost` (local runs and clusters alike);
here is a shard process's.
"""
from __future__ import annotations

import threading
from typing import Any

from drlbox.roles.interfaces import PushResult


class ShardTable:
    """The job table of a shard process: the one slice it serves, if any."""

    def __init__(self):
        self._served: tuple | None = None     # (job_id, index, _ServedSlice)
        self._lock = threading.Lock()

    def serve(self, job_id: str, index: int, shard: Any) -> None:
        """Serve slice `index` of job_id with `shard` (a ParameterShard)."""
        with self._lock:
            self._served = (job_id, index, _ServedSlice(shard))

    def clear(self) -> None:
        """Serve nothing."""
        with self._lock:
            self._served = None

    def served(self) -> tuple[str, int, Any] | None:
        """(job id, slice index, ParameterShard) served now, if any (for the metrics)."""
        with self._lock:
            served = self._served
        return None if served is None else (served[0], served[1], served[2].shard)

    def current(self) -> None:
        """A shard process runs no job of its own."""
        return None

    def running(self) -> None:
        return None

    def server_for(self, job_id: str) -> None:
        return None

    def slice_for(self, job_id: str, index: int):
        """The served slice when it is slice `index` of job_id."""
        with self._lock:
            served = self._served
        if served is not None and served[:2] == (job_id, index):
            return served[2]
        return None

    def next_worker_index(self, job_id: str) -> int:
        return 0


class _ServedSlice:
    """A shard process's slice, answering exchanges as the coordinator's slice 0 does."""

    others: list = []

    def __init__(self, shard: Any):
        self.shard, self.size = shard, shard.size

    def exchange(self, gradient, base_version, report, newer_than, aux_newer_than, pull):
        reply = self.shard.exchange(gradient, base_version, newer_than, aux_newer_than, pull)
        return PushResult(reply.version, 0, False), reply

    def snapshot(self):
        return self.shard.snapshot()
