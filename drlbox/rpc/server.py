"""One way to make a gRPC server and a channel: limits, protocol check, token, TLS, health."""
from __future__ import annotations

import json
from concurrent import futures
from typing import Callable, Iterable

import grpc
import grpc.experimental
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from drlbox.rpc.security import AUTH_KEY, Security, TokenInterceptor, refuse_call

PROTOCOL_VERSION = "3"
PROTOCOL_KEY = "drlbox-protocol"
# Payloads travel in 1 MiB chunks; the limit only guards against abuse.
MAX_MESSAGE_BYTES = 16 << 20
_OPTIONS = [("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0)]


def _service_config(wait_for_ready: bool) -> str:
    """Calls retry while a server is briefly unavailable and may wait for one still starting."""
    return json.dumps({"methodConfig": [{
        "name": [{}],
        "waitForReady": wait_for_ready,
        "retryPolicy": {"maxAttempts": 5, "initialBackoff": "0.2s", "maxBackoff": "2s",
                        "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]},
    }]})


class PortInUseError(OSError):
    """A role could not bind its port."""


class _ProtocolInterceptor(grpc.ServerInterceptor):
    """Refuse calls from peers that speak another drlbox protocol version, before any work."""

    def intercept_service(self, continuation, handler_call_details):
        if handler_call_details.method.startswith("/grpc.health."):
            return continuation(handler_call_details)
        version = dict(handler_call_details.invocation_metadata or ()).get(PROTOCOL_KEY)
        if version == PROTOCOL_VERSION:
            return continuation(handler_call_details)
        message = (f"this server speaks drlbox protocol {PROTOCOL_VERSION}, the caller "
                   f"{'sent none' if version is None else 'speaks ' + repr(version)}; "
                   f"run the same drlbox version on both sides")
        return refuse_call(grpc.StatusCode.FAILED_PRECONDITION, message)


def make_server(port: int, add_servicers: Iterable[Callable[[grpc.Server], None]],
                host: str = "127.0.0.1", max_workers: int = 8,
                security: Security | None = None) -> tuple[grpc.Server, int]:
    """Start a server with our limits, protocol check, auth and the standard health service.

    Returns (server, port); port 0 picks a free one. Raises PortInUseError naming the address
    when the port cannot be bound. With `security.token` every call but health checks must
    carry it; with a certificate the port speaks TLS only.
    """
    security = security or Security()
    interceptors = [_ProtocolInterceptor()]
    if security.token:
        interceptors.insert(0, TokenInterceptor(security.token))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers),
                         options=_OPTIONS, interceptors=interceptors)
    for add in add_servicers:
        add(server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    address = f"{host}:{port}"
    credentials = security.server_credentials()
    try:
        bound = (server.add_secure_port(address, credentials) if credentials
                 else server.add_insecure_port(address))
    except RuntimeError as err:
        raise PortInUseError(f"cannot listen on {address}: {err}; is the port taken? "
                             f"choose another port_begin") from err
    if bound == 0:
        raise PortInUseError(f"cannot listen on {address}; is the port taken? "
                             f"choose another port_begin")
    server.start()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    return server, bound


class _MetadataClientInterceptor(grpc.UnaryUnaryClientInterceptor,
                                 grpc.UnaryStreamClientInterceptor,
                                 grpc.StreamUnaryClientInterceptor,
                                 grpc.StreamStreamClientInterceptor):
    """Attach the protocol version (and the token, if any) to every call."""

    def __init__(self, token: str | None):
        self._extra = [(PROTOCOL_KEY, PROTOCOL_VERSION)]
        if token:
            self._extra.append((AUTH_KEY, f"Bearer {token}"))

    def _with_metadata(self, details):
        return details._replace(metadata=list(details.metadata or ()) + self._extra)

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._with_metadata(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._with_metadata(details), request)

    def intercept_stream_unary(self, continuation, details, request_iterator):
        return continuation(self._with_metadata(details), request_iterator)

    def intercept_stream_stream(self, continuation, details, request_iterator):
        return continuation(self._with_metadata(details), request_iterator)


def _raw_channel(address: str, security: Security | None, options: list) -> grpc.Channel:
    credentials = security.channel_credentials() if security else None
    if credentials is None:
        return grpc.insecure_channel(address, options=options)
    return grpc.secure_channel(address, credentials, options=options)


def make_channel(address: str, security: Security | None = None,
                 wait_for_ready: bool = True) -> grpc.Channel:
    """A channel to a drlbox role, with our limits, retries, protocol metadata and token.

    Roles wait for a peer that is (re)starting (`wait_for_ready`); the SDK does not, so that
    it can report an unreachable cluster itself.
    """
    channel = _raw_channel(address, security, _OPTIONS + [
        ("grpc.service_config", _service_config(wait_for_ready)), ("grpc.enable_retries", 1),
        # Without it every server-streaming call (weight pulls) starts a thread: ~1 ms each.
        (grpc.experimental.ChannelOptions.SingleThreadedUnaryStream, 1)])
    return grpc.intercept_channel(channel, _MetadataClientInterceptor(
        security.token if security else None))


def wait_healthy(address: str, timeout: float, security: Security | None = None) -> bool:
    """True once the role at address reports SERVING, False after timeout seconds."""
    with _raw_channel(address, security, []) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=timeout,
                               wait_for_ready=True)
        except grpc.RpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING
