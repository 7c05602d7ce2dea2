"""gRPC service and client for the parameter server role; each call decodes, delegates, encodes."""
from __future__ import annotations

import threading
from typing import Iterator, Sequence

import grpc
import numpy as np

from drlbox.jobs import Job, check_python_version, python_version
from drlbox.roles.interfaces import (Checkpoint, Evaluation, JobStatus, PushResult, WeightsUpdate,
                                     WorkerReport)
from drlbox.rpc import serde
from drlbox.rpc.generated import parameter_server_pb2 as pb
from drlbox.rpc.generated import parameter_server_pb2_grpc as pb_grpc
from drlbox.rpc.server import make_channel

CALL_TIMEOUT = 120.0


def status_to_proto(s: JobStatus) -> pb.JobStatus:
    """JobStatus dataclass -> message."""
    return pb.JobStatus(
        job_id=s.job_id, state=s.state, message=s.message, global_steps=s.global_steps,
        train_steps=s.train_steps, updates=s.updates, version=s.version, episodes=s.episodes,
        recent_return=s.recent_return, steps_per_sec=s.steps_per_sec,
        wall_seconds=s.wall_seconds, train_seconds=s.train_seconds,
        stats=s.stats,
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
        stats=dict(m.stats),
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


class ParameterServerServicer(pb_grpc.ParameterServerServicer):
    """Serves a `drlbox.roles.param_server.ParameterServer` and the job it runs."""

    def __init__(self, server, job: Job):
        self.server, self.job = server, job
        self._job_bytes = job.encode()
        self._cache_lock = threading.Lock()
        self._cache: tuple = (None, b"")     # (key, encoded WeightSet) of the last pull

    def _check_job(self, job_id: str, context: grpc.ServicerContext) -> None:
        if job_id != self.job.job_id:
            context.abort(grpc.StatusCode.NOT_FOUND,
                          f"job {job_id!r} is not known here; this parameter server runs job "
                          f"{self.job.job_id!r}")

    def GetJob(self, request, context) -> Iterator[pb.JobChunk]:
        try:
            check_python_version(request.python_version, who="the caller")
        except RuntimeError as err:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(err))
        for i, piece in enumerate(serde.split_chunks(self._job_bytes)):
            yield (pb.JobChunk(job_id=self.job.job_id, config_json=self.job.settings_json(),
                               makers=piece) if i == 0 else pb.JobChunk(makers=piece))

    def _encoded(self, update: WeightsUpdate) -> bytes:
        # Several workers pull the same version: encode it once.
        key = (update.version, update.aux_version if update.aux is not None else None)
        with self._cache_lock:
            if self._cache[0] == key:
                return self._cache[1]
        weight_set = pb.WeightSet(online=serde.arrays_to_proto(update.weights))
        if update.aux is not None:
            weight_set.aux.CopyFrom(serde.arrays_to_proto(update.aux))
        data = weight_set.SerializeToString()
        with self._cache_lock:
            self._cache = (key, data)
        return data

    def GetWeights(self, request, context) -> Iterator[pb.WeightsChunk]:
        self._check_job(request.job_id, context)
        update = self.server.get_weights(request.newer_than, request.aux_newer_than)
        if update is None:
            return
        for piece in serde.split_chunks(self._encoded(update)):
            yield pb.WeightsChunk(version=update.version, aux_version=update.aux_version,
                                  data=piece)

    def PushGradients(self, request_iterator, context) -> pb.PushReply:
        first = next(request_iterator, None)
        if first is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "empty gradient push")
        self._check_job(first.job_id, context)
        data = serde.join_chunks([first.data] + [c.data for c in request_iterator])
        try:
            gradients = serde.decode_arrays(data) if data else None
            result = self.server.push(gradients, first.base_version,
                                      report_from_proto(first.report))
        except ValueError as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"gradients refused: {err}")
        return pb.PushReply(version=result.version, global_steps=result.global_steps,
                            stop=result.stop)

    def ReportEvaluation(self, request, context) -> pb.PushReply:
        self._check_job(request.job_id, context)
        result = self.server.report_evaluation(request.global_steps, list(request.returns))
        return pb.PushReply(version=result.version, global_steps=result.global_steps,
                            stop=result.stop)

    def GetStatus(self, request, context) -> pb.JobStatus:
        if request.job_id:
            self._check_job(request.job_id, context)
        return status_to_proto(self.server.status())

    def Stop(self, request, context) -> pb.JobStatus:
        self._check_job(request.job_id, context)
        self.server.stop(request.reason or "stopped on request")
        return status_to_proto(self.server.status())


