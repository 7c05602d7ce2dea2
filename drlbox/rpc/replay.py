"""gRPC service and client for the replay role (no TensorFlow on either side)."""
from __future__ import annotations

from typing import Iterator, Sequence

import grpc
import numpy as np

from drlbox.roles.interfaces import ReplaySample
from drlbox.rpc import serde
from drlbox.rpc.generated import replay_pb2 as pb
from drlbox.rpc.generated import replay_pb2_grpc as pb_grpc
from drlbox.rpc.security import Security
from drlbox.rpc.server import make_channel

CALL_TIMEOUT = 120.0


class ReplayServicer(pb_grpc.ReplayServerServicer):
    """Serves the replay memory of the running job (a `drlbox.roles.replay.ReplayTable`)."""

    def __init__(self, table):
        self.table = table

    def _service(self, job_id: str, context):
        service = self.table.for_job(job_id)
        if service is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"job {job_id!r} is not known here; this "
                                                     f"replay server holds job "
                                                     f"{self.table.job_id!r}")
        return service

    @staticmethod
    def _info(service) -> pb.ReplayInfo:
        return pb.ReplayInfo(size=len(service), ready=service.ready)

    def Insert(self, request_iterator, context) -> pb.ReplayInfo:
        first = next(request_iterator, None)
        if first is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "empty insert")
        service = self._service(first.job_id, context)
        try:
            lists, _, _ = serde.decode_rollouts(
                serde.join_chunks([first.data] + [c.data for c in request_iterator]))
        except ValueError as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"rollouts refused: {err}")
        service.insert(lists)
        return self._info(service)

    def Sample(self, request, context) -> Iterator[pb.ReplayChunk]:
        service = self._service(request.job_id, context)
        if request.batch_size < 1:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"batch_size must be >= 1, got {request.batch_size}")
        sample = service.sample(request.batch_size)
        if sample is None:
            return
        data = serde.encode_rollouts(sample.lists, sample.keys, sample.weights)
        for piece in serde.split_chunks(data):
            yield pb.ReplayChunk(job_id=request.job_id, data=piece)

    def UpdatePriorities(self, request, context) -> pb.ReplayInfo:
        service = self._service(request.job_id, context)
        try:
            service.update_priorities(np.asarray(request.keys, np.int64),
                                      np.asarray(request.priorities, np.float64))
        except ValueError as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        return self._info(service)


class ReplayClient:
    """The replay server over gRPC, with the same methods as `ReplayService`."""

    def __init__(self, address: str, job_id: str, timeout: float = CALL_TIMEOUT,
                 security: Security | None = None):
        self.channel = make_channel(address, security)
        self.stub = pb_grpc.ReplayServerStub(self.channel)
        self.job_id, self.timeout = job_id, timeout

    def insert(self, lists: Sequence[dict]) -> None:
        data = serde.encode_rollouts(lists)
        chunks = (pb.ReplayChunk(job_id=self.job_id, data=piece)
                  for piece in serde.split_chunks(data))
        self.stub.Insert(chunks, timeout=self.timeout)

    def sample(self, batch_size: int) -> ReplaySample | None:
        chunks = list(self.stub.Sample(pb.SampleRequest(job_id=self.job_id,
                                                        batch_size=batch_size),
                                       timeout=self.timeout))
        if not chunks:
            return None
        lists, keys, weights = serde.decode_rollouts(serde.join_chunks(c.data for c in chunks))
        return ReplaySample(lists, keys, weights)

    def update_priorities(self, keys: np.ndarray, priorities: np.ndarray) -> None:
        self.stub.UpdatePriorities(pb.PriorityUpdate(
            job_id=self.job_id, keys=np.asarray(keys).tolist(),
            priorities=np.asarray(priorities, np.float64).tolist()), timeout=self.timeout)

    def close(self) -> None:
        """Close the channel."""
        self.channel.close()


def add_replay(table):
    """A `make_server` hook that registers the replay service for a ReplayTable."""
    return lambda grpc_server: pb_grpc.add_ReplayServerServicer_to_server(
        ReplayServicer(table), grpc_server)
