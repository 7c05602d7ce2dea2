"""Shared test helpers: free port ranges, small CartPole makers, and a real local cluster."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _range_free(base: int, count: int) -> bool:
    for port in range(base, base + count):
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


@pytest.fixture
def port_base():
    """A function giving the start of `count` consecutive free loopback ports."""
    state = {"next": 20000 + (os.getpid() % 200) * 50}

    def find(count: int = 8) -> int:
        while not _range_free(state["next"], count):
            state["next"] += count
        base = state["next"]
        state["next"] += count
        return base

    return find


def cartpole():
    """CartPole-v1 (module-level so it pickles by reference in role processes too)."""
    import gymnasium

    return gymnasium.make("CartPole-v1")


def small_features(observation_space):
    """A 32-unit ReLU feature layer."""
    import keras

    inp = keras.Input(shape=observation_space.shape)
    return inp, keras.layers.Dense(32, activation="relu")(inp)


# --- a cluster of real role processes on loopback (tests/test_cluster_sdk.py, test_cli_jobs.py) --
TOKEN = "test-token-7f3a"
START_TIMEOUT = 120.0


def free_cluster_ports(count: int = 6) -> int:
    """The first of `count` consecutive free loopback ports for a Cluster."""
    base = 21000 + (os.getpid() % 100) * 20
    while not _range_free(base, count):
        base += count
    return base


def wait_until(condition, timeout: float, what: str):
    """condition()'s first true value, polled for up to `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


class Cluster:
    """Cluster-mode roles as processes on loopback, stopped on close()."""

    def __init__(self, base_port: int, data_dir: str, workers: int = 2, replay: bool = False,
                 evaluator: bool = False, shards: int = 1):
        self.ps_port, self.data_dir, self.shards = base_port, data_dir, shards
        self.ps_address = f"127.0.0.1:{base_port}"
        self.procs: dict[str, subprocess.Popen] = {}
        self.worker_ports = [base_port + 3 + i for i in range(workers)]
        self.shard_ports = [base_port + 3 + workers + k for k in range(shards - 1)]
        self.start_parameter_server()
        for k, port in enumerate(self.shard_ports, start=1):
            self.start(f"ps-shard-{k}", "ps-shard", port)
        if replay:
            self.start("replay", "replay", base_port + 1)
        if evaluator:
            self.start("evaluator", "evaluator", base_port + 2)
        for i, port in enumerate(self.worker_ports):
            self.start(f"worker-{i}", "worker", port,
                       "--replay", f"127.0.0.1:{base_port + 1}")

    def _spawn(self, name: str, args: list[str]) -> None:
        env = dict(os.environ, DRLBOX_TOKEN=TOKEN, DRLBOX_HOST="127.0.0.1",
                   TF_CPP_MIN_LOG_LEVEL="2")
        self.procs[name] = subprocess.Popen([sys.executable, "-m", "drlbox.cli", *args], env=env)

    def start_parameter_server(self) -> None:
        from drlbox.rpc.server import wait_healthy

        self._spawn("parameter-server", ["parameter-server", "--port", str(self.ps_port),
                                         "--data-dir", self.data_dir,
                                         "--shards", str(self.shards)])
        assert wait_healthy(self.ps_address, START_TIMEOUT), "parameter server did not start"

    def start(self, name: str, role: str, port: int, *extra: str) -> None:
        from drlbox.rpc.server import wait_healthy

        self._spawn(name, [role, "--port", str(port), "--ps", self.ps_address, *extra])
        assert wait_healthy(f"127.0.0.1:{port}", START_TIMEOUT), f"{name} did not start"

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def worker_states(self) -> list[tuple[str, str]]:
        from drlbox.rpc.security import Security
        from drlbox.rpc.status import get_role_status

        security = Security(token=TOKEN)
        return [(r.state, r.job_id) for r in
                (get_role_status(f"127.0.0.1:{p}", security=security)
                 for p in self.worker_ports)]

    def close(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
