"""Serving a service's methods on an asyncio gRPC server, with one way to refuse a call.

Every method is a coroutine (or async generator) of the servicer. Requests are parsed inside
the handler, so a request that does not parse is refused with INVALID_ARGUMENT naming the
method, not with gRPC's own INTERNAL; a `Refused` error becomes its status code
(INVALID_ARGUMENT, OUT_OF_RANGE, RESOURCE_EXHAUSTED, ...) with its message; anything
unexpected becomes INTERNAL and is logged, never UNKNOWN. Servicers run blocking work through
`Blocking.run`, in a thread pool, so the event loop keeps serving other calls.
"""
from __future__ import annotations

import asyncio
import functools
import logging
from concurrent import futures
from typing import Any, AsyncIterator, Callable

import grpc
from google.protobuf import message_factory
from google.protobuf.message import DecodeError

from drlbox.roles.limits import Refused

log = logging.getLogger(__name__)


class Blocking:
    """A thread pool for the blocking work of async servicers."""

    def __init__(self, threads: int = 8, name: str = "rpc"):
        self._pool = futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)

    async def run(self, fn: Callable, *args: Any) -> Any:
        """`fn(*args)` on a pool thread."""
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, functools.partial(fn, *args))


async def refuse(context: grpc.aio.ServicerContext, err: Exception) -> None:
    """End the call with the status a Refused error names (INVALID_ARGUMENT for others)."""
    code = getattr(grpc.StatusCode, getattr(err, "code", "INVALID_ARGUMENT"),
                   grpc.StatusCode.INVALID_ARGUMENT)
    await context.abort(code, str(err))


def _parser(method: str, message_class: Any) -> Callable:
    async def parse(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        try:
            return message_class.FromString(raw)
        except (DecodeError, RuntimeError, ValueError) as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"{method}: the request is not a valid "
                                f"{message_class.DESCRIPTOR.name}: {err}")
    return parse


def _guarded(method: str, body: Callable) -> Callable:
    """Map the errors a handler body raises to status codes (aborts pass through)."""
    async def guard(context: grpc.aio.ServicerContext, run: Callable) -> Any:
        try:
            return await run()
        except grpc.aio.AbortError:
            raise
        except asyncio.CancelledError:
            raise
        except Refused as err:
            await refuse(context, err)
        except Exception as err:  # noqa: BLE001 - a bug: say so, never UNKNOWN
            log.exception("%s failed", method)
            await context.abort(grpc.StatusCode.INTERNAL,
                                f"{method} failed inside the server: {type(err).__name__}: "
                                f"{err}")
    return guard


# (client streams, server streams) -> how gRPC wraps a handler of that kind.
_HANDLER_KINDS = {(False, False): grpc.unary_unary_rpc_method_handler,
                  (False, True): grpc.unary_stream_rpc_method_handler,
                  (True, False): grpc.stream_unary_rpc_method_handler,
                  (True, True): grpc.stream_stream_rpc_method_handler}


def method_handler(method: str, impl: Callable, request_class: Any, response_class: Any,
                   client_streaming: bool, server_streaming: bool,
                   raw: bool = False) -> grpc.RpcMethodHandler:
    """A handler for `impl(request_or_iterator, context)` of one method."""
    parse = (lambda data, context: _identity(data)) if raw else _parser(method, request_class)
    guard = _guarded(method, impl)
    serialize = None if raw else response_class.SerializeToString

    async def requests(iterator: AsyncIterator, context) -> AsyncIterator:
        async for data in iterator:
            yield await parse(data, context)

    async def request_of(request_or_iterator, context):
        if client_streaming:
            return requests(request_or_iterator, context)
        return await parse(request_or_iterator, context)

    if server_streaming:
        async def handler(request_or_iterator, context):
            request = await request_of(request_or_iterator, context)
            stream = impl(request, context)
            while True:
                item = await guard(context, lambda: _next(stream))
                if item is _END:
                    return
                yield item
    else:
        async def handler(request_or_iterator, context):
            request = await request_of(request_or_iterator, context)
            return await guard(context, lambda: impl(request, context))

    return _HANDLER_KINDS[(client_streaming, server_streaming)](handler,
                                                                response_serializer=serialize)


def refusal(handler: Any, code: grpc.StatusCode, message: str) -> Any:
    """A handler of the same kind as `handler` that ends the call with `code` at once, before
    reading any request (None for an unknown method: gRPC answers UNIMPLEMENTED)."""
    if handler is None:
        return None

    async def abort(request_or_iterator, context):
        await context.abort(code, message)

    async def abort_stream(request_or_iterator, context):
        await context.abort(code, message)
        yield b""                    # never reached: an async generator for streamed replies

    kind = (handler.request_streaming, handler.response_streaming)
    return _HANDLER_KINDS[kind](abort_stream if handler.response_streaming else abort)


_END = object()


async def _identity(data: Any) -> Any:
    return data


async def _next(stream: AsyncIterator) -> Any:
    try:
        return await stream.__anext__()
    except StopAsyncIteration:
        return _END


def service_handler(service: Any, servicer: Any,
                    raw: tuple[str, ...] = ()) -> grpc.GenericRpcHandler:
    """Handlers for every method of `service` (a protobuf ServiceDescriptor) on `servicer`;
    methods named in `raw` take and give bytes."""
    handlers = {}
    for method in service.methods:
        handlers[method.name] = method_handler(
            f"{service.name}/{method.name}", getattr(servicer, method.name),
            message_factory.GetMessageClass(method.input_type),
            message_factory.GetMessageClass(method.output_type), method.client_streaming,
            method.server_streaming, raw=method.name in raw)
    return grpc.method_handlers_generic_handler(service.full_name, handlers)
