"""Taken ports are reported plainly: by make_server and by the local launcher's pre-check."""
from __future__ import annotations

import socket
import sys

import pytest

from drlbox.launch.local import check_ports_free
from drlbox.rpc.server import PortInUseError, make_server, wait_healthy


@pytest.fixture
def servers():
    started = []
    yield started
    for server in started:
        server.stop(0)


@pytest.fixture
def held_port():
    """A loopback port held by a listening socket for the test's duration."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock.getsockname()[1]
    sock.close()


def test_port_in_use_error_is_an_os_error():
    assert issubclass(PortInUseError, OSError)


def test_make_server_picks_a_free_port_for_port_zero(servers):
    server, port = make_server(0, [])
    servers.append(server)
    assert 0 < port < 65536
    assert wait_healthy(f"127.0.0.1:{port}", timeout=10.0)


def test_make_server_on_a_port_taken_by_another_server(servers):
    first, port = make_server(0, [])
    servers.append(first)
    with pytest.raises(PortInUseError) as info:
        second, _ = make_server(port, [])
        servers.append(second)       # only reached if the library failed to refuse
    assert str(port) in str(info.value)
    assert "port_begin" in str(info.value)
    # The first server is unharmed.
    assert wait_healthy(f"127.0.0.1:{port}", timeout=10.0)


def test_make_server_on_a_port_held_by_a_plain_socket(servers, held_port):
    with pytest.raises(PortInUseError, match=str(held_port)):
        server, _ = make_server(held_port, [])
        servers.append(server)


def test_check_ports_free_names_role_and_port(held_port):
    with pytest.raises(PortInUseError) as info:
        check_ports_free({"parameter server": held_port})
    message = str(info.value)
    assert "parameter server" in message and str(held_port) in message


def test_check_ports_free_names_the_taken_one_among_several(servers, held_port):
    other, other_port = make_server(0, [])
    servers.append(other)
    # A bound-but-closed socket gives a port that is free right now (no fixed numbers).
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    with pytest.raises(PortInUseError) as info:
        check_ports_free({"parameter server": free_port, "worker 3": held_port})
    message = str(info.value)
    assert "worker 3" in message and str(held_port) in message
    assert "parameter server" not in message
    with pytest.raises(PortInUseError, match="replay server"):
        check_ports_free({"replay server": other_port})


def test_check_ports_free_passes_when_ports_are_free():
    with socket.socket() as a, socket.socket() as b:
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        ports = {"parameter server": a.getsockname()[1], "worker 0": b.getsockname()[1]}
    check_ports_free(ports)      # raises nothing
    check_ports_free({})


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux TIME_WAIT bind rules")
def test_check_ports_free_agrees_with_make_server_on_time_wait_ports(servers):
    """A port in TIME_WAIT after a previous run is free for gRPC (SO_REUSEADDR), so the
    launcher's pre-check must not refuse it (regression: it once probed without SO_REUSEADDR)."""
    # What a previous run's gRPC server leaves behind when it closes a connection first.
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = listener.accept()
    accepted.close()              # the server side closes first: TIME_WAIT on `port`
    client.close()
    listener.close()
    server, bound = make_server(port, [])
    servers.append(server)
    assert bound == port          # gRPC can use the port...
    server.stop(0).wait()
    servers.remove(server)
    check_ports_free({"parameter server": port})   # ...so the launcher must not refuse it


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_a_server_on_the_ipv6_loopback_serves(servers):
    server, port = make_server(0, [], host="::1")
    servers.append(server)
    assert wait_healthy(f"[::1]:{port}", 10.0)


def test_a_token_of_blanks_does_not_open_a_role_to_the_network(monkeypatch, capsys):
    from drlbox import cli

    monkeypatch.setenv("DRLBOX_TOKEN", "   ")
    assert cli.main(["parameter-server", "--host", "0.0.0.0", "--port", "0"]) == 2
    assert "without a token: set DRLBOX_TOKEN" in capsys.readouterr().err


def test_a_role_s_end_is_told_plainly():
    from drlbox.launch.local import how_it_ended

    assert how_it_ended(-9) == "killed by SIGKILL"
    assert how_it_ended(1) == "exit code 1; its error, if it printed one, is above"


def test_health_answers_probes_and_refuses_what_does_not_parse(servers):
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    server, port = make_server(0, [])
    servers.append(server)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        assert stub.Check(health_pb2.HealthCheckRequest(), timeout=10).status == \
            health_pb2.HealthCheckResponse.SERVING
        watch = stub.Watch(health_pb2.HealthCheckRequest(), timeout=10)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()
        assert stub.List(health_pb2.HealthListRequest(), timeout=10).statuses[""].status == \
            health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as named:
            stub.Check(health_pb2.HealthCheckRequest(service="drlbox.Nothing"), timeout=10)
        assert named.value.code() == grpc.StatusCode.NOT_FOUND
        raw = channel.unary_unary("/grpc.health.v1.Health/Check")
        with pytest.raises(grpc.RpcError) as corrupt:
            raw(b"\xff\xff\xff", timeout=10)
        assert corrupt.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "HealthCheckRequest" in corrupt.value.details()
        # The server is unharmed.
        assert stub.Check(health_pb2.HealthCheckRequest(), timeout=10).status == \
            health_pb2.HealthCheckResponse.SERVING