class ParameterClient:
    """The parameter server over gRPC, with the same methods as the in-process object."""

    def __init__(self, address: str, job_id: str | None = None, timeout: float = CALL_TIMEOUT):
        self.address = address
        self.channel = make_channel(address)
        self.stub = pb_grpc.ParameterServerStub(self.channel)
        self.job_id = job_id
        self.timeout = timeout

    def fetch_job(self) -> Job:
        """The job this server runs (its makers unpickled here)."""
        chunks = list(self.stub.GetJob(pb.JobRequest(python_version=python_version()),
                                       timeout=self.timeout))
        self.job_id = chunks[0].job_id
        return Job.decode(self.job_id, serde.join_chunks(c.makers for c in chunks))

    def get_weights(self, newer_than: int, aux_newer_than: int = -1) -> WeightsUpdate | None:
        chunks = list(self.stub.GetWeights(
            pb.WeightsRequest(job_id=self.job_id, newer_than=newer_than,
                              aux_newer_than=aux_newer_than), timeout=self.timeout))
        if not chunks:
            return None
        weight_set = pb.WeightSet()
        weight_set.ParseFromString(serde.join_chunks(c.data for c in chunks))
        aux = serde.proto_to_arrays(weight_set.aux) if weight_set.HasField("aux") else None
        return WeightsUpdate(chunks[0].version, serde.proto_to_arrays(weight_set.online),
                             chunks[0].aux_version, aux)

    def push(self, gradients: Sequence[np.ndarray] | None, base_version: int,
             report: WorkerReport) -> PushResult:
        data = serde.encode_arrays(gradients) if gradients else b""

        def chunks():
            for i, piece in enumerate(serde.split_chunks(data)):
                if i == 0:
                    yield pb.GradientsChunk(job_id=self.job_id, base_version=base_version,
                                            report=report_to_proto(report), data=piece)
                else:
                    yield pb.GradientsChunk(data=piece)

        reply = self.stub.PushGradients(chunks(), timeout=self.timeout)
        return PushResult(reply.version, reply.global_steps, reply.stop)

    def report_evaluation(self, global_steps: int, returns: Sequence[float]) -> PushResult:
        reply = self.stub.ReportEvaluation(pb.EvaluationReport(
            job_id=self.job_id, global_steps=global_steps, returns=list(returns)),
            timeout=self.timeout)
        return PushResult(reply.version, reply.global_steps, reply.stop)

    def status(self) -> JobStatus:
        return status_from_proto(self.stub.GetStatus(pb.StatusRequest(job_id=self.job_id or ""),
                                                     timeout=self.timeout))

    def stop(self, reason: str = "stopped on request") -> JobStatus:
        """Ask the server to end the job."""
        return status_from_proto(self.stub.Stop(pb.StopRequest(job_id=self.job_id,
                                                               reason=reason),
                                                timeout=self.timeout))

    def close(self) -> None:
        """Close the channel."""
        self.channel.close()


def add_parameter_server(server, job: Job):
    """A `make_server` hook that registers the parameter server service."""
    return lambda grpc_server: pb_grpc.add_ParameterServerServicer_to_server(
        ParameterServerServicer(server, job), grpc_server)
