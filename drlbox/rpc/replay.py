"""gRPC service and client for the replay role (no TensorFlow on either side)."""
from __future__ import annotations

from typing import Any, AsyncIterator, Callable, Sequence

import grpc
import numpy as np

from drlbox.roles.interfaces import ReplaySample
from drlbox.roles.limits import NotFound, Refused, TooLarge
from drlbox.rpc import serde
from drlbox.rpc.handlers import Blocking, service_handler
from drlbox.rpc.generated import replay_pb2 as pb
from drlbox.rpc.generated import replay_pb2_grpc as pb_grpc
from drlbox.rpc.security import Security
from drlbox.rpc.server import make_channel

CALL_TIMEOUT = 120.0


class ReplayServicer:
    """Serves the replay memory of the running job (a `drlbox.roles.replay.ReplayTable`)."""

    def __init__(self, table):
        self.table = table
        self.blocking = Blocking(threads=4, name="replay")

    def _service(self, job_id: str):
        service = self.table.for_job(job_id)
        if service is None:
            raise NotFound(f"job {job_id[:100]!r} is not known here; this replay server holds "
                           f"job {self.table.job_id!r}")
        return service

    @staticmethod
    def _info(service) -> pb.ReplayInfo:
        return pb.ReplayInfo(size=len(service), ready=service.ready)

    def _insert(self, service, data: bytes) -> pb.ReplayInfo:
        try:
            lists, _, _ = serde.decode_rollouts(data)
        except ValueError as err:
            raise Refused(f"rollouts refused: {err}") from None
        service.insert(lists)
        return self._info(service)

    async def Insert(self, request_iterator, context) -> pb.ReplayInfo:
        """Rollout lists, chunked; refused as soon as they pass what the job can send."""
        pieces, size, service = [], 0, None
        async for chunk in request_iterator:
            if service is None:
                service = await self.blocking.run(self._service, chunk.job_id)
            size += len(chunk.data)
            limit = service.max_insert_bytes
            if limit is not None and size > limit:
                raise TooLarge(f"data: the lists are over the {limit} bytes this job's "
                               f"inserts can hold")
            pieces.append(chunk.data)
        if service is None:
            raise Refused("empty insert")
        return await self.blocking.run(self._insert, service, serde.join_chunks(pieces))

    def _sample(self, job_id: str, batch_size: int) -> bytes | None:
        service = self._service(job_id)
        if batch_size < 1:
            raise Refused(f"batch_size must be >= 1, got {batch_size}")
        sample = service.sample(batch_size)
        if sample is None:
            return None
        return serde.encode_rollouts(sample.lists, sample.keys, sample.weights)

    async def Sample(self, request, context) -> AsyncIterator[pb.ReplayChunk]:
        data = await self.blocking.run(self._sample, request.job_id, request.batch_size)
        if data is None:
            return
        for piece in serde.split_chunks(data):
            yield pb.ReplayChunk(job_id=request.job_id, data=piece)

    def _update(self, job_id: str, keys: list, priorities: list) -> pb.ReplayInfo:
        service = self._service(job_id)
        service.update_priorities(np.asarray(keys, np.int64), np.asarray(priorities, np.float64))
        return self._info(service)

    async def UpdatePriorities(self, request, context) -> pb.ReplayInfo:
        return await self.blocking.run(self._update, request.job_id, list(request.keys),
                                       list(request.priorities))


class ReplayClient:
    """The replay server over gRPC, with the same methods as `ReplayService`.

    A replay server that dies under a call is restarted by its launcher or orchestrator: the
    call is made once more (the channel waits for the new server). A priority update the new
    server refuses (its memory never issued those keys) raises drlbox's `Refused`.
    """

    def __init__(self, address: str, job_id: str, timeout: float = CALL_TIMEOUT,
                 security: Security | None = None):
        self.channel = make_channel(address, security)
        self.stub = pb_grpc.ReplayServerStub(self.channel)
        self.job_id, self.timeout = job_id, timeout

    @staticmethod
    def _again_if_lost(call: Callable[[], Any]) -> Any:
        """call(), and once more if the server went away under it (UNAVAILABLE)."""
        try:
            return call()
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.UNAVAILABLE:
                raise
        return call()

    def insert(self, lists: Sequence[dict]) -> None:
        data = serde.encode_rollouts(lists)
        self._again_if_lost(lambda: self.stub.Insert(
            (pb.ReplayChunk(job_id=self.job_id, data=piece)
             for piece in serde.split_chunks(data)), timeout=self.timeout))

    def sample(self, batch_size: int) -> ReplaySample | None:
        request = pb.SampleRequest(job_id=self.job_id, batch_size=batch_size)
        chunks = self._again_if_lost(
            lambda: list(self.stub.Sample(request, timeout=self.timeout)))
        if not chunks:
            return None
        lists, keys, weights = serde.decode_rollouts(serde.join_chunks(c.data for c in chunks))
        return ReplaySample(lists, keys, weights)

    def update_priorities(self, keys: np.ndarray, priorities: np.ndarray) -> None:
        request = pb.PriorityUpdate(job_id=self.job_id, keys=np.asarray(keys).tolist(),
                                    priorities=np.asarray(priorities, np.float64).tolist())
        try:
            self._again_if_lost(lambda: self.stub.UpdatePriorities(request,
                                                                   timeout=self.timeout))
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.INVALID_ARGUMENT:
                raise
            raise Refused(err.details()) from None

    def close(self) -> None:
        """Close the channel."""
        self.channel.close()


def add_replay(table):
    """A `make_server` hook that serves the replay service for a ReplayTable."""
    servicer = ReplayServicer(table)
    service = pb.DESCRIPTOR.services_by_name["ReplayServer"]
    return lambda grpc_server: grpc_server.add_generic_rpc_handlers(
        (service_handler(service, servicer),))
