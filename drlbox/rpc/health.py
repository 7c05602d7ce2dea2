"""The standard `grpc.health.v1` service, served through our handlers.

Probes (the kubelet's `grpc:` probe, `drlbox health`, `wait_healthy`) ask for the server as a
whole (service ""), which is SERVING from the moment the port is bound. Served through
`service_handler`, a request that does not parse is refused with INVALID_ARGUMENT like on
every other method, and a `Watch` stream is a coroutine that holds no thread while it waits.
"""
from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2

from drlbox.rpc.handlers import service_handler

SERVING = health_pb2.HealthCheckResponse.SERVING


class HealthServicer:
    """SERVING for the whole server; NOT_FOUND for any named service."""

    @staticmethod
    async def _status_of(request: health_pb2.HealthCheckRequest,
                         context: grpc.aio.ServicerContext) -> health_pb2.HealthCheckResponse:
        if request.service:
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"no health status for service {request.service[:100]!r}; "
                                f"ask for the server as a whole (service '')")
        return health_pb2.HealthCheckResponse(status=SERVING)

    async def Check(self, request, context):
        return await self._status_of(request, context)

    async def List(self, request, context):
        reply = health_pb2.HealthListResponse()
        reply.statuses[""].status = SERVING
        return reply

    async def Watch(self, request, context):
        yield await self._status_of(request, context)
        await asyncio.Event().wait()         # the status never changes while the server runs


def add_health(server: grpc.aio.Server) -> None:
    """Serve `grpc.health.v1.Health` on server."""
    server.add_generic_rpc_handlers((service_handler(
        health_pb2.DESCRIPTOR.services_by_name["Health"], HealthServicer()),))
