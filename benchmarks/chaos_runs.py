"""Helpers for benchmarks/chaos.py: local runs driven from a thread, their role processes, env
steps counted outside drlbox, and resident memory."""
from __future__ import annotations

import contextlib
import glob
import os
import signal
import struct
import tempfile
import threading
import time
from typing import Any, Iterator

import gymnasium

from drlbox.config import trainer_config
from drlbox.launch.local import LocalRun
from drlbox.rpc.parameter_client import ParameterClient
from drlbox.rpc.security import Security


class CountingEnv(gymnasium.Wrapper):
    """CartPole whose steps each process writes to a file of its own, so the env steps every
    worker took can be summed after the fact, whatever happened to it."""

    def __init__(self, directory: str):
        super().__init__(gymnasium.make("CartPole-v1"))
        self.steps = 0
        self._fd = os.open(os.path.join(directory, f"{os.getpid()}-{id(self)}"),
                           os.O_CREAT | os.O_WRONLY, 0o600)

    def step(self, action):
        self.steps += 1
        os.pwrite(self._fd, struct.pack("<q", self.steps), 0)
        return self.env.step(action)


def counted_steps(directory: str, skip_pids: tuple[int, ...] = ()) -> int:
    """Env steps written by CountingEnv in `directory` (but by the processes `skip_pids`)."""
    total = 0
    for path in glob.glob(os.path.join(directory, "[0-9]*-[0-9]*")):
        if int(os.path.basename(path).split("-")[0]) in skip_pids:
            continue
        with open(path, "rb") as f:
            data = f.read(8)
        total += struct.unpack("<q", data)[0] if len(data) == 8 else 0
    return total


def counting_maker(directory: str):
    """An env_maker (picklable, module-level class) for CountingEnv in `directory`."""
    return _CountingMaker(directory)


class _CountingMaker:
    def __init__(self, directory: str):
        self.directory = directory

    def __call__(self):
        return CountingEnv(self.directory)


def mlp(space):
    """A small 64-unit Tanh trunk."""
    import keras

    inp = keras.Input(space.shape)
    return inp, keras.layers.Dense(64, activation="tanh")(inp)


class Run:
    """A local run on a thread of this process; its roles are real processes."""

    def __init__(self, algorithm: str, **kwargs: Any):
        if "model_maker" not in kwargs:
            kwargs.setdefault("feature_maker", mlp)
        self.config = trainer_config(algorithm, **kwargs)
        self.local = LocalRun(self.config)
        self.result = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.result = self.local.run()
        except BaseException as err:  # noqa: BLE001 - reported by the scenario
            self.error = err

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.config.port_begin}"

    @property
    def security(self) -> Security:
        return Security(token=self.local.token)

    def client(self, timeout: float = 30.0) -> ParameterClient:
        return ParameterClient(self.address, self.local.job_id, timeout=timeout,
                               security=self.security)

    def start(self, min_steps: int = 1, timeout: float = 300.0) -> "Run":
        self.thread.start()
        wait_for(lambda: self.local.job_id, timeout, "the run's job to be submitted")
        client = self.client()
        try:
            wait_for(lambda: _steps(client) >= min_steps, timeout, "the run to make progress")
        finally:
            client.close()
        return self

    def pid(self, name: str) -> int:
        return self.local.procs[name].pid

    def kill(self, name: str) -> float:
        """SIGKILL a role process; returns when it happened."""
        os.kill(self.pid(name), signal.SIGKILL)
        return time.monotonic()

    def join(self, timeout: float = 600.0):
        self.thread.join(timeout)
        if self.error is not None:
            raise self.error
        return self.result


def _steps(client: ParameterClient) -> int:
    try:
        return client.status().global_steps
    except Exception:  # noqa: BLE001 - not up yet
        return -1


def wait_for(condition, timeout: float, what: str = "a condition") -> Any:
    """Poll `condition` until it is true; TimeoutError naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


@contextlib.contextmanager
def running(algorithm: str, port: int, **kwargs: Any) -> Iterator[Run]:
    """A long local run to attack; stopped (and joined) on the way out."""
    kwargs.setdefault("train_steps", 10**9)
    run = Run(algorithm, env_maker=lambda: gymnasium.make("CartPole-v1"), port_begin=port,
              **kwargs).start(min_steps=200)
    try:
        yield run
    finally:
        with contextlib.suppress(Exception):
            client = run.client()
            client.stop("chaos scenario over")
            client.close()
        run.join()


def rss_mb(pid: int) -> float:
    """Resident memory of a process, MB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def temp_dir() -> str:
    return tempfile.mkdtemp(prefix="drlbox-chaos-")
