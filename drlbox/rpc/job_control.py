"""gRPC service and client for job control: what the SDK calls on a cluster's parameter server.

The client side imports no TensorFlow (the SDK runs on laptops without it).
"""
from __future__ import annotations

import os
from typing import AsyncIterator


from drlbox.jobs import python_version
from drlbox.roles.interfaces import Checkpoint, JobStatus
from drlbox.roles.limits import Mismatch, NotFound, Refused, TooLarge
from drlbox.rpc import serde
from drlbox.rpc.handlers import Blocking, service_handler
from drlbox.rpc.generated import job_control_pb2 as pb
from drlbox.rpc.generated import job_control_pb2_grpc as pb_grpc
from drlbox.rpc.parameter_server import status_from_proto, status_to_proto
from drlbox.rpc.security import Security
from drlbox.rpc.server import make_channel

FILE_CHUNK_BYTES = 1 << 20


class JobControlServicer:
    """Serves a `drlbox.roles.job_host.JobHost`."""

    def __init__(self, host):
        self.host = host
        self.blocking = Blocking(threads=4, name="job-control")

    def _status(self, job_id: str) -> JobStatus:
        from drlbox.roles.job_host import UnknownJob

        try:
            return self.host.status(job_id)
        except UnknownJob:
            raise NotFound(f"no job {job_id[:100]!r} was submitted to this cluster") from None

    def _submit(self, data: bytes, algorithm: str) -> pb.JobStatus:
        from drlbox.roles.job_host import JobRefused

        try:
            return status_to_proto(self.host.submit(data, algorithm))
        except JobRefused as err:
            raise Refused(str(err)) from None

    async def Submit(self, request_iterator, context) -> pb.JobStatus:
        from drlbox.roles.job_host import MAX_JOB_BYTES

        from drlbox.config import ALGORITHMS

        pieces, size, algorithm = [], 0, ""
        async for chunk in request_iterator:
            if not pieces and chunk.python_version != python_version():
                raise Mismatch(f"Python version mismatch: the cluster runs Python "
                               f"{python_version()}, the submitting client runs Python "
                               f"{chunk.python_version[:20] or '(unknown)'}; makers are "
                               f"pickled and only load on the same Python minor version, so "
                               f"submit from Python {python_version()}")
            if not pieces:      # refused before anything is unpickled
                algorithm = chunk.algorithm
                if algorithm not in ALGORITHMS:
                    raise Refused(f"algorithm: must be one of {', '.join(ALGORITHMS)}, got "
                                  f"{algorithm[:20]!r}")
            size += len(chunk.config)
            if size > MAX_JOB_BYTES:
                raise TooLarge(f"config: the job is over the {MAX_JOB_BYTES} byte limit; keep "
                               f"data out of the makers and load it in the env")
            pieces.append(chunk.config)
        if not pieces:
            raise Refused("empty submission")
        return await self.blocking.run(self._submit, serde.join_chunks(pieces), algorithm)

    async def GetJobStatus(self, request, context) -> pb.JobStatus:
        return status_to_proto(await self.blocking.run(self._status, request.job_id))

    async def ListJobs(self, request, context) -> pb.JobList:
        statuses = await self.blocking.run(self.host.statuses)
        return pb.JobList(jobs=[status_to_proto(s) for s in statuses])

    def _cancel(self, job_id: str) -> JobStatus:
        self._status(job_id)
        return self.host.cancel(job_id)

    async def Cancel(self, request, context) -> pb.JobStatus:
        return status_to_proto(await self.blocking.run(self._cancel, request.job_id))

    def _checkpoint(self, job_id: str, latest: bool, global_steps: int):
        self._status(job_id)
        try:
            return self.host.checkpoint(job_id, None if latest else global_steps)
        except LookupError as err:
            raise NotFound(str(err)) from None

    async def FetchCheckpoint(self, request, context) -> AsyncIterator[pb.FileChunk]:
        checkpoint = await self.blocking.run(self._checkpoint, request.job_id, request.latest,
                                             request.global_steps)
        with open(checkpoint.path, "rb") as f:
            first = True
            while True:
                data = await self.blocking.run(f.read, FILE_CHUNK_BYTES)
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
    """A `make_server` hook that serves job control for a JobHost."""
    servicer = JobControlServicer(host)
    service = pb.DESCRIPTOR.services_by_name["JobControl"]
    return lambda grpc_server: grpc_server.add_generic_rpc_handlers(
        (service_handler(service, servicer),))
