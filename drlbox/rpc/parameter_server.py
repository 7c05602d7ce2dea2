"""gRPC service of the parameter server and its shards; each call decodes, delegates, encodes.

One servicer serves every process of a job's parameter server: the coordinator (slice 0, the
job's counters, job discovery) and the shard processes (their slice, and its snapshots). Job
discovery is two calls: GetRunningJob says what runs, cheaply, for idle roles to poll; JoinJob
hands over the pickled job (and a worker index) once per job a role works on. The job table
it is given says what runs here (`JobHost` in a parameter server, local or in a cluster;
`ShardTable` in a shard process; see roles.job_tables).
Exchange sessions read their frames in place (`serde.decode_frame`) rather than through
protobuf, which would copy every slice twice.
"""
from __future__ import annotations

import dataclasses
import json
import threading
from typing import Any, AsyncIterator

import numpy as np
from google.protobuf.message import DecodeError

from drlbox.jobs import Job, check_python_version
from drlbox.roles.interfaces import (Checkpoint, Evaluation, JobStatus, PushResult, ShardReply,
                                     WorkerReport)
from drlbox.roles.limits import Mismatch, NotFound, Refused, TooLarge, check_job_id
from drlbox.rpc import serde
from drlbox.rpc.generated import parameter_server_pb2 as pb
from drlbox.rpc.handlers import Blocking, service_handler
from drlbox.rpc.states import JOB_STATE, JOINING_ROLE

SERVICE = "drlbox.v1.ParameterServer"


# The JobStatus fields that are messages of their own on the wire: (dataclass, message) of
# their items. Every other field but the state is a plain value, copied by name.
_STATUS_LISTS = {"evaluations": (Evaluation, pb.Evaluation),
                 "checkpoints": (Checkpoint, pb.Checkpoint)}


def status_to_proto(s: JobStatus) -> pb.JobStatus:
    """JobStatus dataclass -> message; ValueError naming the state if it is not a job state."""
    values = {f.name: getattr(s, f.name) for f in dataclasses.fields(JobStatus)}
    values["state"] = JOB_STATE.to_proto(s.state)
    for name, (_, message) in _STATUS_LISTS.items():
        values[name] = [message(**dataclasses.asdict(item)) for item in values[name]]
    return pb.JobStatus(**values)


def status_from_proto(m: pb.JobStatus) -> JobStatus:
    """Message -> JobStatus dataclass; ValueError naming the state if this drlbox has none."""
    values = {f.name: _plain_value(m, f.name) for f in dataclasses.fields(JobStatus)}
    values["state"] = JOB_STATE.from_proto(m.state)
    for name, (item, _) in _STATUS_LISTS.items():
        values[name] = [_dataclass_of(item, message) for message in getattr(m, name)]
    return JobStatus(**values)


def _plain_value(message: Any, name: str) -> Any:
    """A field of a message as plain Python: a map as a dict, a repeated field as a list."""
    value = getattr(message, name)
    field = message.DESCRIPTOR.fields_by_name[name]
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        return dict(value)
    return list(value) if field.is_repeated else value


def _dataclass_of(cls: type, message: Any) -> Any:
    """A dataclass filled from the message's fields of the same names."""
    return cls(**{f.name: _plain_value(message, f.name) for f in dataclasses.fields(cls)})


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


