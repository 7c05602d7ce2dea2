"""The parameter server as its peers reach it over gRPC: one client for every shard of a job.

A worker's `ParameterClient` keeps one exchange session per shard. Each push cuts the flat
gradient into the shards' slices and sends them all before reading any answer, so the shards
work in parallel; the weights that come back are put together into one flat vector. To the
worker the client looks like one parameter server with one version number (the sum of the
shards' versions, which changes whenever any slice does); the client remembers which slice
versions each number stands for. Imports no TensorFlow.
"""
from __future__ import annotations

import collections
import json
import time
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from drlbox.jobs import Job, python_version
from drlbox.roles.interfaces import JobStatus, PushResult, ShardState, WeightsUpdate, WorkerReport
from drlbox.roles.limits import OutOfRange
from drlbox.rpc import serde
from drlbox.rpc.generated import parameter_server_pb2 as pb
from drlbox.rpc.generated import parameter_server_pb2_grpc as pb_grpc
from drlbox.rpc.parameter_server import report_to_proto, status_from_proto
from drlbox.rpc.security import Security
from drlbox.rpc.server import make_channel
from drlbox.rpc.sessions import ExchangeSession, Reply, SessionError
from drlbox.rpc.states import JOINING_ROLE

CALL_TIMEOUT = 120.0
SHARD_WAIT_SECONDS = 600.0       # a lost shard may take a while to be replaced
_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND,
              grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED)


@dataclass
class Shard:
    """One slice of the job's weights, where it is served, and the session to it."""

    address: str
    start: int
    stop: int
    session: ExchangeSession | None = None
    channel: grpc.Channel | None = None


def version_number(versions: list[int]) -> int:
    """One number for a set of slice versions: their sum, which grows with any of them."""
    return versions[0] if len(versions) == 1 else sum(versions)


class _Versions:
    """The slice versions behind the version numbers of the last weight sets put together
    (what a worker may hold, and pass back as newer_than or base_version)."""

    def __init__(self):
        self._known: collections.OrderedDict = collections.OrderedDict()

    def name(self, versions: list[int]) -> int:
        """The number standing for these slice versions, remembered."""
        number = version_number(versions)
        self._known[number] = list(versions)
        self._known.move_to_end(number)
        while len(self._known) > 16:
            self._known.popitem(last=False)
        return number

    def lookup(self, number: int, count: int) -> list[int]:
        """The slice versions of `number`; -1 each (nothing held) when unknown."""
        if count == 1:
            return [number]
        return list(self._known.get(number, [-1] * count))


class RunningJob(NamedTuple):
    """The job a parameter server runs, as GetRunningJob tells it (no makers)."""

    job_id: str
    settings: dict          # its plain settings, with "rollout_spec" (None without replay)
    shards: list            # (address, start, stop) of each slice; "" for slice 0's server


def _running_job(message: pb.RunningJob) -> RunningJob:
    settings = json.loads(message.config_json)
    settings["rollout_spec"] = json.loads(message.rollout_spec_json or "null")
    return RunningJob(message.job_id, settings,
                      [(s.address, s.start, s.stop) for s in message.shards])


