"""One way to make a gRPC server and a channel: limits, protocol check, token, TLS, health."""
from __future__ import annotations

import asyncio
import json
import threading
from typing import Any, Callable, Iterable

import grpc
import grpc.aio
import grpc.experimental
from grpc_health.v1 import health_pb2, health_pb2_grpc

from drlbox.rpc.handlers import refusal
from drlbox.rpc.health import add_health
from drlbox.rpc.security import AUTH_KEY, Security, TokenInterceptor

PROTOCOL_VERSION = "4"   # 4: states travel as enums; jobs are found by GetRunningJob + JoinJob
PROTOCOL_KEY = "drlbox-protocol"
# Payloads travel in 1 MiB chunks; the limit only guards against abuse.
MAX_MESSAGE_BYTES = 16 << 20
_OPTIONS = [("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0)]
# A peer that is still starting is tried again within a tenth of a second, not gRPC's default
# second (roles of a local run start together and meet within ~0.3 s).
_RECONNECT = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
              ("grpc.max_reconnect_backoff_ms", 5000)]


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


class _ProtocolInterceptor(grpc.aio.ServerInterceptor):
    """Refuse calls from peers that speak another drlbox protocol version, before any work."""

    async def intercept_service(self, continuation, handler_call_details):
        if handler_call_details.method.startswith("/grpc.health."):
            return await continuation(handler_call_details)
        version = dict(handler_call_details.invocation_metadata or ()).get(PROTOCOL_KEY)
        if version == PROTOCOL_VERSION:
            return await continuation(handler_call_details)
        message = (f"this server speaks drlbox protocol {PROTOCOL_VERSION}, the caller "
                   f"{'sent none' if version is None else 'speaks ' + repr(version[:40])}; "
                   f"run the same drlbox version on both sides")
        return refusal(await continuation(handler_call_details),
                       grpc.StatusCode.FAILED_PRECONDITION, message)


class RoleServer:
    """A gRPC server on an asyncio event loop of its own thread.

    Streaming calls are coroutines: an idle or slow stream holds no thread, so no number of
    them starves the health check or other callers. The rest of a role stays plain threads;
    `stop(grace)` returns an event that is set once the server has stopped.
    """

    def __init__(self, interceptors: list, setup: Callable[[grpc.aio.Server], int]):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="grpc-server")
        self._thread.start()
        self._server = None
        try:
            self.port = self._call(self._start(interceptors, setup))
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            raise

    def _call(self, coroutine) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    async def _start(self, interceptors: list, setup: Callable) -> int:
        self._server = grpc.aio.server(interceptors=interceptors, options=_OPTIONS)
        port = setup(self._server)
        await self._server.start()
        return port

    def stop(self, grace: float | None) -> threading.Event:
        """Stop taking calls, let running ones finish for `grace` seconds, then end them."""
        stopped = threading.Event()

        async def stop() -> None:
            await self._server.stop(grace)
            stopped.set()
            self._loop.stop()

        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(stop(), self._loop)
        else:
            stopped.set()
        return stopped


def make_server(port: int, add_servicers: Iterable[Callable[[grpc.aio.Server], None]],
                host: str = "127.0.0.1", max_workers: int = 8,
                security: Security | None = None) -> tuple[RoleServer, int]:
    """Start a server with our limits, protocol check, auth and the standard health service.

    Returns (server, port); port 0 picks a free one. Raises PortInUseError naming the address
    when the port cannot be bound. With `security.token` every call but health checks must
    carry it; with a certificate the port speaks TLS only. (`max_workers` is kept for callers
    that size it; servicers run their blocking work in pools of their own.)
    """
    security = security or Security()
    interceptors = [_ProtocolInterceptor()]
    if security.token:
        interceptors.insert(0, TokenInterceptor(security.token))
    address = f"[{host}]:{port}" if ":" in host and not host.startswith("[") else \
        f"{host}:{port}"

    def setup(server: grpc.aio.Server) -> int:
        for add in add_servicers:
            add(server)
        add_health(server)
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
        return bound                       # health answers SERVING from the start

    server = RoleServer(interceptors, setup)
    return server, server.port


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
    channel = _raw_channel(address, security, _OPTIONS + _RECONNECT + [
        ("grpc.service_config", _service_config(wait_for_ready)), ("grpc.enable_retries", 1),
        # Without it every server-streaming call (weight pulls) starts a thread: ~1 ms each.
        (grpc.experimental.ChannelOptions.SingleThreadedUnaryStream, 1)])
    return grpc.intercept_channel(channel, _MetadataClientInterceptor(
        security.token if security else None))


def wait_healthy(address: str, timeout: float, security: Security | None = None) -> bool:
    """True once the role at address reports SERVING, False after timeout seconds."""
    with _raw_channel(address, security, _RECONNECT) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=timeout,
                               wait_for_ready=True)
        except grpc.RpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING
