"""gRPC service and client for job control: what the SDK calls on a cluster's parameter server.

The client side imports no TensorFlow (the SDK runs on laptops without it).
"""
from __future__ import annotations

import os
from typing import Iterator

import grpc

from drlbox.jobs import python_version
from drlbox.roles.interfaces import Checkpoint, JobStatus
from drlbox.rpc import serde
from drlbox.rpc.generated import job_control_pb2 as pb
from drlbox.rpc.generated import job_control_pb2_grpc as pb_grpc
from drlbox.rpc.parameter_server import status_from_proto, status_to_proto
from drlbox.rpc.security import Security
from drlbox.rpc.server import make_channel

FILE_CHUNK_BYTES = 1 << 20


class JobControlServicer(pb_grpc.JobControlServicer):
    """Serves a `drlbox.roles.job_host.JobHost`."""

    def __init__(self, host):
        self.host = host

    def _status(self, job_id: str, context) -> JobStatus:
        from drlbox.roles.job_host import UnknownJob

        try:
            return self.host.status(job_id)
        except UnknownJob:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no job {job_id!r} was submitted to this "
                                                     f"cluster")

    def Submit(self, request_iterator, context) -> pb.JobStatus:
        from drlbox.roles.job_host import MAX_JOB_BYTES, JobRefused

        first = next(request_iterator, None)
        if first is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "empty submission")
        if first.python_version != python_version():
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"Python version mismatch: the cluster runs Python "
                          f"{python_version()}, the submitting client runs Python "
                          f"{first.python_version or '(unknown)'}; makers are pickled and only "
                          f"load on the same Python minor version, so submit from Python "
                          f"{python_version()}")
        pieces, size = [first.config], len(first.config)
        for chunk in request_iterator:
            size += len(chunk.config)
            if size > MAX_JOB_BYTES:
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                              f"the job is over the {MAX_JOB_BYTES} byte limit; keep data out "
                              f"of the makers and load it in the env")
            pieces.append(chunk.config)
        try:
            status = self.host.submit(serde.join_chunks(pieces))
        except JobRefused as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        return status_to_proto(status)

    def GetJobStatus(self, request, context) -> pb.JobStatus:
        return status_to_proto(self._status(request.job_id, context))

    def ListJobs(self, request, context) -> pb.JobList:
        return pb.JobList(jobs=[status_to_proto(s) for s in self.host.statuses()])

    def Cancel(self, request, context) -> pb.JobStatus:
        self._status(request.job_id, context)
        return status_to_proto(self.host.cancel(request.job_id))

    def FetchCheckpoint(self, request, context) -> Iterator[pb.FileChunk]:
        self._status(request.job_id, context)
        try:
            checkpoint = self.host.checkpoint(
                request.job_id, None if request.latest else request.global_steps)
        except LookupError as err:
            context.abort(grpc.StatusCode.NOT_FOUND, str(err))
        with open(checkpoint.path, "rb") as f:
            first = True
            while True:
                data = f.read(FILE_CHUNK_BYTES)
                if not data and not first:
                    return
                yield (pb.FileChunk(name=os.path.basename(checkpoint.path),
                                    global_steps=checkpoint.global_steps, data=data)
                       if first else pb.FileChunk(data=data))
                first = False


class JobControlClient:
    """Raw job-control calls; `drlbox.client` adds retries and the friendly API."""

    def __init__(self, address: str, security: Security | None = None):
        self.address = address
        # No wait-for-ready: an unreachable cluster must surface so the SDK can retry and say so.
        self.channel = make_channel(address, security, wait_for_ready=False)
        self.stub = pb_grpc.JobControlStub(self.channel)

    def submit(self, data: bytes, algorithm: str, timeout: float) -> JobStatus:
        def chunks():
            for i, piece in enumerate(serde.split_chunks(data)):
                yield (pb.SubmitChunk(python_version=python_version(), algorithm=algorithm,
                                      config=piece) if i == 0 else pb.SubmitChunk(config=piece))
        return status_from_proto(self.stub.Submit(chunks(), timeout=timeout))

    def status(self, job_id: str, timeout: float) -> JobStatus:
        return status_from_proto(self.stub.GetJobStatus(pb.JobRef(job_id=job_id),
                                                        timeout=timeout))

    def list(self, timeout: float) -> list[JobStatus]:
        reply = self.stub.ListJobs(pb.ListJobsRequest(), timeout=timeout)
        return [status_from_proto(s) for s in reply.jobs]

    def cancel(self, job_id: str, timeout: float) -> JobStatus:
        return status_from_proto(self.stub.Cancel(pb.JobRef(job_id=job_id), timeout=timeout))

    def fetch_checkpoint(self, job_id: str, global_steps: int | None, path_for,
                         timeout: float) -> tuple[str, Checkpoint]:
        """Stream a checkpoint into the file `path_for(name, global_steps)` names."""
        request = pb.CheckpointRequest(job_id=job_id, latest=global_steps is None,
                                       global_steps=global_steps or 0)
        call = self.stub.FetchCheckpoint(request, timeout=timeout)
        first = next(call)
        path = path_for(first.name, first.global_steps)
        tmp = f"{path}.part"
        with open(tmp, "wb") as f:
            f.write(first.data)
            for chunk in call:
                f.write(chunk.data)
        os.replace(tmp, path)
        return path, Checkpoint(first.name, first.global_steps, 0.0)

    def close(self) -> None:
        """Close the channel."""
        self.channel.close()


def add_job_control(host):
    """A `make_server` hook that registers job control for a JobHost."""
    return lambda grpc_server: pb_grpc.add_JobControlServicer_to_server(
        JobControlServicer(host), grpc_server)
