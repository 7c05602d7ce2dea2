"""gRPC service and client for the parameter server role; each call decodes, delegates, encodes."""
from __future__ import annotations

import json
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
from drlbox.rpc.security import Security
from drlbox.rpc.server import make_channel

CALL_TIMEOUT = 120.0


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


def weights_update(version: int, aux_version: int, data: bytes) -> WeightsUpdate:
    """A serialized WeightSet (and its versions) -> WeightsUpdate."""
    weight_set = pb.WeightSet()
    weight_set.ParseFromString(data)
    aux = serde.proto_to_arrays(weight_set.aux) if weight_set.HasField("aux") else None
    return WeightsUpdate(version, serde.proto_to_arrays(weight_set.online), aux_version, aux)


class SingleJob:
    """The job table of a local run: one job whose parameter server is always there."""

    def __init__(self, job: Job, server):
        self.job, self.server = job, server
        self._workers = 0
        self._lock = threading.Lock()

    def running(self) -> tuple[Job, object] | None:
        """(job, parameter server) of the running job."""
        return self.job, self.server

    def server_for(self, job_id: str):
        """The parameter server of job_id while it runs here, else None."""
        return self.server if job_id == self.job.job_id else None

    def next_worker_index(self, job_id: str) -> int:
        """A fresh index for a caller joining the job."""
        with self._lock:
            self._workers += 1
            return self._workers - 1


class ParameterServerServicer(pb_grpc.ParameterServerServicer):
    """Serves the running job's `drlbox.roles.param_server.ParameterServer`.

    `jobs` is the job table: `SingleJob` locally, `drlbox.roles.job_host.JobHost` in a cluster.
    """

    def __init__(self, jobs):
        self.jobs = jobs
        self._cache_lock = threading.Lock()
        self._job_bytes: tuple = (None, b"")    # (job_id, encoded job) of the running job
        self._cache: tuple = (None, b"")        # (key, encoded WeightSet) of the last pull

    def _server(self, job_id: str, context: grpc.ServicerContext):
        server = self.jobs.server_for(job_id)
        if server is None:
            running = self.jobs.running()
            where = (f"this parameter server runs job {running[0].job_id!r}" if running
                     else "no job runs here now")
            context.abort(grpc.StatusCode.NOT_FOUND, f"job {job_id!r} is not running; {where}")
        return server

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
        job = running[0]
        data = self._encoded_job(job)
        index = self.jobs.next_worker_index(job.job_id)
        for i, piece in enumerate(serde.split_chunks(data)):
            yield (pb.JobChunk(job_id=job.job_id, config_json=job.settings_json(),
                               makers=piece, worker_index=index) if i == 0
                   else pb.JobChunk(makers=piece))

    def _encoded(self, job_id: str, update: WeightsUpdate) -> bytes:
        # Several workers pull the same version: encode it once.
        key = (job_id, update.version, update.aux_version if update.aux is not None else None)
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
        server = self._server(request.job_id, context)
        update = server.get_weights(request.newer_than, request.aux_newer_than)
        if update is None:
            return
        for piece in serde.split_chunks(self._encoded(request.job_id, update)):
            yield pb.WeightsChunk(version=update.version, aux_version=update.aux_version,
                                  data=piece)

    def PushGradients(self, request_iterator, context) -> pb.PushReply:
        first = next(request_iterator, None)
        if first is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "empty gradient push")
        server = self._server(first.job_id, context)
        data = serde.join_chunks([first.data] + [c.data for c in request_iterator])
        result = self._with_gradients(context, server.push, data, first.base_version,
                                      report_from_proto(first.report))
        return push_reply(result)

    def Exchange(self, request, context) -> pb.ExchangeReply:
        server = self._server(request.job_id, context)
        result, update = self._with_gradients(
            context, server.push_and_pull, request.gradients, request.base_version,
            report_from_proto(request.report), request.newer_than, request.aux_newer_than)
        reply = pb.ExchangeReply(push=push_reply(result))
        if update is not None:
            data = self._encoded(request.job_id, update)
            reply.version, reply.aux_version = update.version, update.aux_version
            if len(data) <= serde.CHUNK_BYTES:
                reply.weights = data
            else:
                reply.weights_too_big = True
        return reply

    @staticmethod
    def _with_gradients(context, call, data: bytes, *args):
        """`call(gradients, *args)` on the decoded gradients (None when `data` is empty);
        malformed or misfitting gradients refuse the call."""
        try:
            return call(serde.decode_arrays(data) if data else None, *args)
        except ValueError as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"gradients refused: {err}")

    def ReportEvaluation(self, request, context) -> pb.PushReply:
        server = self._server(request.job_id, context)
        result = server.report_evaluation(request.global_steps, list(request.returns))
        return push_reply(result)

    def GetStatus(self, request, context) -> pb.JobStatus:
        if request.job_id:
            return status_to_proto(self._server(request.job_id, context).status())
        running = self.jobs.running()
        if running is None:
            context.abort(grpc.StatusCode.NOT_FOUND, "no job runs here now")
        return status_to_proto(running[1].status())

    def Stop(self, request, context) -> pb.JobStatus:
        server = self._server(request.job_id, context)
        server.stop(request.reason or "stopped on request")
        return status_to_proto(server.status())


class ParameterClient:
    """The parameter server over gRPC, with the same methods as the in-process object."""

    def __init__(self, address: str, job_id: str | None = None, timeout: float = CALL_TIMEOUT,
                 security: Security | None = None):
        self.address = address
        self.channel = make_channel(address, security)
        self.stub = pb_grpc.ParameterServerStub(self.channel)
        self.job_id = job_id
        self.timeout = timeout

    def fetch_job(self) -> Job:
        """The job this server runs (its makers unpickled here); sets `worker_index`."""
        chunks = list(self.stub.GetJob(pb.JobRequest(python_version=python_version()),
                                       timeout=self.timeout))
        self.job_id = chunks[0].job_id
        self.worker_index = chunks[0].worker_index
        return Job.decode(self.job_id, serde.join_chunks(c.makers for c in chunks))

    def fetch_settings(self) -> tuple[str, dict]:
        """(job_id, plain settings) of the running job, without unpickling its makers."""
        call = self.stub.GetJob(pb.JobRequest(python_version=python_version()),
                                timeout=self.timeout)
        first = next(call)
        call.cancel()
        return first.job_id, json.loads(first.config_json)

    def get_weights(self, newer_than: int, aux_newer_than: int = -1) -> WeightsUpdate | None:
        chunks = list(self.stub.GetWeights(
            pb.WeightsRequest(job_id=self.job_id, newer_than=newer_than,
                              aux_newer_than=aux_newer_than), timeout=self.timeout))
        if not chunks:
            return None
        return weights_update(chunks[0].version, chunks[0].aux_version,
                              serde.join_chunks(c.data for c in chunks))

    def push(self, gradients: Sequence[np.ndarray] | None, base_version: int,
             report: WorkerReport) -> PushResult:
        return self._push_chunks(serde.encode_arrays(gradients) if gradients else b"",
                                 base_version, report)

    def _push_chunks(self, data: bytes, base_version: int, report: WorkerReport) -> PushResult:
        def chunks():
            for i, piece in enumerate(serde.split_chunks(data)):
                if i == 0:
                    yield pb.GradientsChunk(job_id=self.job_id, base_version=base_version,
                                            report=report_to_proto(report), data=piece)
                else:
                    yield pb.GradientsChunk(data=piece)

        reply = self.stub.PushGradients(chunks(), timeout=self.timeout)
        return PushResult(reply.version, reply.global_steps, reply.stop)

    def push_and_pull(self, gradients: Sequence[np.ndarray] | None, base_version: int,
                      report: WorkerReport, newer_than: int,
                      aux_newer_than: int = -1) -> tuple[PushResult, WeightsUpdate | None]:
        data = serde.encode_arrays(gradients) if gradients else b""
        if len(data) > serde.CHUNK_BYTES:
            result = self._push_chunks(data, base_version, report)
            return result, None if result.stop else self.get_weights(newer_than, aux_newer_than)
        reply = self.stub.Exchange(pb.ExchangeRequest(
            job_id=self.job_id, base_version=base_version, report=report_to_proto(report),
            gradients=data, newer_than=newer_than, aux_newer_than=aux_newer_than),
            timeout=self.timeout)
        result = PushResult(reply.push.version, reply.push.global_steps, reply.push.stop)
        if reply.weights_too_big:
            return result, self.get_weights(newer_than, aux_newer_than)
        if not reply.weights:
            return result, None
        return result, weights_update(reply.version, reply.aux_version, reply.weights)

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


def add_parameter_server(jobs):
    """A `make_server` hook that registers the parameter server service for a job table."""
    return lambda grpc_server: pb_grpc.add_ParameterServerServicer_to_server(
        ParameterServerServicer(jobs), grpc_server)