class ParameterClient:
    """The parameter server over gRPC, with the same methods as the in-process object."""

    def __init__(self, address: str, job_id: str | None = None, timeout: float = CALL_TIMEOUT,
                 security: Security | None = None, wait_for_ready: bool = True):
        self.address, self.job_id, self.timeout = address, job_id, timeout
        self.security = security
        self.channel = make_channel(address, security, wait_for_ready=wait_for_ready)
        self.stub = pb_grpc.ParameterServerStub(self.channel)
        self.worker_index = 0
        # Gradients as bfloat16 (half the bytes) instead of float32: compress_gradients.
        self.compress_gradients = False
        self._shards: list[Shard] = []
        self._forget_weights()

    def _forget_weights(self) -> None:
        self._versions, self._aux_versions = _Versions(), _Versions()
        self._flat: np.ndarray | None = None       # the last weights put together
        self._aux: np.ndarray | None = None
        self._others: list = []

    # --- the job -------------------------------------------------------------------------------
    def running_job(self) -> RunningJob:
        """What the server runs now (its makers stay there); grpc.RpcError NOT_FOUND when no
        job runs. Cheap and changes nothing: idle roles poll it."""
        return _running_job(self.stub.GetRunningJob(pb.RunningJobRequest(),
                                                    timeout=self.timeout))

    def join_job(self, job_id: str, role: str = "worker") -> Job:
        """Join job_id as `role` ("worker" or "evaluator") and get the job with its makers
        unpickled here; sets `worker_index` (workers only, else 0) and the shards to talk to.
        grpc.RpcError NOT_FOUND when job_id is not the running job."""
        chunks = list(self.stub.JoinJob(pb.JoinJobRequest(
            job_id=job_id, python_version=python_version(), role=JOINING_ROLE.to_proto(role)),
            timeout=self.timeout))
        joined = _running_job(chunks[0].job)
        self.job_id = joined.job_id
        self.worker_index = chunks[0].worker_index
        self.compress_gradients = bool(joined.settings.get("compress_gradients", False))
        self._forget_weights()              # a new job: nothing held from the previous one
        self._use_shards(chunks[0].job.shards)
        return Job.decode(self.job_id, serde.join_chunks(c.makers for c in chunks))

    def get_shards(self) -> pb.ShardMap:
        """Where each slice of the job's weights is served now."""
        return self.stub.GetShards(pb.ShardsRequest(job_id=self.job_id), timeout=self.timeout)

    def _use_shards(self, shards: Sequence[pb.ShardInfo]) -> None:
        """Open sessions to the shards of this map (keeping those whose address is the same)."""
        old = {(s.address, s.start, s.stop): s for s in self._shards}
        new = []
        for info in shards:
            shard = old.pop((info.address, info.start, info.stop), None)
            if shard is None:
                shard = Shard(info.address, info.start, info.stop)
                if info.address:
                    # Fail fast: a shard that is gone is looked up again, not waited for.
                    shard.channel = make_channel(info.address, self.security,
                                                 wait_for_ready=False)
                shard.session = ExchangeSession(shard.channel or self.channel,
                                                info.address or self.address, self.timeout)
            new.append(shard)
        for shard in old.values():
            self._close_shard(shard)
        self._shards = new

    def _await_shards(self, deadline: float | None = None) -> None:
        """Wait until every slice is served, then use the map."""
        deadline = deadline or time.monotonic() + self.timeout
        while True:
            shard_map = self.get_shards()
            if shard_map.complete:
                self._use_shards(shard_map.shards)
                return
            if time.monotonic() > deadline:
                raise SessionError(grpc.StatusCode.UNAVAILABLE,
                                   f"job {self.job_id}: a parameter-server shard stayed "
                                   f"missing for {self.timeout:.0f} s")
            time.sleep(0.5)

    # --- weights -------------------------------------------------------------------------------
    def get_weights(self, newer_than: int, aux_newer_than: int = -1) -> WeightsUpdate | None:
        """The newest weights unless the caller holds them (`newer_than`)."""
        _, update = self._exchange(None, -1, None, newer_than, aux_newer_than, pull=True)
        return update

    def push_and_pull(self, gradient: np.ndarray | None, base_version: int,
                      report: WorkerReport, newer_than: int,
                      aux_newer_than: int = -1) -> tuple[PushResult, WeightsUpdate | None]:
        """Push a flat gradient (or only progress) and get the weights the server sends back."""
        return self._exchange(gradient, base_version, report, newer_than, aux_newer_than)

    def _exchange(self, gradient, base_version, report, newer_than, aux_newer_than,
                  pull=False) -> tuple[PushResult, WeightsUpdate | None]:
        if not self._shards:
            self._await_shards()
        if gradient is not None and len(gradient) != self._shards[-1].stop:
            raise ValueError(f"the gradient has {len(gradient)} values; the job's weights "
                             f"have {self._shards[-1].stop}")
        count = len(self._shards)
        held = self._versions.lookup(newer_than, count)
        aux_held = self._aux_versions.lookup(aux_newer_than, count)
        base = self._versions.lookup(base_version, count)
        headers = [pb.RequestHeader(
            job_id=self.job_id, shard=k, base_version=base[k], newer_than=held[k],
            aux_newer_than=aux_held[k], pull=pull,
            gradient_values=0 if gradient is None else shard.stop - shard.start)
            for k, shard in enumerate(self._shards)]
        if report is not None:
            headers[0].report.CopyFrom(report_to_proto(report))
        slices = [None if gradient is None else self._encode(gradient[s.start:s.stop], header)
                  for s, header in zip(self._shards, headers)]
        replies = self._round_trip(headers, slices)
        first = replies[0].header.push
        result = PushResult(version_number([r.header.push.version for r in replies]),
                            first.global_steps, first.stop)
        if first.stop or all(r.weights is None for r in replies):
            return result, None
        return result, self._put_together(replies)

    def _encode(self, piece: np.ndarray, header: pb.RequestHeader) -> memoryview:
        """A gradient slice's bytes: float32, or bfloat16 (flagged in the header)."""
        if not self.compress_gradients:
            return serde.float_bytes(piece)
        header.gradient_bfloat16 = True
        return memoryview(serde.to_bfloat16(piece).view(np.uint16)).cast("B")

    def _round_trip(self, headers: list, slices: list) -> list[Reply]:
        """Send to every shard, then read every answer; a shard that fails is looked up again
        (it may have moved) and asked once more."""
        for shard, header, data in zip(self._shards, headers, slices):
            shard.session.send(header, data if data is not None else b"")
        replies = []
        for k, shard in enumerate(self._shards):
            try:
                replies.append(shard.session.receive())
            except grpc.RpcError as err:
                if k > 0 and replies[0].header.push.stop:
                    # The job ended: its shards may be gone already, and nothing is needed.
                    replies.append(Reply(pb.ReplyHeader(), np.zeros(0, np.float32)))
                    continue
                if err.code() not in _RETRYABLE:
                    raise
                replies.append(self._retry(k, headers[k], slices[k]))
        return replies

    def _retry(self, k: int, header: pb.RequestHeader, data: memoryview | None) -> Reply:
        """Ask shard k again: the coordinator once (its channel waits for it to come back), a
        shard process until the slice is served again (it may have moved) or time is up."""
        deadline = time.monotonic() + max(self.timeout, SHARD_WAIT_SECONDS if k else 0.0)
        header.newer_than = header.aux_newer_than = -1     # the slice may have been restored
        data = data if data is not None else b""
        while True:
            if k > 0:
                self._await_shards(deadline)
            session = self._shards[k].session
            session.send(header, data)
            try:
                return session.receive()
            except grpc.RpcError as err:
                if k == 0 or err.code() not in _RETRYABLE or time.monotonic() > deadline:
                    raise
            time.sleep(0.5)

    def _put_together(self, replies: list[Reply]) -> WeightsUpdate:
        if len(replies) == 1:
            flat, aux = replies[0].weights, replies[0].aux
        else:
            flat = self._join([r.weights for r in replies], self._flat)
            aux = (self._join([r.aux for r in replies], self._aux)
                   if any(r.aux is not None for r in replies) else None)
        if replies[0].header.HasField("others"):
            self._others = serde.proto_to_arrays(replies[0].header.others)
        self._flat = flat
        if aux is not None:
            self._aux = aux
        aux_version = self._aux_versions.name([r.header.aux_version for r in replies])
        return WeightsUpdate(self._versions.name([r.header.version for r in replies]), flat,
                             aux_version, aux, self._others)

    def _join(self, pieces: list, previous: np.ndarray | None) -> np.ndarray:
        """One vector from the slices sent, and the previous vector's slices for the rest."""
        out = np.empty(self._shards[-1].stop, serde.FLOAT32)
        for shard, piece in zip(self._shards, pieces):
            if piece is None:
                if previous is None:
                    raise RuntimeError("a shard sent no weights to a client that holds none")
                piece = previous[shard.start:shard.stop]
            out[shard.start:shard.stop] = piece
        return out

    # --- the job's counters ----------------------------------------------------------------------
    def report_evaluation(self, global_steps: int, returns: Sequence[float],
                          weights_version: int | None = None) -> PushResult:
        try:
            reply = self.stub.ReportEvaluation(pb.EvaluationReport(
                job_id=self.job_id, global_steps=global_steps, returns=list(returns),
                weights_version=weights_version), timeout=self.timeout)
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.OUT_OF_RANGE:    # as the server in process says
                raise OutOfRange(err.details()) from None
            raise
        return PushResult(reply.version, reply.global_steps, reply.stop)

    def status(self) -> JobStatus:
        return status_from_proto(self.stub.GetStatus(pb.StatusRequest(job_id=self.job_id or ""),
                                                     timeout=self.timeout))

    def stop(self, reason: str = "stopped on request") -> JobStatus:
        """Ask the server to end the job."""
        return status_from_proto(self.stub.Stop(pb.StopRequest(job_id=self.job_id,
                                                               reason=reason),
                                                timeout=self.timeout))

    # --- shard processes -------------------------------------------------------------------------
    def join_shard(self, port: int, address: str = "") -> tuple[str, dict, ShardState, str]:
        """(job_id, settings, starting state, booked address) of a free slice of the running
        job; grpc.RpcError NOT_FOUND when no slice needs a process."""
        chunks = list(self.stub.JoinShard(pb.JoinShardRequest(address=address, port=port),
                                          timeout=self.timeout))
        state = serde.decode_state(serde.join_chunks(c.data for c in chunks))
        first = chunks[0]
        return first.job_id, json.loads(first.settings_json), state, first.address

    def shard_ready(self, job_id: str, index: int, address: str) -> bool:
        """Tell the coordinator this process serves slice `index`; False if it lost it."""
        return self.stub.ShardReady(pb.ShardReadyRequest(job_id=job_id, shard=index,
                                                         address=address),
                                    timeout=self.timeout).accepted

    def close(self) -> None:
        """Close the sessions and channels."""
        for shard in self._shards:
            self._close_shard(shard)
        self._shards = []
        self.channel.close()

    @staticmethod
    def _close_shard(shard: Shard) -> None:
        if shard.session is not None:
            shard.session.close()
        if shard.channel is not None:
            shard.channel.close()


class ShardPeer:
    """A shard process as the coordinator reaches it: its state, and whether it is alive."""

    def __init__(self, address: str, security: Security | None = None, timeout: float = 60.0):
        self.address, self.timeout = address, timeout
        self.channel = make_channel(address, security)
        self.stub = pb_grpc.ParameterServerStub(self.channel)
        self._health = health_pb2_grpc.HealthStub(self.channel)

    def snapshot(self, job_id: str, index: int) -> ShardState:
        """The slice's current state."""
        chunks = self.stub.Snapshot(pb.SnapshotRequest(job_id=job_id, shard=index),
                                    timeout=self.timeout)
        return serde.decode_state(serde.join_chunks(c.data for c in chunks))

    def healthy(self) -> bool:
        """Whether the process answers a health check within a second."""
        try:
            reply = self._health.Check(health_pb2.HealthCheckRequest(), timeout=1.0,
                                       wait_for_ready=False)
        except grpc.RpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    def close(self) -> None:
        """Close the channel."""
        self.channel.close()
