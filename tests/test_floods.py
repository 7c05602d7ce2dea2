"""Idle streams, hundreds of them, starve no caller: health and status still answer at once."""
from __future__ import annotations

import queue
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from drlbox.rpc.server import make_channel
from drlbox.rpc.sessions import EXCHANGE_METHOD
from test_rpc_parameter_server import start, stop

IDLE = 200


def open_idle_streams(address: str, count: int, metadata_channel: bool) -> list:
    """`count` Exchange streams that send nothing and stay open."""
    channel = make_channel(address) if metadata_channel else grpc.insecure_channel(address)
    held = []
    for _ in range(count):
        requests = queue.SimpleQueue()
        call = channel.stream_stream(EXCHANGE_METHOD)(iter(requests.get, None), timeout=120)
        held.append((requests, call))
    return channel, held


def timed(call) -> float:
    start_time = time.perf_counter()
    call()
    return time.perf_counter() - start_time


def test_hundreds_of_idle_streams_do_not_starve_health_or_status():
    setup = start("a3c")
    channels = []
    try:
        for with_metadata in (True, False):         # the client's own, and a stranger's
            channel, held = open_idle_streams(setup.address, IDLE, with_metadata)
            channels.append((channel, held))
        time.sleep(1.0)
        health = health_pb2_grpc.HealthStub(channels[0][0])
        seconds = timed(lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=5))
        assert seconds < 1.0, f"health took {seconds:.2f} s beside {2 * IDLE} idle streams"
        seconds = timed(setup.client.status)
        assert seconds < 1.0, f"GetStatus took {seconds:.2f} s beside {2 * IDLE} idle streams"
        # An exchange still goes through, and the idle streams are still open.
        assert setup.client.get_weights(-1) is not None
        assert all(not call.done() for _, call in channels[0][1][:10])
    finally:
        for channel, held in channels:
            for requests, call in held:
                requests.put(None)
                call.cancel()
            channel.close()
        stop(setup)


def test_calls_without_the_token_are_refused_before_any_request_arrives(tmp_path):
    """A stream that never sends anything is refused at once when it lacks the token."""
    from drlbox.roles.job_host import JobHost
    from drlbox.rpc.job_control import add_job_control
    from drlbox.rpc.security import Security
    from drlbox.rpc.server import make_server

    host = JobHost(str(tmp_path), build_server=None)
    server, port = make_server(0, [add_job_control(host)], security=Security(token="t0ken-abc"))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            requests = queue.SimpleQueue()
            call = channel.stream_unary("/drlbox.v1.JobControl/Submit").future(
                iter(requests.get, None), timeout=10)
            started = time.perf_counter()
            try:
                call.result()
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.UNAUTHENTICATED
            else:
                raise AssertionError("a call without the token was answered")
            assert time.perf_counter() - started < 2.0
            requests.put(None)
    finally:
        server.stop(0)
