"""gRPC service of the parameter server and its shards; each call decodes, delegates, encodes.

One servicer serves every process of a job's parameter server: the coordinator (slice 0, the
job's counters, job discovery for workers and shard processes) and the shard processes (their
slice, and its snapshots). The job table it is given says what runs here (`SingleJob` in a
local run, `JobHost` in a cluster, `ShardTable` in a shard process; see roles.job_tables).
Exchange sessions read their frames in place (`serde.decode_frame`) rather than through
protobuf, which would copy every slice twice.
"""
from __future__ import annotations

import json
import threading
from typing import Any, Iterator

import grpc
import numpy as np
from google.protobuf.message import DecodeError

from drlbox.jobs import Job, check_python_version
from drlbox.roles.interfaces import (Checkpoint, Evaluation, JobStatus, PushResult, ShardReply,
                                     WorkerReport)
from drlbox.rpc import serde
from drlbox.rpc.generated import parameter_server_pb2 as pb
from drlbox.rpc.generated import parameter_server_pb2_grpc as pb_grpc

SERVICE = "drlbox.v1.ParameterServer"


def status_to_proto(s: JobStatus) -> pb.JobStatus:
    """JobStatus dataclass -> message."""
    return pb.JobStatus(
        job_id=s.job_id, state=s.state, message=s.message, global_steps=s.global_steps,
        train_steps=s.train_steps, updates=s.updates, version=s.version, episodes=s.episodes,
        recent_return=s.recent_return, steps_per_sec=s.steps_per_sec,
        wall_seconds=s.wall_seconds, train_seconds=s.train_seconds,
        stats=s.stats, recent_returns=s.recent_returns,
        resumed_from_steps=s.resumed_from_steps, queue_position=s.queue_position,
        algorithm=s.algorithm,
        checkpoints=[pb.Checkpoint(path=c.path, global_steps=c.global_steps,
                                   train_seconds=c.train_seconds) for c in s.checkpoints],
        evaluations=[pb.Evaluation(global_steps=e.global_steps, mean_return=e.mean_return,
                                   episodes=e.episodes, wall_seconds=e.wall_seconds)
                     for e in s.evaluations])


def status_from_proto(m: pb.JobStatus) -> JobStatus:
    """Message -> JobStatus dataclass."""
    return JobStatus(
        job_id=m.job_id, state=m.state, message=m.message, global_steps=m.global_steps,
        train_steps=m.train_steps, updates=m.updates, version=m.version, episodes=m.episodes,
        recent_return=m.recent_return, steps_per_sec=m.steps_per_sec,
        wall_seconds=m.wall_seconds, train_seconds=m.train_seconds,
        stats=dict(m.stats), recent_returns=list(m.recent_returns),
        resumed_from_steps=m.resumed_from_steps, queue_position=m.queue_position,
        algorithm=m.algorithm,
        checkpoints=[Checkpoint(c.path, c.global_steps, c.train_seconds) for c in m.checkpoints],
        evaluations=[Evaluation(e.global_steps, e.mean_return, e.episodes, e.wall_seconds)
                     for e in m.evaluations])


def report_to_proto(r: WorkerReport) -> pb.WorkerReport:
    """WorkerReport dataclass -> message."""
    return pb.WorkerReport(worker=r.worker, env_steps=r.env_steps,
                           episode_returns=r.episode_returns,
                           episode_lengths=r.episode_lengths, stats=r.stats)


def report_from_proto(m: pb.WorkerReport) -> WorkerReport:
    """Message -> WorkerReport dataclass."""
    return WorkerReport(m.worker, m.env_steps, list(m.episode_returns),
                        list(m.episode_lengths), dict(m.stats))


def push_reply(result: PushResult) -> pb.PushReply:
    """PushResult -> message."""
    return pb.PushReply(version=result.version, global_steps=result.global_steps,
                        stop=result.stop)


def shard_infos(shard_map: list) -> list[pb.ShardInfo]:
    """(address, start, stop) tuples -> messages (an unserved slice has an empty address)."""
    return [pb.ShardInfo(address=address or "", start=lo, stop=hi)
            for address, lo, hi in shard_map]


def peer_host(peer: str) -> str:
    """The host part of a gRPC peer string ('ipv4:10.0.0.5:4312', 'ipv6:[::1]:4312')."""
    kind, _, rest = peer.partition(":")
    host = rest.rsplit(":", 1)[0] if kind in ("ipv4", "ipv6") else "127.0.0.1"
    return host if not host.startswith("[") or host.endswith("]") else host + "]"