class ParameterServerServicer:
    """Serves the job table `jobs` (see the module's docstring)."""

    def __init__(self, jobs):
        self.jobs = jobs
        self.blocking = Blocking(threads=8, name="parameter-server")
        self._cache_lock = threading.Lock()
        self._job_bytes: tuple = (None, b"")    # (job_id, encoded job) of the running job
        self._job_json: tuple = (None, "", "")  # (job_id, settings, rollout spec) as JSON
        self._weight_frames: dict = {}          # (job, slice) -> (versions, data frames)

    # --- finding the job -------------------------------------------------------------------
    def _server(self, job_id: str):
        server = self.jobs.server_for(job_id)
        if server is None:
            self._not_running(job_id)
        return server

    def _not_running(self, job_id: str) -> None:
        current = self.jobs.current()
        where = (f"this parameter server runs job {current.job_id!r}" if current is not None
                 else "no job runs here now")
        raise NotFound(f"job {job_id[:100]!r} is not running; {where}")

    def _slice(self, job_id: str, index: int):
        target = self.jobs.slice_for(job_id, index)
        if target is None:
            if self.jobs.server_for(job_id) is not None:
                raise NotFound(f"job {job_id!r} has no slice {index} here")
            self._not_running(job_id)
        return target

    def _encoded_job(self, job: Job) -> bytes:
        with self._cache_lock:
            if self._job_bytes[0] != job.job_id:
                self._job_bytes = (job.job_id, job.encode())
            return self._job_bytes[1]

    def _plain_job(self, job: Job, server: Any) -> pb.RunningJob:
        """The job without its makers; the JSON is cached per job (idle roles poll this)."""
        with self._cache_lock:
            if self._job_json[0] != job.job_id:
                self._job_json = (job.job_id, job.settings_json(),
                                  json.dumps(server.rollout_spec))
            _, config_json, rollout_spec_json = self._job_json
        return pb.RunningJob(job_id=job.job_id, config_json=config_json,
                             shards=shard_infos(server.shard_map()),
                             rollout_spec_json=rollout_spec_json)

    def _running_job(self) -> pb.RunningJob:
        running = self.jobs.running()
        if running is None:
            raise NotFound("no job runs here now; waiting for one")
        return self._plain_job(*running)

    async def GetRunningJob(self, request, context) -> pb.RunningJob:
        return await self.blocking.run(self._running_job)

    def _join(self, job_id: str, python: str, role_number: int) -> tuple[list, pb.JobChunk]:
        """The pieces of the pickled job and its first chunk; every field is checked first,
        so a refused call uses up no worker index."""
        try:
            role = JOINING_ROLE.from_proto(role_number)
        except ValueError as err:
            raise Refused(f"role: {err}") from None
        check_job_id(job_id)
        try:
            check_python_version(python[:20], who="the caller")
        except RuntimeError as err:
            raise Mismatch(f"python_version: {err}") from None
        running = self.jobs.running()
        if running is None or running[0].job_id != job_id:
            where = (f"job {running[0].job_id!r} runs now" if running is not None
                     else "no job runs here now")
            raise NotFound(f"job_id: job {job_id!r} is not running; {where}")
        job, server = running
        first = pb.JobChunk(job=self._plain_job(job, server))
        if role == "worker":
            first.worker_index = self.jobs.next_worker_index(job_id)
        return serde.split_chunks(self._encoded_job(job)), first

    async def JoinJob(self, request, context) -> AsyncIterator[pb.JobChunk]:
        pieces, first = await self.blocking.run(self._join, request.job_id,
                                                request.python_version, request.role)
        for i, piece in enumerate(pieces):
            if i == 0:
                first.makers = piece
                yield first
            else:
                yield pb.JobChunk(makers=piece)

    def _shard_map(self, job_id: str) -> pb.ShardMap:
        server = self._server(job_id)
        return pb.ShardMap(shards=shard_infos(server.shard_map()), complete=server.ready)

    async def GetShards(self, request, context) -> pb.ShardMap:
        return await self.blocking.run(self._shard_map, request.job_id)

    # --- exchanges -------------------------------------------------------------------------
    async def Exchange(self, request_iterator, context) -> AsyncIterator[bytes]:
        frames = request_iterator.__aiter__()
        async for raw in frames:
            raw_header, data = _decode(raw)
            if raw_header is None:
                raise Refused("an exchange must start with a frame that has a header")
            try:
                header = pb.RequestHeader.FromString(raw_header)
            except DecodeError as err:
                raise Refused(f"header: not a valid RequestHeader: {err}") from None
            target = self._slice(header.job_id, header.shard)
            gradient = await _read_gradient(header, data, frames, target.size)
            report = report_from_proto(header.report) if header.HasField("report") else None
            result, reply = await self.blocking.run(
                target.exchange, gradient, header.base_version, report, header.newer_than,
                header.aux_newer_than, header.pull)
            for frame in self._reply_frames(header, target, result, reply):
                yield frame

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
            self._weight_frames = {key: (versions, frames)}
        return frames

    # --- the job's counters ----------------------------------------------------------------
    def _evaluation(self, job_id: str, global_steps: int, returns: list,
                    weights_version: int | None) -> pb.PushReply:
        return push_reply(self._server(job_id).report_evaluation(global_steps, returns,
                                                                 weights_version))

    async def ReportEvaluation(self, request, context) -> pb.PushReply:
        version = request.weights_version if request.HasField("weights_version") else None
        return await self.blocking.run(self._evaluation, request.job_id, request.global_steps,
                                       list(request.returns), version)

    def _status(self, job_id: str) -> pb.JobStatus:
        if job_id:
            return status_to_proto(self._server(job_id).status())
        current = self.jobs.current()
        if current is None:
            raise NotFound("no job runs here now")
        return status_to_proto(current.status())

    async def GetStatus(self, request, context) -> pb.JobStatus:
        return await self.blocking.run(self._status, request.job_id)

    def _stop(self, job_id: str, reason: str) -> pb.JobStatus:
        server = self._server(job_id)
        server.stop(reason or "stopped on request")
        return status_to_proto(server.status())

    async def Stop(self, request, context) -> pb.JobStatus:
        return await self.blocking.run(self._stop, request.job_id, request.reason)

    # --- shard processes -------------------------------------------------------------------
    def _assignment(self, address: str) -> tuple[str, dict, bytes]:
        server = self.jobs.current()
        if server is None:
            raise NotFound("no job runs here now; waiting for one")
        assignment = server.assignment(address)
        if assignment is None:
            raise NotFound(f"every slice of job {server.job_id!r} is served")
        settings, state = assignment
        return server.job_id, settings, serde.encode_state(state)

    async def JoinShard(self, request, context) -> AsyncIterator[pb.StateChunk]:
        if not 0 <= request.port <= 65535:
            raise Refused(f"port: must be between 1 and 65535, got {request.port}")
        address = request.address or f"{peer_host(context.peer())}:{request.port}"
        job_id, settings, state = await self.blocking.run(self._assignment, address)
        for i, piece in enumerate(serde.split_chunks(state)):
            yield (pb.StateChunk(job_id=job_id, shard=settings["index"],
                                 settings_json=json.dumps(settings), address=address,
                                 data=piece) if i == 0 else pb.StateChunk(data=piece))

    def _ready(self, job_id: str, index: int, address: str) -> pb.ShardReadyReply:
        return pb.ShardReadyReply(accepted=self._server(job_id).slots.ready(index, address))

    async def ShardReady(self, request, context) -> pb.ShardReadyReply:
        return await self.blocking.run(self._ready, request.job_id, request.shard,
                                       request.address)

    def _snapshot(self, job_id: str, index: int) -> bytes:
        target = self.jobs.slice_for(job_id, index)
        if target is None:
            raise NotFound(f"slice {index} of job {job_id[:100]!r} is not served here")
        return serde.encode_state(target.snapshot())

    async def Snapshot(self, request, context) -> AsyncIterator[pb.StateChunk]:
        state = await self.blocking.run(self._snapshot, request.job_id, request.shard)
        for piece in serde.split_chunks(state):
            yield pb.StateChunk(job_id=request.job_id, shard=request.shard, data=piece)


