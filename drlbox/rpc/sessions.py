"""Exchange sessions: one open bidirectional stream per (caller, shard), one exchange at a time.

A worker exchanges with the parameter server after every batch. Keeping one stream open costs
the server ~0.1 ms per exchange against ~0.2 ms for a fresh unary call and ~0.45 ms for a fresh
stream, and lets payloads of any size travel as frames of the same stream. Streams carry no
per-message deadline, so a watchdog cancels an exchange that outlives its own.
"""
from __future__ import annotations

import heapq
import itertools
import queue
import threading
import time
from typing import Any

import grpc

from drlbox.rpc import serde
from drlbox.rpc.generated import parameter_server_pb2 as pb

EXCHANGE_METHOD = "/drlbox.v1.ParameterServer/Exchange"


class SessionError(grpc.RpcError):
    """An exchange that failed on the client's side: no answer in time, or a malformed one."""

    def __init__(self, code: grpc.StatusCode, details: str):
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def __str__(self) -> str:
        return self._details


class Watchdog:
    """Cancels calls whose deadline passes; one thread for every session of a process."""

    _instance: "Watchdog | None" = None
    _instance_lock = threading.Lock()

    def __init__(self):
        self._cond = threading.Condition()
        self._heap: list = []
        self._live: dict = {}
        self._ids = itertools.count()
        threading.Thread(target=self._run, daemon=True, name="exchange-watchdog").start()

    @classmethod
    def shared(cls) -> "Watchdog":
        """The process's watchdog."""
        with cls._instance_lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def arm(self, call: Any, seconds: float) -> int:
        """Cancel `call` in `seconds` unless disarmed first; returns a token for `disarm`."""
        token = next(self._ids)
        with self._cond:
            self._live[token] = call
            heapq.heappush(self._heap, (time.monotonic() + seconds, token))
            self._cond.notify()
        return token

    def disarm(self, token: int) -> bool:
        """Forget the deadline; False when it had already fired."""
        with self._cond:
            return self._live.pop(token, None) is not None

    def _run(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0][1] not in self._live:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                due, token = self._heap[0]
                delay = due - time.monotonic()
                if delay > 0:
                    self._cond.wait(delay)
                    continue
                heapq.heappop(self._heap)
                call = self._live.pop(token)
                call.cancel()


class Reply:
    """One decoded exchange reply: its header and the float32 values that followed."""

    def __init__(self, header: pb.ReplyHeader, values: Any):
        self.header = header
        count = header.weight_values
        self.weights = values[:count] if count else None
        self.aux = values[count:count + header.aux_values] if header.aux_values else None


class ExchangeSession:
    """An Exchange stream to one server, opened on first use and after a failure."""

    def __init__(self, channel: grpc.Channel, address: str, timeout: float):
        self.address, self.timeout = address, timeout
        self._method = channel.stream_stream(EXCHANGE_METHOD)
        self._call = self._requests = None
        self._token: int | None = None

    @property
    def is_open(self) -> bool:
        """Whether a stream is open (a failure closes it)."""
        return self._call is not None

    def send(self, header: pb.RequestHeader, data: memoryview | bytes = b"") -> None:
        """Queue one exchange (sent by gRPC's thread while the caller goes on)."""
        if self._call is None:
            self._requests = queue.SimpleQueue()
            self._call = self._method(iter(self._requests.get, None))
        self._token = Watchdog.shared().arm(self._call, self.timeout)
        for frame in serde.data_frames(header.SerializeToString(), data):
            self._requests.put(frame)

    def receive(self) -> Reply:
        """The answer to the exchange sent; raises grpc.RpcError (and closes) on failure."""
        try:
            raw_header, data = serde.decode_frame(next(self._call))
            header = pb.ReplyHeader.FromString(raw_header or b"")
            reader = serde.ValueReader(header.weight_values + header.aux_values)
            reader.add(data)
            while not reader.done:
                reader.add(serde.decode_frame(next(self._call))[1])
        except grpc.RpcError:
            fired = not Watchdog.shared().disarm(self._token)
            self.close()
            if fired:
                raise SessionError(grpc.StatusCode.DEADLINE_EXCEEDED,
                                   f"no answer from {self.address} within "
                                   f"{self.timeout:.0f} s") from None
            raise
        except (StopIteration, ValueError) as err:
            Watchdog.shared().disarm(self._token)
            self.close()
            raise SessionError(grpc.StatusCode.INTERNAL,
                               f"malformed reply from {self.address}: {err!r}") from err
        Watchdog.shared().disarm(self._token)
        return Reply(header, reader.values())

    def close(self) -> None:
        """End the stream (the server sees the end of its requests)."""
        if self._call is not None:
            self._requests.put(None)
            self._call.cancel()
        self._call = self._requests = None