class ParameterServerServicer(pb_grpc.ParameterServerServicer):
    """Serves the job table `jobs` (see the module's docstring)."""

    def __init__(self, jobs):
        self.jobs = jobs
        self._cache_lock = threading.Lock()
        self._job_bytes: tuple = (None, b"")    # (job_id, encoded job) of the running job
        self._weight_frames: dict = {}          # (job, slice) -> (versions, data frames)

    # --- finding the job -------------------------------------------------------------------
    def _server(self, job_id: str, context: grpc.ServicerContext):
        server = self.jobs.server_for(job_id)
        if server is None:
            self._not_running(job_id, context)
        return server

    def _not_running(self, job_id: str, context: grpc.ServicerContext) -> None:
        current = self.jobs.current()
        where = (f"this parameter server runs job {current.job_id!r}" if current is not None
                 else "no job runs here now")
        context.abort(grpc.StatusCode.NOT_FOUND, f"job {job_id!r} is not running; {where}")

    def _encoded_job(self, job: Job) -> bytes:
        with self._cache_lock:
            if self._job_bytes[0] != job.job_id:
                self._job_bytes = (job.job_id, job.encode())
            return self._job_bytes[1]

    def GetJob(self, request, context) -> Iterator[pb.JobChunk]:
        try:
            check_python_version(request.python_version, who="the caller")
        except RuntimeError as err:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(err))
        running = self.jobs.running()
        if running is None:
            context.abort(grpc.StatusCode.NOT_FOUND, "no job runs here now; waiting for one")
        job, server = running
        data = self._encoded_job(job)
        index = self.jobs.next_worker_index(job.job_id)
        for i, piece in enumerate(serde.split_chunks(data)):
            yield (pb.JobChunk(job_id=job.job_id, config_json=job.settings_json(),
                               makers=piece, worker_index=index,
                               shards=shard_infos(server.shard_map())) if i == 0
                   else pb.JobChunk(makers=piece))

    def GetShards(self, request, context) -> pb.ShardMap:
        server = self._server(request.job_id, context)
        return pb.ShardMap(shards=shard_infos(server.shard_map()), complete=server.ready)

    # --- exchanges -------------------------------------------------------------------------
    def Exchange(self, request_iterator, context) -> Iterator[bytes]:
        frames = (self._decode(raw, context) for raw in request_iterator)
        for raw_header, data in frames:
            if raw_header is None:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              "an exchange must start with a frame that has a header")
            try:
                header = pb.RequestHeader.FromString(raw_header)
            except DecodeError as err:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed header: {err}")
            target = self.jobs.slice_for(header.job_id, header.shard)
            if target is None:
                if self.jobs.server_for(header.job_id) is not None:
                    context.abort(grpc.StatusCode.NOT_FOUND, f"job {header.job_id!r} has no "
                                                             f"slice {header.shard} here")
                self._not_running(header.job_id, context)
            gradient = self._gradient(header, data, frames, target.size, context)
            report = report_from_proto(header.report) if header.HasField("report") else None
            try:
                result, reply = target.exchange(gradient, header.base_version, report,
                                                header.newer_than, header.aux_newer_than,
                                                header.pull)
            except ValueError as err:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"gradients refused: {err}")
            yield from self._reply_frames(header, target, result, reply)

    @staticmethod
    def _decode(raw: bytes, context) -> tuple[bytes | None, memoryview]:
        try:
            return serde.decode_frame(raw)
        except ValueError as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))

    @staticmethod
    def _gradient(header: pb.RequestHeader, data: memoryview, frames: Iterator,
                  size: int, context) -> np.ndarray | None:
        """The gradient slice the header announces, read from this and the next frames."""
        count = header.gradient_values
        if count == 0:
            if len(data):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              "gradient_values is 0 but the frame carries data")
            return None
        if count != size:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"gradient_values is {count}; slice {header.shard} of job "
                          f"{header.job_id!r} has {size} weights")
        reader = serde.ValueReader(count, serde.bfloat16() if header.gradient_bfloat16
                                   else serde.FLOAT32)
        try:
            reader.add(data)
            while not reader.done:
                more_header, piece = next(frames)
                if more_header is not None:
                    raise ValueError("a new exchange began before the gradient was complete")
                reader.add(piece)
        except StopIteration:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          "the stream ended before the gradient was complete")
        except ValueError as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"gradient_values: {err}")
        return reader.values()

    def _reply_frames(self, header: pb.RequestHeader, target: Any, result: PushResult,
                      reply: ShardReply) -> list[bytes]:
        """A header frame, then the weights (and aux) slice as data frames, cached per version
        since every worker that pulls a version gets the same bytes."""
        out = pb.ReplyHeader(push=push_reply(result), version=reply.version,
                             aux_version=reply.aux_version)
        if reply.weights is None:
            return [serde.encode_frame(out.SerializeToString())]
        out.weight_values = len(reply.weights)
        out.aux_values = 0 if reply.aux is None else len(reply.aux)
        if target.others:
            out.others.CopyFrom(serde.arrays_to_proto(target.others))
        return [serde.encode_frame(out.SerializeToString())] + self._data_frames(header, reply)

    def _data_frames(self, header: pb.RequestHeader, reply: ShardReply) -> list[bytes]:
        key = (header.job_id, header.shard)
        versions = (reply.version, None if reply.aux is None else reply.aux_version)
        with self._cache_lock:
            cached = self._weight_frames.get(key)
        if cached is not None and cached[0] == versions:
            return cached[1]
        data = serde.float_bytes(reply.weights, reply.aux)
        frames = [serde.encode_frame(None, data[i:i + serde.FRAME_DATA_BYTES])
                  for i in range(0, len(data), serde.FRAME_DATA_BYTES)]
        with self._cache_lock:
            self._weight_frames[key] = (versions, frames)
        return frames

    # --- the job's counters ----------------------------------------------------------------
    def ReportEvaluation(self, request, context) -> pb.PushReply:
        server = self._server(request.job_id, context)
        result = server.report_evaluation(request.global_steps, list(request.returns))
        return push_reply(result)

    def GetStatus(self, request, context) -> pb.JobStatus:
        if request.job_id:
            return status_to_proto(self._server(request.job_id, context).status())
        current = self.jobs.current()
        if current is None:
            context.abort(grpc.StatusCode.NOT_FOUND, "no job runs here now")
        return status_to_proto(current.status())

    def Stop(self, request, context) -> pb.JobStatus:
        server = self._server(request.job_id, context)
        server.stop(request.reason or "stopped on request")
        return status_to_proto(server.status())

    # --- shard processes -------------------------------------------------------------------
    def JoinShard(self, request, context) -> Iterator[pb.StateChunk]:
        server = self.jobs.current()
        if server is None:
            context.abort(grpc.StatusCode.NOT_FOUND, "no job runs here now; waiting for one")
        address = request.address or f"{peer_host(context.peer())}:{request.port}"
        assignment = server.assignment(address)
        if assignment is None:
            context.abort(grpc.StatusCode.NOT_FOUND,
                          f"every slice of job {server.job_id!r} is served")
        settings, state = assignment
        for i, piece in enumerate(serde.split_chunks(serde.encode_state(state))):
            yield (pb.StateChunk(job_id=server.job_id, shard=settings["index"],
                                 settings_json=json.dumps(settings), address=address,
                                 data=piece) if i == 0 else pb.StateChunk(data=piece))

    def ShardReady(self, request, context) -> pb.ShardReadyReply:
        server = self._server(request.job_id, context)
        return pb.ShardReadyReply(accepted=server.slots.ready(request.shard, request.address))

    def Snapshot(self, request, context) -> Iterator[pb.StateChunk]:
        target = self.jobs.slice_for(request.job_id, request.shard)
        if target is None:
            context.abort(grpc.StatusCode.NOT_FOUND,
                          f"slice {request.shard} of job {request.job_id!r} is not served here")
        for piece in serde.split_chunks(serde.encode_state(target.snapshot())):
            yield pb.StateChunk(job_id=request.job_id, shard=request.shard, data=piece)


def add_parameter_server(jobs):
    """A `make_server` hook that registers the parameter server service for a job table.

    Exchange frames bypass protobuf's (copying) codec; every other method uses it.
    """
    servicer = ParameterServerServicer(jobs)

    def add(grpc_server: grpc.Server) -> None:
        handlers = {}
        for method in pb.DESCRIPTOR.services_by_name["ParameterServer"].methods:
            name = method.name
            if name == "Exchange":
                handlers[name] = grpc.stream_stream_rpc_method_handler(servicer.Exchange)
                continue
            request_class = getattr(pb, method.input_type.name)
            response_class = getattr(pb, method.output_type.name)
            kind = {(False, False): grpc.unary_unary_rpc_method_handler,
                    (False, True): grpc.unary_stream_rpc_method_handler,
                    (True, False): grpc.stream_unary_rpc_method_handler,
                    (True, True): grpc.stream_stream_rpc_method_handler}[
                (method.client_streaming, method.server_streaming)]
            handlers[name] = kind(getattr(servicer, name),
                                  request_deserializer=request_class.FromString,
                                  response_serializer=response_class.SerializeToString)
        grpc_server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, handlers),))

    return add