def _decode(raw: bytes) -> tuple[bytes | None, memoryview]:
    try:
        return serde.decode_frame(raw)
    except ValueError as err:
        raise Refused(str(err)) from None


async def _read_gradient(header: pb.RequestHeader, data: memoryview, frames: AsyncIterator,
                         size: int) -> np.ndarray | None:
    """The gradient slice the header announces, read from this and the next frames; refused
    as soon as it does not fit the slice, without reading the rest."""
    count = header.gradient_values
    if count == 0:
        if len(data):
            raise Refused("gradient_values is 0 but the frame carries data")
        return None
    if count != size:
        raise Refused(f"gradient_values is {count}; slice {header.shard} of job "
                      f"{header.job_id!r} has {size} weights")
    reader = serde.ValueReader(count, serde.bfloat16() if header.gradient_bfloat16
                               else serde.FLOAT32)
    try:
        reader.add(data)
        while not reader.done:
            more_header, piece = _decode(await frames.__anext__())
            if more_header is not None:
                raise Refused("a new exchange began before the gradient was complete")
            reader.add(piece)
    except StopAsyncIteration:
        raise Refused("the stream ended before the gradient was complete") from None
    except Refused:
        raise
    except ValueError as err:
        raise TooLarge(f"gradient_values: {err}") from None
    return reader.values()


def add_parameter_server(jobs):
    """A `make_server` hook that serves the parameter server service for a job table.

    Exchange frames bypass protobuf's (copying) codec; every other method uses it.
    """
    servicer = ParameterServerServicer(jobs)
    service = pb.DESCRIPTOR.services_by_name["ParameterServer"]
    return lambda grpc_server: grpc_server.add_generic_rpc_handlers(
        (service_handler(service, servicer, raw=("Exchange",)),))
